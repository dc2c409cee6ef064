"""Order intake: ``POST /submit`` and ``GET /orders/{cfg_id}``."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.asset_status import AssetStatusView
from api.auth import require_bearer_token
from api.dagster_graphql import DagsterLaunchError, LaunchedBackfill
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
from delivery.portal_links import PortalLinks
from platform_db import IdempotencyConflict
from service_kit.json_body import read_json_model
from service_kit.problems import Problem

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


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


class PortalTokenRotated(BaseModel):
    cfg_id: str
    portal_url: str


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


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEMPOTENCY_KEY_RE.match(key):
        raise Problem(400, "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
    return key


async def read_keyed_request(
    request: Request, model: type[BodyT], *, when_empty: BodyT | None = None
) -> tuple[ApiState, str | None, BodyT]:
    """The API's state, the Idempotency-Key and the body of a client's request, checked in that order."""
    state: ApiState = request.app.state.api
    require_bearer_token(request, state.bearer_token)
    key = _idempotency_key(request)
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
    state, key, payload = await read_keyed_request(request, ConfiguratorPayload)
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


async def get_order(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    require_bearer_token(request, state.bearer_token)
    view = await run_in_threadpool(_order_view, state, request.path_params["cfg_id"])
    return JSONResponse(view.model_dump(mode="json"))


def _rotate(state: ApiState, cfg_id: str) -> PortalTokenRotated:
    _order_or_404(state, cfg_id)
    state.orders.rotate_portal_token(cfg_id)
    order = _order_or_404(state, cfg_id)
    return PortalTokenRotated(cfg_id=cfg_id, portal_url=state.portal_links(order).portal())


async def rotate_portal_token(request: Request) -> JSONResponse:
    """A new portal link for the order; the old one answers 404 from now on."""
    state: ApiState = request.app.state.api
    require_bearer_token(request, state.bearer_token)
    rotated = await run_in_threadpool(_rotate, state, request.path_params["cfg_id"])
    return JSONResponse(rotated.model_dump())
