"""Order intake: ``POST /submit`` and ``GET /orders/{cfg_id}``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.asset_status import AssetStatusView
from api.auth import Scope, require_scope
from api.dagster_graphql import DagsterLaunchError, LaunchedBackfill
from api.idempotency import idempotency_key
from api.operator_calls import Answer, answer_once, keyed_response
from api.state import ApiState
from contracts.configurator import ConfiguratorPayload
from contracts.orders import EmailState, OrderStatus
from contracts.records import (
    DeliveryEmail,
    EmailAction,
    Order,
    PortalDownload,
    PortalVersion,
    current_version,
)
from contracts.s3_layout import is_cfg_id
from delivery.notice_email import (
    NoticeNotSent,
    compose_portal_link_email,
    portal_link_outbox_name,
    send_notice,
)
from delivery.portal_links import PortalLinks
from platform_db import IdempotencyConflict
from service_kit.json_body import read_json_model
from service_kit.problems import Problem


class SubmitAccepted(BaseModel):
    """The answer the website expects from the seed."""

    message: str = "form submitted"
    cfg_id: str


class EmailView(BaseModel):
    """A portal version's delivery email: see contracts.orders.EmailState."""

    # sending, sent, unknown (SES may or may not have sent it: an operator resolves it with
    # POST /orders/{cfg_id}/email), marked_sent or resend_requested. A claim whose sender died
    # mid-send shows as unknown.
    state: EmailState
    message_id: str | None = None
    claimed_at: datetime
    sent_at: datetime | None = None
    # Why the outcome is unknown (kept after an operator marked it sent).
    reason: str | None = None
    # The operator's resolution (mark_sent or resend) and when.
    resolution: EmailAction | None = None
    resolved_at: datetime | None = None

    @classmethod
    def of(cls, email: DeliveryEmail) -> EmailView:
        return cls(
            state=email.outcome,
            message_id=email.message_id,
            claimed_at=email.claimed_at,
            sent_at=email.sent_at,
            reason=email.outcome_reason,
            resolution=email.resolution,
            resolved_at=email.resolved_at,
        )


class PortalVersionView(BaseModel):
    version: int
    created_at: datetime
    url: str
    # null while no attempt to send it is recorded.
    email: EmailView | None = None
    # The key that signed its manifest.json (GET /signing-keys/{id}.pem); null before signing existed.
    signing_key_id: str | None = None
    # Set while the version is yanked: its downloads answer 410 with the reason.
    yanked_at: datetime | None = None
    yank_reason: str | None = None


class DownloadView(BaseModel):
    """One entry of the portal's download record: a page view (``file`` null) or a download."""

    at: datetime
    # null for the order's landing page.
    version: int | None
    # The artifact's name or manifest.json; null for a page view.
    file: str | None
    user_agent: str | None
    # The client's network (an IPv4 /24, an IPv6 /48), never its full address.
    client: str | None

    @classmethod
    def of(cls, download: PortalDownload) -> DownloadView:
        return cls(
            at=download.at,
            version=download.version,
            file=download.file,
            user_agent=download.user_agent,
            client=download.client,
        )


class PortalTokenRotation(BaseModel):
    """Optional body of a portal-link rotation; an empty body means ``{"notify_customer": false}``."""

    model_config = ConfigDict(extra="forbid")

    # Email the customer the new link (once: a repeated Idempotency-Key sends nothing again).
    notify_customer: StrictBool = False


class PortalTokenRotated(BaseModel):
    cfg_id: str
    portal_url: str
    # Whether this rotation emailed the customer the new link.
    customer_notified: bool = False
    # Why the email asked for was not sent, or may not have been; the rotation stands.
    notice_error: str | None = None


class OrderStatusView(BaseModel):
    """An order as the website's credential sees it: where it stands, nothing that reaches its
    delivery (no portal link, download record, emails or customer details)."""

    cfg_id: str
    status: OrderStatus
    target: str
    created_at: datetime
    updated_at: datetime
    error: str | None
    # The portal versions published (numbers only) and the one the portal offers now.
    portal_versions: list[int] = []
    current_version: int | None = None

    @classmethod
    def of(cls, order: Order, versions: list[PortalVersion]) -> OrderStatusView:
        current = current_version(versions)
        return cls(
            cfg_id=order.cfg_id,
            status=order.status,
            target=order.target,
            created_at=order.created_at,
            updated_at=order.updated_at,
            error=order.last_error,
            portal_versions=[v.version for v in versions],
            current_version=None if current is None else current.version,
        )


class OrderView(BaseModel):
    cfg_id: str
    status: OrderStatus
    target: str
    created_at: datetime
    updated_at: datetime
    edp_job_id: str | None
    portal_url: str | None = None
    portal_versions: list[PortalVersionView] = []
    error: str | None
    # Why the latest attempt on a delivered order (a re-delivery) failed; the order stays delivered.
    last_attempt_error: str | None = None
    order: dict[str, Any]
    # The six assets of the order's partition as Dagster sees them ("order/config", ...);
    # None while the Dagster webserver cannot be reached or read.
    assets: dict[str, AssetStatusView] | None = None
    # The version the portal offers: the newest one not yanked; null when none is published or all are yanked.
    current_version: int | None = None
    # The latest portal page views and downloads (portal.recent_downloads of them), newest first.
    downloads: list[DownloadView] = []
    # Whether a file of the current portal version was downloaded; null while none is published.
    current_version_fetched: bool | None = None

    @classmethod
    def of(
        cls,
        order: Order,
        versions: list[PortalVersion],
        links: PortalLinks,
        assets: dict[str, AssetStatusView] | None = None,
        emails: dict[int, DeliveryEmail] | None = None,
        downloads: list[PortalDownload] | None = None,
        current_version_fetched: bool | None = None,
    ) -> OrderView:
        emails = emails or {}
        current = current_version(versions)
        return cls(
            portal_url=links.portal() if versions else None,
            portal_versions=[
                PortalVersionView(
                    version=v.version,
                    created_at=v.created_at,
                    url=links.version_page(v.version),
                    email=EmailView.of(emails[v.version]) if v.version in emails else None,
                    signing_key_id=v.signing_key_id,
                    yanked_at=v.yanked_at,
                    yank_reason=v.yank_reason,
                )
                for v in versions
            ],
            cfg_id=order.cfg_id,
            status=order.status,
            target=order.target,
            created_at=order.created_at,
            updated_at=order.updated_at,
            edp_job_id=order.edp_job_id,
            error=order.last_error,
            last_attempt_error=order.attempt_error,
            order=order.payload,
            assets=assets,
            current_version=None if current is None else current.version,
            downloads=[DownloadView.of(download) for download in downloads or []],
            current_version_fetched=current_version_fetched,
        )


BodyT = TypeVar("BodyT", bound=BaseModel)
RETRY_AFTER_SECONDS = "30"


async def read_keyed_request(
    request: Request, model: type[BodyT], *, scope: Scope = Scope.OPERATOR, when_empty: BodyT | None = None
) -> tuple[ApiState, str | None, BodyT]:
    """The API's state, the Idempotency-Key and the body of a client's request, checked in that order.

    The caller needs ``scope``; an operator's call needs an Idempotency-Key (the website's may have one).
    """
    state: ApiState = request.app.state.api
    require_scope(request, state.credentials, scope)
    key = idempotency_key(request, required=scope is Scope.OPERATOR)
    api = state.settings.api
    body = await read_json_model(
        request,
        model,
        api.max_body_bytes,
        when_empty=when_empty,
        read_timeout_seconds=api.body_read_timeout_seconds,
    )
    return state, key, body


def launch_or_undo(
    launch: Callable[[], LaunchedBackfill], undo: Callable[[], None], what: str
) -> LaunchedBackfill:
    """``launch()``'s backfill; on any failure ``undo()`` first, and a failed launch answers 503.

    Nothing was launched then: undoing the claim frees its Idempotency-Key for the client's retry.
    """
    try:
        return launch()
    except DagsterLaunchError as exc:
        undo()
        raise Problem(
            503, f"the {what} was not launched: {exc}", headers={"Retry-After": RETRY_AFTER_SECONDS}
        ) from None
    except BaseException:
        undo()
        raise


async def submit(request: Request) -> JSONResponse:
    state, key, payload = await read_keyed_request(request, ConfiguratorPayload, scope=Scope.WEBSITE)
    try:
        # Committed to platform_db before the answer: an accepted order is never lost.
        order, _created = await run_in_threadpool(state.orders.submit, payload, key)
    except IdempotencyConflict:
        raise Problem(409, "this Idempotency-Key was already used for a different order") from None
    # Not in the answer's path: the website never waits on Dagster, and an order Dagster cannot
    # take now is started by order_sensor.
    if state.settings.pipeline.api_starts_first_run:
        state.first_runs.enqueue(order.cfg_id)
    return JSONResponse(SubmitAccepted(cfg_id=order.cfg_id).model_dump())


def _order_or_404(state: ApiState, cfg_id: str) -> Order:
    order = state.orders.get(cfg_id) if is_cfg_id(cfg_id) else None
    if order is None:
        raise Problem(404, "no order with this cfg_id")
    return order


def _order_view(state: ApiState, cfg_id: str) -> OrderView:
    order = _order_or_404(state, cfg_id)
    versions = state.deliveries.portal_versions(cfg_id)
    current = current_version(versions)
    return OrderView.of(
        order,
        versions,
        state.portal_links(order),
        state.asset_status.statuses(cfg_id),
        emails=state.deliveries.emails(cfg_id),
        downloads=state.downloads.recent(cfg_id, state.settings.portal.recent_downloads),
        current_version_fetched=None if current is None else state.downloads.fetched(cfg_id, current.version),
    )


def _status_view(state: ApiState, cfg_id: str) -> OrderStatusView:
    order = _order_or_404(state, cfg_id)
    return OrderStatusView.of(order, state.deliveries.portal_versions(cfg_id))


async def get_order(request: Request) -> JSONResponse:
    """The whole order for an operator; its status alone for the website."""
    state: ApiState = request.app.state.api
    scope = require_scope(request, state.credentials, Scope.WEBSITE)
    cfg_id = request.path_params["cfg_id"]
    view: BaseModel
    if scope is Scope.OPERATOR:
        view = await run_in_threadpool(_order_view, state, cfg_id)
    else:
        view = await run_in_threadpool(_status_view, state, cfg_id)
    return JSONResponse(view.model_dump(mode="json"))


def _portal_links_of(state: ApiState, cfg_id: str, generation: int) -> PortalLinks:
    return PortalLinks(base_url=state.settings.api.public_url, token=state.tokens.token(cfg_id, generation))


def _rotate(state: ApiState, cfg_id: str, notify_customer: bool) -> Answer:
    generation = state.orders.rotate_portal_token(cfg_id)
    notice_error = None
    if notify_customer:
        notice_error = _email_new_link(
            state,
            _order_or_404(state, cfg_id),
            generation,
            _portal_links_of(state, cfg_id, generation).portal(),
        )
    # Stored without the link, which carries the customer's token: the answer makes it from the
    # generation this rotation started, so a repeated key answers the same link.
    stored = {
        "cfg_id": cfg_id,
        "portal_token_generation": generation,
        "customer_notified": notify_customer and notice_error is None,
        "notice_error": notice_error,
    }
    return Answer(200, stored)


def _email_new_link(state: ApiState, order: Order, generation: int, portal_url: str) -> str | None:
    """Email the customer the new link; None once SES took it, else why it was not sent."""
    payload = order.configurator_payload()
    sender = state.settings.email.sender
    outbox_dir = state.settings.email.outbox_dir
    try:
        send_notice(
            message=compose_portal_link_email(
                sender=sender,
                order=payload,
                cfg_id=order.cfg_id,
                generation=generation,
                portal_url=portal_url,
                at=datetime.now(UTC),
            ),
            recipient=payload.customer.email,
            sender=sender,
            ses_client=state.ses_client(),
            outbox_dir=Path(outbox_dir) if outbox_dir else None,
            outbox_name=portal_link_outbox_name(order.cfg_id, generation),
        )
    except NoticeNotSent as exc:
        if exc.maybe_sent:
            return f"{exc}; it is not sent again (ask the customer whether it arrived)"
        return f"{exc}; nothing was sent: rotate again with notify_customer and a new Idempotency-Key"
    return None


def _rotate_once(state: ApiState, key: str, cfg_id: str, body: PortalTokenRotation) -> Answer:
    # Checked before the key is claimed: only an order that exists names a call.
    _order_or_404(state, cfg_id)
    return answer_once(
        state,
        key,
        f"POST /orders/{cfg_id}/portal-token",
        body,
        lambda: _rotate(state, cfg_id, body.notify_customer),
    )


def _rotated(state: ApiState, stored: dict[str, Any]) -> PortalTokenRotated:
    cfg_id = str(stored["cfg_id"])
    return PortalTokenRotated(
        cfg_id=cfg_id,
        portal_url=_portal_links_of(state, cfg_id, int(stored["portal_token_generation"])).portal(),
        customer_notified=bool(stored["customer_notified"]),
        notice_error=stored["notice_error"],
    )


async def rotate_portal_token(request: Request) -> JSONResponse:
    """A new portal link for the order; the old one answers 404 from now on. ``notify_customer``
    emails the customer the new link. Once per Idempotency-Key: a repeated key answers the same link."""
    state, key, body = await read_keyed_request(
        request, PortalTokenRotation, when_empty=PortalTokenRotation()
    )
    assert key is not None  # an operator's call always has one
    answer = await run_in_threadpool(_rotate_once, state, key, request.path_params["cfg_id"], body)
    return keyed_response(answer, lambda stored: _rotated(state, stored))
