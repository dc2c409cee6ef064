"""The OpenAPI document, with the request and answer schemas taken from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.orders import IDEMPOTENCY_KEY_RE
from contracts.configurator import ConfiguratorPayload

REF = "#/components/schemas/{model}"
TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern, "maxLength": 255},
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema_name)}}},
    }


def build_openapi(
    extra_models: list[type[BaseModel]], request_models: list[type[BaseModel]] | None = None
) -> dict[str, Any]:
    """``extra_models`` are answers (serialization schemas), ``request_models`` request bodies."""
    _, defs = models_json_schema(
        [(model, "serialization") for model in extra_models]
        + [(model, "validation") for model in [ConfiguratorPayload, *(request_models or [])]],
        ref_template=REF,
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "required": ["detail"],
    }
    problem = _json("Problem", "error")
    bearer = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Platform API", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/submit": {
                "post": {
                    "summary": "Submit an order (ConfiguratorPayload); it is stored before the answer.",
                    "security": bearer,
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {"required": True, **_json("ConfiguratorPayload", "the order")},
                    "responses": {
                        "200": _json("SubmitAccepted", "order stored"),
                        **{code: problem for code in ("400", "401", "408", "409", "413", "415", "422")},
                    },
                }
            },
            "/orders/{cfg_id}": {
                "get": {
                    "summary": "An order, its delivery status and its assets in Dagster.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "cfg_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        }
                    ],
                    "responses": {"200": _json("OrderView", "the order"), "401": problem, "404": problem},
                }
            },
            "/orders/{cfg_id}/portal-token": {
                "post": {
                    "summary": "Rotate the order's portal link; the old link answers 404 from then on.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "cfg_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        }
                    ],
                    "responses": {
                        "200": _json("PortalTokenRotated", "the new link"),
                        "401": problem,
                        "404": problem,
                    },
                }
            },
            "/orders/{cfg_id}/redeliver": {
                "post": {
                    "summary": (
                        "Re-deliver a delivered order: a Dagster backfill of order/manifest and order/email "
                        "(with apk: true also order/apk, to ship the newest APK); portal version N+1 is "
                        "published and emailed. A repeated Idempotency-Key answers the same backfill."
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "cfg_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        IDEMPOTENCY_KEY,
                    ],
                    "requestBody": {
                        "required": False,
                        **_json("RedeliveryRequest", "what to re-deliver (optional)"),
                    },
                    "responses": {
                        "202": _json("RedeliveryAccepted", "backfill launched"),
                        **{
                            code: problem
                            for code in ("400", "401", "404", "408", "409", "413", "415", "422", "429", "503")
                        },
                    },
                }
            },
            "/orders/{cfg_id}/retry": {
                "post": {
                    "summary": (
                        "Retry a failed order from where it stopped (the Dagster instance's asset statuses): "
                        "order/config with a new EDP job when EDP or its artifacts failed (the order is received), "
                        "else a Dagster backfill of the first of order/cfn_or_iso, order/apk, order/manifest, "
                        "order/email not materialized and everything after it (the order is building). A repeated "
                        "Idempotency-Key answers the same backfill; 409 unless the order is failed."
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "cfg_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        IDEMPOTENCY_KEY,
                    ],
                    "responses": {
                        "202": _json("OrderRetryAccepted", "backfill launched"),
                        **{code: problem for code in ("400", "401", "404", "409", "503")},
                    },
                }
            },
            "/orders/{cfg_id}/email": {
                "post": {
                    "summary": (
                        "Resolve a delivery email whose outcome is unknown (SES may or may not have sent it): "
                        "mark_sent (200; the order moves from email_unknown to delivered once no email of it is "
                        "unknown) or resend (202; newest portal version only: a Dagster backfill of order/email "
                        "sends it once more). A repeated Idempotency-Key answers what the first request did."
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "cfg_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                        IDEMPOTENCY_KEY,
                    ],
                    "requestBody": {
                        "required": True,
                        **_json("EmailResolutionRequest", "the version and the action"),
                    },
                    "responses": {
                        "200": _json("EmailResolutionAnswer", "marked sent"),
                        "202": _json("EmailResolutionAnswer", "resend backfill launched"),
                        **{
                            code: problem
                            for code in ("400", "401", "404", "408", "409", "413", "415", "422", "503")
                        },
                    },
                }
            },
            "/portal/{token}": {
                "get": {
                    "summary": "The customer's portal: the latest version and the history (HTML).",
                    "parameters": [TOKEN],
                    "responses": {
                        "200": {"description": "portal page", "content": {"text/html": {}}},
                        "404": problem,
                    },
                }
            },
            "/portal/{token}/v{version}": {
                "get": {
                    "summary": "One portal version's page (HTML).",
                    "parameters": [TOKEN, VERSION],
                    "responses": {
                        "200": {"description": "version page", "content": {"text/html": {}}},
                        "404": problem,
                    },
                }
            },
            "/portal/{token}/v{version}/{name}": {
                "get": {
                    "summary": "Download an artifact: 303 to a freshly presigned URL (manifest.json is answered directly).",
                    "parameters": [
                        TOKEN,
                        VERSION,
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {"303": {"description": "redirect to the download"}, "404": problem},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and platform_db reachability.",
                    "responses": {
                        "200": {"description": "ok"},
                        "503": {"description": "platform_db unreachable"},
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": {"description": "the OpenAPI document"}},
                }
            },
        },
    }


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)
