"""``POST`` / ``DELETE /orders/{cfg_id}/portal-versions/{version}/yank``: withdraw a version, or restore it.

A yanked version stays listed in the portal, struck through with the reason; its downloads answer
410 with the reason; the current version is the newest one not yanked. ``notify_customer`` sends
the customer one email about it (never a second one for the same version).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import Scope, require_scope
from api.idempotency import idempotency_key
from api.operator_calls import Answer, answer_once, keyed_response
from api.orders import _order_or_404, read_keyed_request
from api.state import ApiState
from contracts.records import PortalVersion, current_version
from delivery.portal_yank import MAX_REASON_CHARS, set_yank, yank_reason
from delivery.yank_notice import YankNoticeNotSent, compose_yank_email, send_yank_notice_once
from service_kit.problems import Problem

MAX_VERSION = 2**31 - 1


class YankRequest(BaseModel):
    """Why the version is withdrawn (shown to the customer) and whether to email them about it."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]
    notify_customer: bool = False


class YankAnswer(BaseModel):
    cfg_id: str
    version: int
    yanked: bool
    yanked_at: datetime | None
    reason: str | None
    # The version the portal now offers (the newest not yanked); null when every one is yanked.
    current_version: int | None
    # Whether the customer has been emailed about the yank (at most once per version).
    customer_notified: bool
    # Why the email asked for was not sent; the yank itself stands.
    notice_error: str | None = None


def _answer(state: ApiState, changed: PortalVersion, notice_error: str | None = None) -> YankAnswer:
    versions = state.deliveries.portal_versions(changed.cfg_id)
    current = current_version(versions)
    entry = next(v for v in versions if v.version == changed.version)
    return YankAnswer(
        cfg_id=changed.cfg_id,
        version=changed.version,
        yanked=entry.yanked,
        yanked_at=entry.yanked_at,
        reason=entry.yank_reason,
        current_version=None if current is None else current.version,
        customer_notified=entry.yank_notice_at is not None,
        notice_error=notice_error,
    )


def _set(state: ApiState, cfg_id: str, version: int, body: YankRequest | None) -> YankAnswer:
    # The check every order route makes: a cfg_id that is no uuid4 (a NUL byte, say) never reaches
    # platform_db, where PostgreSQL would refuse it with a server error.
    order = _order_or_404(state, cfg_id)
    if not 1 <= version <= MAX_VERSION:
        # Past any column's integer range: no such version, and no query to ask.
        raise Problem(404, f"order {cfg_id} has no published portal version {version}")
    try:
        changed = set_yank(
            cfg_id=order.cfg_id,
            version=version,
            reason=None if body is None else body.reason,
            order=order.configurator_payload(),
            store=state.store,
            deliveries=state.deliveries,
        )
    except KeyError:
        raise Problem(404, f"order {cfg_id} has no published portal version {version}") from None
    notice_error = None
    if body is not None and body.notify_customer:
        versions = state.deliveries.portal_versions(order.cfg_id)
        current = current_version(versions)
        try:
            send_yank_notice_once(
                message=compose_yank_email(
                    sender=state.settings.email.sender,
                    order=order.configurator_payload(),
                    yanked=changed,
                    current_version=None if current is None else current.version,
                    portal_url=state.portal_links(order).portal(),
                ),
                yanked=changed,
                recipient=order.configurator_payload().customer.email,
                sender=state.settings.email.sender,
                ses_client=state.ses_client(),
                claims=state.deliveries,
                outbox_dir=Path(state.settings.email.outbox_dir) if state.settings.email.outbox_dir else None,
            )
        except YankNoticeNotSent as exc:
            notice_error = str(exc)
    return _answer(state, changed, notice_error)


def _set_once(
    state: ApiState, key: str, method: str, cfg_id: str, version: int, body: YankRequest | None
) -> Answer:
    """``_set`` once per Idempotency-Key: a repeated key answers the first answer and sends no email."""
    # Checked before the key is claimed: only an order and a version number that may exist name a call.
    _order_or_404(state, cfg_id)
    if not 1 <= version <= MAX_VERSION:
        raise Problem(404, f"order {cfg_id} has no published portal version {version}")
    what = f"{method} /orders/{cfg_id}/portal-versions/{version}/yank"
    return answer_once(
        state,
        key,
        what,
        body,
        lambda: Answer(200, _set(state, cfg_id, version, body).model_dump(mode="json")),
    )


async def yank_portal_version(request: Request) -> JSONResponse:
    state, key, body = await read_keyed_request(request, YankRequest)
    assert key is not None  # an operator's call always has one
    try:
        yank_reason(body.reason)
    except ValueError as exc:
        raise Problem(
            422, str(exc), errors=[{"field": "reason", "message": str(exc).split(": ", 1)[-1]}]
        ) from None
    params = request.path_params
    answer = await run_in_threadpool(_set_once, state, key, "POST", params["cfg_id"], params["version"], body)
    return keyed_response(answer, YankAnswer.model_validate)


async def unyank_portal_version(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    require_scope(request, state.credentials, Scope.OPERATOR)
    key = idempotency_key(request, required=True)
    assert key is not None
    params = request.path_params
    answer = await run_in_threadpool(
        _set_once, state, key, "DELETE", params["cfg_id"], params["version"], None
    )
    return keyed_response(answer, YankAnswer.model_validate)
