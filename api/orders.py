"""Order intake: ``POST /submit`` and ``GET /orders/{cfg_id}``."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_bearer_token
from api.json_body import read_json_model
from api.problems import Problem
from api.state import ApiState
from contracts.configurator import ConfiguratorPayload
from contracts.orders import OrderStatus
from platform_db import IdempotencyConflict, Order

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class SubmitAccepted(BaseModel):
    """The answer the website expects from the seed."""

    message: str = "form submitted"
    cfg_id: str


class OrderView(BaseModel):
    cfg_id: str
    status: OrderStatus
    target: str
    created_at: datetime
    updated_at: datetime
    edp_job_id: str | None
    portal_url: str | None = None
    error: str | None
    order: dict[str, Any]

    @classmethod
    def of(cls, order: Order) -> OrderView:
        return cls(
            cfg_id=order.cfg_id,
            status=order.status,
            target=order.target,
            created_at=order.created_at,
            updated_at=order.updated_at,
            edp_job_id=order.edp_job_id,
            error=order.last_error,
            order=order.payload,
        )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise Problem(400, "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
    return key


async def submit(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    require_bearer_token(request, state.bearer_token)
    key = _idempotency_key(request)
    payload, _ = await read_json_model(request, ConfiguratorPayload, state.settings.api.max_body_bytes)
    try:
        # Committed to platform_db before the answer: an accepted order is never lost.
        order, _created = await run_in_threadpool(state.orders.submit, payload, key)
    except IdempotencyConflict:
        raise Problem(409, "this Idempotency-Key was already used for a different order") from None
    return JSONResponse(SubmitAccepted(cfg_id=order.cfg_id).model_dump())


async def get_order(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    require_bearer_token(request, state.bearer_token)
    cfg_id = request.path_params["cfg_id"]
    order = None
    if _is_uuid(cfg_id):
        order = await run_in_threadpool(state.orders.get, cfg_id)
    if order is None:
        raise Problem(404, "no order with this cfg_id")
    return JSONResponse(OrderView.of(order).model_dump(mode="json"))


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
