"""Re-delivery: ``POST /orders/{cfg_id}/redeliver`` launches a Dagster backfill of the order.

``{"apk": false}`` (the default) backfills ``order/manifest`` and ``order/email``: the order's
artifacts are published again as portal version N+1 and emailed. ``{"apk": true}`` also backfills
``order/apk`` first, so the newest APK in the bucket ships with it. The backfill runs in Dagster
like one launched from the UI; the answer carries its id.

A retried request with the same Idempotency-Key answers the backfill of the first one and launches
nothing new (the key is claimed in platform_db before the launch).

Each re-delivery publishes a portal version and sends an email, so each new key is bounded per order:
``api.max_redeliveries_per_order`` in all and ``api.max_redeliveries_per_order_per_day`` within 24
hours; past either the answer is 429 naming the limit. A retry of an accepted key still answers its
backfill.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, StrictBool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.dagster_graphql import LaunchedBackfill
from api.orders import _order_or_404, launch_or_undo, read_keyed_request
from api.state import ApiState
from order_pipeline.keys import AFTER_APK, REDELIVERY, AssetKey
from platform_db.redeliveries import Redelivery, RedeliveryConflict, RedeliveryInProgress
from service_kit.problems import Problem

REDELIVERY_TAG = "platform/redelivery"
BACKFILL_TAGS = {REDELIVERY_TAG: "api"}
LIMIT_WINDOW = timedelta(days=1)


class RedeliveryRequest(BaseModel):
    """Optional body of the request; an empty body means ``{"apk": false}``."""

    model_config = ConfigDict(extra="forbid")

    apk: StrictBool = False


class RedeliveryAccepted(BaseModel):
    cfg_id: str
    backfill_id: str
    # The backfilled asset keys, e.g. ["order/manifest", "order/email"].
    assets: list[str]
    apk: bool


def redelivery_assets(apk: bool) -> list[list[str]]:
    """Key paths of the assets a re-delivery backfills."""
    return [list(key.path) for key in (AFTER_APK if apk else REDELIVERY)]


def _accepted(cfg_id: str, backfill_id: str, apk: bool) -> RedeliveryAccepted:
    return RedeliveryAccepted(
        cfg_id=cfg_id,
        backfill_id=backfill_id,
        assets=["/".join(path) for path in redelivery_assets(apk)],
        apk=apk,
    )


def _over_the_limit(state: ApiState, claim: Redelivery) -> Problem | None:
    """429 when the order's earlier re-deliveries use up a limit, else None.

    Counted after the claim, over the claims before it (launched or still launching): of two
    concurrent requests at the limit, the later claim is refused, whatever the timing.
    """
    api = state.settings.api
    earlier = [row for row in state.redeliveries.for_order(claim.cfg_id) if row.id < claim.id]
    if len(earlier) >= api.max_redeliveries_per_order:
        return Problem(
            429,
            f"this order was already re-delivered {len(earlier)} time(s) through the API, the limit per order "
            f"(api.max_redeliveries_per_order = {api.max_redeliveries_per_order}); each re-delivery adds a portal "
            "version and an email, so further ones go through an operator (the Dagster UI)",
        )
    per_day = api.max_redeliveries_per_order_per_day
    now = datetime.now(UTC)
    recent = sorted(row.created_at for row in earlier if row.created_at > now - LIMIT_WINDOW)
    if len(recent) < per_day:
        return None
    detail = (
        f"this order was already re-delivered {len(recent)} time(s) within the last 24 hours, the limit "
        f"(api.max_redeliveries_per_order_per_day = {per_day})"
    )
    if per_day == 0:
        return Problem(429, detail)
    # A slot frees when the oldest of the re-deliveries that fill the window is a day old.
    frees_at = recent[len(recent) - per_day] + LIMIT_WINDOW
    retry_after = max(1, int((frees_at - now).total_seconds()) + 1)
    return Problem(
        429, f"{detail}; retry in {retry_after} seconds", headers={"Retry-After": str(retry_after)}
    )


def _redeliver(state: ApiState, cfg_id: str, apk: bool, key: str | None) -> RedeliveryAccepted:
    _order_or_404(state, cfg_id)
    if not state.deliveries.portal_versions(cfg_id):
        raise Problem(
            409,
            "this order was never delivered (it has no portal version yet), so there is nothing to re-deliver; "
            "its first delivery follows the pipeline (GET /orders/{cfg_id} shows where it stands)",
        )
    try:
        claim, claimed = state.redeliveries.claim(cfg_id, apk, key)
    except RedeliveryConflict:
        raise Problem(
            409,
            "this Idempotency-Key was already used for a different re-delivery (another order or apk value)",
        ) from None
    except RedeliveryInProgress:
        raise Problem(
            409,
            "a re-delivery with this Idempotency-Key is being launched right now; retry in a few seconds",
            headers={"Retry-After": "5"},
        ) from None
    if not claimed:
        assert claim.backfill_id is not None
        return _accepted(cfg_id, claim.backfill_id, claim.apk)
    over_limit = _over_the_limit(state, claim)
    if over_limit is not None:
        state.redeliveries.release(claim.id)
        raise over_limit
    launched = launch_redelivery(
        state,
        cfg_id,
        AFTER_APK if apk else REDELIVERY,
        description=f"re-delivery of order {cfg_id} ({'with the newest APK' if apk else 'same APK'}) through the API",
        undo=lambda: state.redeliveries.release(claim.id),
    )
    state.redeliveries.record_backfill(claim.id, launched.backfill_id)
    return _accepted(cfg_id, launched.backfill_id, apk)


def launch_redelivery(
    state: ApiState,
    cfg_id: str,
    assets: Sequence[AssetKey],
    *,
    description: str,
    undo: Callable[[], None],
    source: str = "api",
) -> LaunchedBackfill:
    """Launch a Dagster backfill of ``assets`` over the order: portal version N+1, published and
    emailed. On a failed launch ``undo()`` runs first and the answer is 503 (nothing launched).

    ``source`` tells the backfills apart in the Dagster UI (the ``platform/redelivery`` tag).
    """
    return launch_or_undo(
        lambda: state.backfills.launch(
            [cfg_id],
            [list(key.path) for key in assets],
            tags={REDELIVERY_TAG: source},
            description=description,
        ),
        undo,
        "re-delivery",
    )


async def redeliver(request: Request) -> JSONResponse:
    state, key, body = await read_keyed_request(request, RedeliveryRequest, when_empty=RedeliveryRequest())
    accepted = await run_in_threadpool(_redeliver, state, request.path_params["cfg_id"], body.apk, key)
    return JSONResponse(accepted.model_dump(), status_code=202)
