"""``POST /orders/{cfg_id}/commissioning-token``: rotate the order's gateway commissioning token.

The token is derived from the order's cfg_id and its ``commissioning_token_generation``; this bumps
the generation and launches a re-delivery that builds the stack bundle again (``order/cfn_or_iso``:
its ``secrets.env`` carries the new token, and so do ``cfn.yaml`` and ``iso.img``, which fetch or
hold it) and publishes and emails it as a new portal version (``order/manifest``, ``order/email``).
From then on the portal shows the new token. The site's gateway takes the token of the
``secrets.env`` it runs: the old one until the site installs the new version, then only the new.

Every order's stack has a gateway (cloud and on-prem alike), so every delivered order can rotate;
one never delivered has no token anyone received (409): its first delivery carries the current one.
The new version is a re-delivery like any other, so the re-delivery limits apply (429, checked
before anything changes; the pipeline holds the same limits). Once per Idempotency-Key: a
repeated key answers the same generation and backfill and launches nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import Scope, require_scope
from api.idempotency import idempotency_key
from api.operator_calls import Answer, answer_once, keyed_response
from api.orders import _order_or_404
from api.redelivery import launch_redelivery
from api.state import ApiState
from contracts.records import PortalVersion
from delivery.redelivery_limits import RedeliveryLimits, RedeliveryRefused, check_redelivery
from order_pipeline.keys import CFN_OR_ISO, EMAIL, MANIFEST
from service_kit.problems import Problem

# The bundle is built by order/cfn_or_iso; the APK and EDP's files stay what they were.
ROTATION_ASSETS = [CFN_OR_ISO, MANIFEST, EMAIL]
BACKFILL_SOURCE = "commissioning-token"


class CommissioningTokenRotated(BaseModel):
    cfg_id: str
    # The order's commissioning token generation from now on; the token itself is on the portal page.
    commissioning_token_generation: int
    # The re-delivery that publishes the new secrets.env as a portal version and emails it.
    backfill_id: str
    assets: list[str]


def _over_the_limits(state: ApiState, cfg_id: str, published: list[PortalVersion]) -> Problem | None:
    """429 when a new portal version would break a re-delivery limit, as order/manifest would find."""
    limits = RedeliveryLimits(
        per_order=state.settings.api.max_redeliveries_per_order,
        per_order_per_day=state.settings.api.max_redeliveries_per_order_per_day,
        fleet_backfill_orders=state.settings.pipeline.max_redelivery_backfill_orders,
    )
    try:
        # No run yet; a backfill of this one order is never a fleet re-delivery.
        check_redelivery(
            cfg_id=cfg_id, run_id="", published=published, now=datetime.now(UTC), limits=limits, backfill=None
        )
    except RedeliveryRefused as exc:
        return Problem(
            429,
            f"the commissioning token was not rotated: its new portal version would break a re-delivery "
            f"limit ({'; '.join(exc.reasons)})",
        )
    return None


def _rotate(state: ApiState, cfg_id: str) -> Answer:
    published = state.deliveries.portal_versions(cfg_id)
    if not published:
        raise Problem(
            409,
            "this order was never delivered, so nobody has its commissioning token yet; its first delivery "
            "carries the current one",
        )
    over = _over_the_limits(state, cfg_id, published)
    if over is not None:
        raise over
    generation = state.orders.rotate_commissioning_token(cfg_id)

    def undo() -> None:
        # Nothing was launched: the order keeps the token its delivered bundle carries.
        state.orders.undo_commissioning_rotation(cfg_id, generation)

    launched = launch_redelivery(
        state,
        cfg_id,
        ROTATION_ASSETS,
        description=(
            f"commissioning token of order {cfg_id} rotated to generation {generation} through the API: "
            "a new portal version with the new secrets.env"
        ),
        undo=undo,
        source=BACKFILL_SOURCE,
    )
    rotated = CommissioningTokenRotated(
        cfg_id=cfg_id,
        commissioning_token_generation=generation,
        backfill_id=launched.backfill_id,
        assets=["/".join(key.path) for key in ROTATION_ASSETS],
    )
    return Answer(202, rotated.model_dump(mode="json"))


def _rotate_once(state: ApiState, key: str, cfg_id: str) -> Answer:
    # Checked before the key is claimed: only an order that exists names a call.
    _order_or_404(state, cfg_id)
    return answer_once(
        state, key, f"POST /orders/{cfg_id}/commissioning-token", None, lambda: _rotate(state, cfg_id)
    )


async def rotate_commissioning_token(request: Request) -> JSONResponse:
    """Rotate the order's gateway commissioning token: 202 with the new generation and the
    re-delivery's backfill."""
    state: ApiState = request.app.state.api
    require_scope(request, state.credentials, Scope.OPERATOR)
    key = idempotency_key(request, required=True)
    assert key is not None
    answer = await run_in_threadpool(_rotate_once, state, key, request.path_params["cfg_id"])
    return keyed_response(answer, CommissioningTokenRotated.model_validate)
