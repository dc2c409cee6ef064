"""Retry: ``POST /orders/{cfg_id}/retry`` puts a failed order back on its way in one call.

Where it restarts follows the order's assets in Dagster (what GET /orders shows):

- ``order/config`` or ``order/edp_artifacts`` not materialized (EDP failed, or its artifacts were
  refused): ``order/config`` again with a NEW EDP job (the order's ``edp_attempt`` is bumped, and
  it is part of the EDP Idempotency-Key); the order is ``received``, and the edp_sensor runs the
  rest when the job completes, as for a new order.
- else the first of ``order/cfn_or_iso``, ``order/apk``, ``order/manifest``, ``order/email`` not
  materialized, and everything after it; the order is ``building``. With every asset materialized
  (a failed asset check, say) it restarts at ``order/manifest``.

An asset whose materialization is older than one it is built from counts as not materialized.

The request claims its Idempotency-Key in platform_db first (a retried request answers the same
backfill and launches nothing new), then moves the order and launches the backfill; a launch that
fails puts the order back to ``failed`` with its reason and gives the key back (503).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.asset_status import AssetStatusView
from api.auth import Scope, require_scope
from api.dagster_graphql import DagsterLaunchError
from api.idempotency import idempotency_key
from api.orders import _order_or_404
from api.state import ApiState
from contracts.orders import DELIVERED_ONCE, OrderStatus
from contracts.records import Order
from order_pipeline.keys import (
    APK,
    CFN_OR_ISO,
    CONFIG,
    EDP_ARTIFACTS,
    EDP_SUBMIT_TAG,
    EMAIL,
    MANIFEST,
    AssetKey,
)
from platform_db.order_retries import (
    OrderRetry,
    OrderRetryConflict,
    OrderRetryInProgress,
)
from service_kit.problems import Problem

RETRY_AFTER_SECONDS = "30"
BACKFILL_TAGS = {"platform/retry": "api"}
# The steps after EDP, in the order a restart runs them.
BUILD_STEPS = (CFN_OR_ISO, APK, MANIFEST, EMAIL)
# What each asset is built from: a materialization older than one of these is stale.
BUILT_FROM: Mapping[AssetKey, tuple[AssetKey, ...]] = {
    EDP_ARTIFACTS: (CONFIG,),
    CFN_OR_ISO: (EDP_ARTIFACTS,),
    MANIFEST: (CFN_OR_ISO, APK),
    EMAIL: (MANIFEST,),
}


class OrderRetryAccepted(BaseModel):
    cfg_id: str
    backfill_id: str
    # The backfilled asset keys, e.g. ["order/config"] or ["order/cfn_or_iso", ..., "order/email"].
    assets: list[str]
    # True: the retry starts at order/config and asks EDP for a new job.
    new_edp_job: bool


@dataclass(frozen=True)
class RestartPlan:
    assets: tuple[AssetKey, ...]
    new_edp_job: bool
    # Where the order goes before the backfill is launched.
    status: OrderStatus

    @property
    def asset_names(self) -> list[str]:
        return [key.to_user_string() for key in self.assets]

    @property
    def tags(self) -> dict[str, str]:
        # A config run submits an EDP job: the run queue caps those by this tag, as for new orders.
        return {**BACKFILL_TAGS, EDP_SUBMIT_TAG: "submit"} if self.new_edp_job else dict(BACKFILL_TAGS)


def _current(statuses: Mapping[str, AssetStatusView], key: AssetKey) -> bool:
    """Materialized, and not older than what it is built from."""
    view = statuses.get(key.to_user_string())
    if view is None or view.status != "materialized" or view.last_materialized_at is None:
        return False
    for source in BUILT_FROM.get(key, ()):
        upstream = statuses.get(source.to_user_string())
        built_at = upstream.last_materialized_at if upstream is not None else None
        if built_at is not None and built_at > view.last_materialized_at:
            return False
    return True


def restart_plan(statuses: Mapping[str, AssetStatusView]) -> RestartPlan:
    """Where a failed order restarts, from its assets' statuses (see the module's docstring)."""
    if not (_current(statuses, CONFIG) and _current(statuses, EDP_ARTIFACTS)):
        return RestartPlan((CONFIG,), new_edp_job=True, status=OrderStatus.RECEIVED)
    first = next(
        (i for i, key in enumerate(BUILD_STEPS) if not _current(statuses, key)), BUILD_STEPS.index(MANIFEST)
    )
    return RestartPlan(BUILD_STEPS[first:], new_edp_job=False, status=OrderStatus.BUILDING)


def _accepted(retry: OrderRetry) -> OrderRetryAccepted:
    assert retry.backfill_id is not None and retry.assets is not None and retry.new_edp_job is not None
    return OrderRetryAccepted(
        cfg_id=retry.cfg_id,
        backfill_id=retry.backfill_id,
        assets=list(retry.assets),
        new_edp_job=retry.new_edp_job,
    )


def _not_failed(order: Order) -> Problem:
    detail = f"this order is {order.status.value}, not failed; only failed orders are retried"
    if order.status in DELIVERED_ONCE:
        detail += ". A delivered order is re-delivered with POST /orders/{cfg_id}/redeliver"
    elif order.status is OrderStatus.WAITING_FOR_APK:
        detail += ". It waits for an HMI APK: publishing one resumes it"
    else:
        detail += ". It is still on its way: GET /orders/{cfg_id} shows where it stands"
    return Problem(409, detail)


def _plan(state: ApiState, cfg_id: str) -> tuple[Order, RestartPlan]:
    """The order as it is now (failed) and where it restarts; a Problem when it cannot."""
    order = _order_or_404(state, cfg_id)
    if order.status is not OrderStatus.FAILED:
        raise _not_failed(order)
    statuses = state.asset_status.statuses(cfg_id)
    if statuses is None:
        raise Problem(
            503,
            "the order was not retried: the Dagster webserver cannot be reached or read, so where the order stopped is not known",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    running = [name for name, view in statuses.items() if view.status == "running"]
    if running:
        # The run may still fail the order after the retry moved it; let it end first.
        raise Problem(
            409,
            f"a run of this order is still in progress ({', '.join(running)}); retry when it has ended "
            "(or cancel it in the Dagster UI)",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    return order, restart_plan(statuses)


def _launch(state: ApiState, order: Order, plan: RestartPlan) -> str:
    """Move the order to the plan's status and launch its backfill; the backfill id."""
    cfg_id = order.cfg_id
    if not state.orders.start_retry(cfg_id, plan.status, new_edp_job=plan.new_edp_job):
        raise Problem(409, "this order is already being retried (it is no longer failed)")
    try:
        launched = state.backfills.launch(
            [cfg_id],
            [list(key.path) for key in plan.assets],
            tags=plan.tags,
            description=f"retry of failed order {cfg_id} from {plan.assets[0].to_user_string()} through the API",
        )
    except BaseException as exc:
        # Nothing was launched: the order is failed again, with the reason it had.
        state.orders.fail(cfg_id, order.last_error or "the order failed (no reason was recorded)")
        if isinstance(exc, DagsterLaunchError):
            raise Problem(
                503, f"the retry was not launched: {exc}", headers={"Retry-After": RETRY_AFTER_SECONDS}
            ) from None
        raise
    return launched.backfill_id


def _retry(state: ApiState, cfg_id: str, key: str | None) -> OrderRetryAccepted:
    _order_or_404(state, cfg_id)
    try:
        claim, claimed = state.order_retries.claim(cfg_id, key)
    except OrderRetryConflict:
        raise Problem(409, "this Idempotency-Key was already used for a retry of another order") from None
    except OrderRetryInProgress:
        raise Problem(
            409,
            "a retry with this Idempotency-Key is being launched right now; retry in a few seconds",
            headers={"Retry-After": "5"},
        ) from None
    if not claimed:
        return _accepted(claim)
    try:
        order, plan = _plan(state, cfg_id)
        backfill_id = _launch(state, order, plan)
    except BaseException:
        # Nothing was launched: the key is free again, so the client's retry may launch it.
        state.order_retries.release(claim.id)
        raise
    return _accepted(
        state.order_retries.record_backfill(claim.id, backfill_id, plan.asset_names, plan.new_edp_job)
    )


async def retry_order(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    require_scope(request, state.credentials, Scope.OPERATOR)
    key = idempotency_key(request, required=True)
    accepted = await run_in_threadpool(_retry, state, request.path_params["cfg_id"], key)
    return JSONResponse(accepted.model_dump(), status_code=202)
