"""The API application: routes, error handling and what the endpoints share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.commissioning import CommissioningTokenRotated, rotate_commissioning_token
from api.email_outcome import EmailResolutionAnswer, EmailResolutionRequest, resolve_email
from api.openapi import build_openapi, openapi_document
from api.order_retry import OrderRetryAccepted, retry_order
from api.orders import (
    OrderStatusView,
    OrderView,
    PortalTokenRotated,
    PortalTokenRotation,
    SubmitAccepted,
    get_order,
    rotate_portal_token,
    submit,
)
from api.portal import (
    PortalSecurityHeaders,
    portal_download,
    portal_index,
    portal_problem_handlers,
    portal_version,
)
from api.portal_yank import YankAnswer, YankRequest, unyank_portal_version, yank_portal_version
from api.redelivery import RedeliveryAccepted, RedeliveryRequest, redeliver
from api.signing_keys import (
    RevokeRequest,
    SigningKeys,
    SigningKeyView,
    revoke_signing_key,
    signing_key_pem,
    signing_keys,
    verify_tool,
)
from api.state import ApiState
from platform_config.settings import Settings
from platform_db import OrderRepository


async def healthz(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api

    def ping() -> None:
        with state.orders.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception:  # noqa: BLE001 - whatever keeps the ping from answering, platform_db is unreachable
        return JSONResponse({"status": "unavailable", "platform_db": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "stage": state.settings.stage})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    app.state.api.first_runs.close()


def create_app(settings: Settings, orders: OrderRepository) -> Starlette:
    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/submit", submit, methods=["POST"]),
            Route("/orders/{cfg_id}", get_order, methods=["GET"]),
            Route("/orders/{cfg_id}/portal-token", rotate_portal_token, methods=["POST"]),
            Route("/orders/{cfg_id}/commissioning-token", rotate_commissioning_token, methods=["POST"]),
            Route("/orders/{cfg_id}/redeliver", redeliver, methods=["POST"]),
            Route("/orders/{cfg_id}/retry", retry_order, methods=["POST"]),
            Route("/orders/{cfg_id}/email", resolve_email, methods=["POST"]),
            Route(
                "/orders/{cfg_id}/portal-versions/{version:int}/yank", yank_portal_version, methods=["POST"]
            ),
            Route(
                "/orders/{cfg_id}/portal-versions/{version:int}/yank",
                unyank_portal_version,
                methods=["DELETE"],
            ),
            Route("/portal/{token}", portal_index, methods=["GET"]),
            Route("/portal/{token}/v{version:int}", portal_version, methods=["GET"]),
            Route("/portal/{token}/v{version:int}/{name}", portal_download, methods=["GET"]),
            Route("/signing-keys", signing_keys, methods=["GET"]),
            Route("/signing-keys/{key_id}.pem", signing_key_pem, methods=["GET"]),
            Route("/signing-keys/{key_id}/revoke", revoke_signing_key, methods=["POST"]),
            Route("/tools/portal_verify.py", verify_tool, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_document, methods=["GET"]),
        ],
        exception_handlers=portal_problem_handlers(),
        middleware=[Middleware(PortalSecurityHeaders)],
    )
    app.state.api = ApiState.build(settings, orders)
    app.state.openapi = build_openapi(
        app.routes,
        [
            SubmitAccepted,
            OrderView,
            OrderStatusView,
            PortalTokenRotated,
            CommissioningTokenRotated,
            RedeliveryAccepted,
            EmailResolutionAnswer,
            OrderRetryAccepted,
            YankAnswer,
            SigningKeys,
            SigningKeyView,
        ],
        request_models=[
            RedeliveryRequest,
            EmailResolutionRequest,
            YankRequest,
            RevokeRequest,
            PortalTokenRotation,
        ],
    )
    return app
