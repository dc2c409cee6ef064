"""The OpenAPI document, with the request and answer schemas taken from the pydantic models.

Its paths come from the app's own routes: every route is documented under its path, with its path
parameters read from the route. ``OPERATIONS`` adds, per route name, what a route cannot tell (the
summary, the credential it needs, the request body and the answers); a route it does not name is
still documented, with its endpoint's docstring as summary.

Each credential is a security scheme of its own (``website``, ``operator``), so a client reads from
an operation's ``security`` which token it sends; the 401, 403 and 428 answers follow from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.convertors import Convertor, FloatConvertor, IntegerConvertor, UUIDConvertor
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from api.auth import CREDENTIAL_OF, Scope
from api.idempotency import HEADER, IDEMPOTENCY_KEY_RE
from contracts.configurator import ConfiguratorPayload

REF = "#/components/schemas/{model}"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    Scope.WEBSITE.value: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            f"A value of {CREDENTIAL_OF[Scope.WEBSITE]} (the website's backend): POST /submit and an "
            "order's status (GET /orders/{cfg_id} answers OrderStatusView)."
        ),
    },
    Scope.OPERATOR.value: {
        "type": "http",
        "scheme": "bearer",
        "description": (
            f"A value of {CREDENTIAL_OF[Scope.OPERATOR]}: every route that needs a credential "
            "(GET /orders/{cfg_id} answers the whole OrderView)."
        ),
    },
}
# The operator credential covers what the website's does: either token is good on a website route.
SECURITY: dict[Scope, list[dict[str, list[str]]]] = {
    Scope.WEBSITE: [{Scope.WEBSITE.value: []}, {Scope.OPERATOR.value: []}],
    Scope.OPERATOR: [{Scope.OPERATOR.value: []}],
}
# What the path's own convertor cannot say: a cfg_id is a uuid4, portal versions count from 1.
PATH_PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "cfg_id": {"type": "string", "format": "uuid"},
    "version": {"type": "integer", "minimum": 1},
}
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "pattern": IDEMPOTENCY_KEY_RE.pattern, "maxLength": 255}
PROBLEM_SCHEMA = {
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


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema_name)}}},
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {}}}


def _problems(*codes: str) -> dict[str, Any]:
    return {code: _json("Problem", "error") for code in codes}


def _portal_problems(*codes: str) -> dict[str, Any]:
    """A portal error: the problem for API clients, a page in plain words for a browser (Accept: text/html)."""
    problem = _json("Problem", "")["content"]
    return {
        code: {"description": "error (HTML page for a browser)", "content": {**problem, "text/html": {}}}
        for code in codes
    }


def _idempotency_key(required: bool) -> dict[str, Any]:
    description = (
        "Required: a value unique to this action, sent again unchanged when retrying it, so that a "
        "retried request does not act twice (428 without it)."
        if required
        else "Optional: a retried request with the same key answers what the first one did."
    )
    return {
        "name": HEADER,
        "in": "header",
        "required": required,
        "description": description,
        "schema": IDEMPOTENCY_KEY_SCHEMA,
    }


@dataclass(frozen=True)
class Operation:
    """What the document says of a route beyond its path and path parameters.

    ``credential``: the scope the route needs (None: public). An operator's route that takes an
    Idempotency-Key requires it, as ``api.orders.read_keyed_request`` does.
    """

    summary: str
    responses: dict[str, Any]
    credential: Scope | None = None
    idempotency_key: bool = False
    request_body: dict[str, Any] | None = None

    @property
    def idempotency_key_required(self) -> bool:
        return self.idempotency_key and self.credential is Scope.OPERATOR

    def document(self, path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
        key = [_idempotency_key(self.idempotency_key_required)] if self.idempotency_key else []
        parameters = [*path_parameters, *key]
        operation: dict[str, Any] = {"summary": self.summary}
        responses = dict(self.responses)
        if self.credential is not None:
            operation["security"] = SECURITY[self.credential]
            responses.update(_problems("401"))
        if self.credential is Scope.OPERATOR:
            responses.update(_problems("403"))
        if self.idempotency_key_required:
            responses.update(_problems("428"))
        if parameters:
            operation["parameters"] = parameters
        if self.request_body is not None:
            operation["requestBody"] = self.request_body
        operation["responses"] = dict(sorted(responses.items()))
        return operation


# Keyed by route name (Starlette's default: the endpoint function's name).
OPERATIONS: dict[str, Operation] = {
    "submit": Operation(
        summary="Submit an order (ConfiguratorPayload); it is stored before the answer.",
        credential=Scope.WEBSITE,
        idempotency_key=True,
        request_body={"required": True, **_json("ConfiguratorPayload", "the order")},
        responses={
            "200": _json("SubmitAccepted", "order stored"),
            **_problems("400", "408", "409", "413", "415", "422"),
        },
    ),
    "get_order": Operation(
        summary=(
            "An order. To the operator credential all of it (OrderView: its delivery status, portal "
            "link, versions with their emails, download record and assets in Dagster); to the "
            "website's its status alone (OrderStatusView: no portal link, downloads, emails or "
            "customer details)."
        ),
        credential=Scope.WEBSITE,
        responses={
            "200": {
                "description": "the order as the credential may see it",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": REF.format(model="OrderView")},
                                {"$ref": REF.format(model="OrderStatusView")},
                            ]
                        }
                    }
                },
            },
            **_problems("404"),
        },
    ),
    "rotate_portal_token": Operation(
        summary=(
            "Rotate the order's portal link; the old link answers 404 from then on. notify_customer: "
            "true emails the customer the new link. A repeated Idempotency-Key answers the same link."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        request_body={
            "required": False,
            **_json("PortalTokenRotation", "whether to email the customer the new link (optional)"),
        },
        responses={
            "200": _json("PortalTokenRotated", "the new link"),
            **_problems("400", "404", "408", "409", "413", "415", "422"),
        },
    ),
    "rotate_commissioning_token": Operation(
        summary=(
            "Rotate the order's gateway commissioning token: a re-delivery (order/cfn_or_iso, "
            "order/manifest, order/email) publishes and emails a portal version whose secrets.env "
            "carries the new token. 409 for an order never delivered; the re-delivery limits apply "
            "(429). A repeated Idempotency-Key answers the same generation and backfill."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        responses={
            "202": _json("CommissioningTokenRotated", "the new generation and the re-delivery's backfill"),
            **_problems("400", "404", "409", "429", "503"),
        },
    ),
    "redeliver": Operation(
        summary=(
            "Re-deliver a delivered order: a Dagster backfill of order/manifest and order/email "
            "(with apk: true also order/apk, to ship the newest APK); portal version N+1 is "
            "published and emailed. A repeated Idempotency-Key answers the same backfill."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        request_body={"required": False, **_json("RedeliveryRequest", "what to re-deliver (optional)")},
        responses={
            "202": _json("RedeliveryAccepted", "backfill launched"),
            **_problems("400", "404", "408", "409", "413", "415", "422", "429", "503"),
        },
    ),
    "retry_order": Operation(
        summary=(
            "Retry a failed order from where it stopped (the order's asset statuses in Dagster): "
            "order/config with a new EDP job when EDP or its artifacts failed (the order is received), "
            "else a Dagster backfill of the first of order/cfn_or_iso, order/apk, order/manifest, "
            "order/email not materialized and everything after it (the order is building). A repeated "
            "Idempotency-Key answers the same backfill; 409 unless the order is failed."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        responses={
            "202": _json("OrderRetryAccepted", "backfill launched"),
            **_problems("400", "404", "409", "503"),
        },
    ),
    "resolve_email": Operation(
        summary=(
            "Resolve a delivery email whose outcome is unknown (SES may or may not have sent it): "
            "mark_sent (200; the order moves from email_unknown to delivered once no email of it is "
            "unknown) or resend (202; newest portal version only: a Dagster backfill of order/email "
            "sends it once more). A repeated Idempotency-Key answers what the first request did."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        request_body={"required": True, **_json("EmailResolutionRequest", "the version and the action")},
        responses={
            "200": _json("EmailResolutionAnswer", "marked sent"),
            "202": _json("EmailResolutionAnswer", "resend backfill launched"),
            **_problems("400", "404", "408", "409", "413", "415", "422", "503"),
        },
    ),
    "yank_portal_version": Operation(
        summary=(
            "Yank (withdraw) a published portal version with a reason the customer reads: the portal "
            "shows it struck through, its downloads answer 410, the current version is the newest one "
            "not yanked. notify_customer: true emails the customer once per version. Yanking again "
            "changes the reason."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        request_body={
            "required": True,
            **_json("YankRequest", "the reason, and whether to email the customer"),
        },
        responses={
            "200": _json("YankAnswer", "the version's yank state"),
            **_problems("400", "404", "408", "413", "415", "422"),
        },
    ),
    "unyank_portal_version": Operation(
        summary="Un-yank a portal version: downloadable again, and current again if it is the newest.",
        credential=Scope.OPERATOR,
        idempotency_key=True,
        responses={"200": _json("YankAnswer", "the version's yank state"), **_problems("400", "404")},
    ),
    "signing_keys": Operation(
        summary=(
            "Every public key that signed a portal manifest (Ed25519), with its fingerprint and its "
            "stable URL; rotated keys stay listed so the versions they signed stay verifiable."
        ),
        responses={"200": _json("SigningKeys", "the keys")},
    ),
    "revoke_signing_key": Operation(
        summary=(
            "Revoke a manifest signing key from compromised_since (default: now), with a reason: the "
            "key list shows it, and portal_verify --keys refuses manifests it signed from then on. "
            "Publishing with a revoked key fails until MANIFEST_SIGNING_KEY holds a new one."
        ),
        credential=Scope.OPERATOR,
        idempotency_key=True,
        request_body={"required": True, **_json("RevokeRequest", "the reason, and from when")},
        responses={
            "200": _json("SigningKeyView", "the key as revoked"),
            **_problems("400", "404", "408", "413", "415", "422"),
        },
    ),
    "signing_key_pem": Operation(
        summary="One public key as PEM (SubjectPublicKeyInfo), for openssl pkeyutl -verify -pubin -inkey.",
        responses={
            "200": {"description": "the key", "content": {"application/x-pem-file": {}}},
            **_problems("404"),
        },
    ),
    "verify_tool": Operation(
        summary=(
            "The customer's verify tool (portal_verify.py; Python 3 and cryptography): checks a downloaded "
            "version or air-gap bundle against the portal's key, every file and the provenance."
        ),
        responses={"200": {"description": "the tool", "content": {"text/x-python": {}}}},
    ),
    "portal_index": Operation(
        summary="The customer's portal: the current version (the newest not yanked) and the history (HTML).",
        responses={"200": _html("portal page"), **_portal_problems("404")},
    ),
    "portal_version": Operation(
        summary="One portal version's page (HTML).",
        responses={"200": _html("version page"), **_portal_problems("404")},
    ),
    "portal_download": Operation(
        summary=(
            "Download an artifact: 303 to a freshly presigned URL (manifest.json, manifest.json.sig and "
            "signing-key.pem are answered directly); 410 with the reason when the version is yanked."
        ),
        responses={"303": {"description": "redirect to the download"}, **_portal_problems("404", "410")},
    ),
    "healthz": Operation(
        summary="Liveness and platform_db reachability.",
        responses={"200": {"description": "ok"}, "503": {"description": "platform_db unreachable"}},
    ),
    "openapi_document": Operation(
        summary="This document.",
        responses={"200": {"description": "the OpenAPI document"}},
    ),
}


def _convertor_schema(convertor: Convertor[Any]) -> dict[str, Any]:
    if isinstance(convertor, IntegerConvertor):
        return {"type": "integer"}
    if isinstance(convertor, FloatConvertor):
        return {"type": "number"}
    if isinstance(convertor, UUIDConvertor):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def _path_parameters(route: Route) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_PARAMETER_SCHEMAS.get(name) or _convertor_schema(convertor),
        }
        for name, convertor in route.param_convertors.items()
    ]


def _operation(route: Route) -> Operation:
    described = OPERATIONS.get(route.name)
    if described is not None:
        return described
    docstring = (route.endpoint.__doc__ or "").strip()
    return Operation(
        summary=docstring.splitlines()[0] if docstring else route.name,
        responses={"default": {"description": "the answer"}},
    )


def build_paths(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """One path item per route, one operation per method (HEAD, which Starlette adds to GET, aside)."""
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        operation = _operation(route).document(_path_parameters(route))
        item = paths.setdefault(route.path_format, {})
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                item[method.lower()] = operation
    return paths


def build_openapi(
    routes: Sequence[BaseRoute],
    extra_models: list[type[BaseModel]],
    request_models: list[type[BaseModel]] | None = None,
) -> dict[str, Any]:
    """``routes`` are the app's; ``extra_models`` are answers (serialization schemas), ``request_models`` request bodies."""
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(model, "serialization") for model in extra_models]
    bodies: list[type[BaseModel]] = [ConfiguratorPayload, *(request_models or [])]
    modes += [(model, "validation") for model in bodies]
    _, defs = models_json_schema(modes, ref_template=REF)
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "Platform API", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": SECURITY_SCHEMES,
        },
        "paths": build_paths(routes),
    }


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)
