"""Re-delivery limits hold in the pipeline: a backfill launched in the Dagster UI never passes the API.

order/manifest refuses a new portal version past api.max_redeliveries_per_order(_per_day), and a
backfill over more than pipeline.max_redelivery_backfill_orders orders without the confirmation
tag; the run fails with the reason, and nothing is published or emailed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from dagster import ExecuteInProcessResult
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.utils import make_new_backfill_id

from contracts.orders import OrderStatus
from delivery.redelivery_limits import FLEET_CONFIRMATION_TAG
from order_pipeline.keys import AFTER_EDP, CONFIG, REDELIVERY
from platform_assets.definitions import order_assets
from platform_db.deliveries import DeliveryRepository
from standins.hmi_ci import publish_sample_apk

if TYPE_CHECKING:
    from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow


def _limited(flow: OrderFlow, *, per_order: int = 20, fleet: int = 10) -> OrderFlow:
    """The same stage with other re-delivery limits (the pipeline's resources are built from them)."""
    settings = flow.settings.model_copy(
        update={
            "api": flow.settings.api.model_copy(update={"max_redeliveries_per_order": per_order}),
            "pipeline": flow.settings.pipeline.model_copy(update={"max_redelivery_backfill_orders": fleet}),
        }
    )
    return type(flow)(settings=settings, instance=flow.instance, orders=flow.orders)


def _delivered(flow: OrderFlow) -> str:
    publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.0.0")
    cfg_id = flow.submit("cloud")
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    assert len(flow.emails_sent_by_ses(cfg_id)) == 1
    return cfg_id


def _refusal(result: ExecuteInProcessResult) -> str:
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "order__manifest"
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and user_failure.description is not None
    return user_failure.description


def _published(flow: OrderFlow, cfg_id: str) -> list[int]:
    return [v.version for v in DeliveryRepository(flow.orders.engine).portal_versions(cfg_id)]


def _backfill(flow: OrderFlow, cfg_ids: list[str]) -> str:
    """A backfill of order/manifest + order/email over ``cfg_ids``, as the Dagster UI's launch dialog makes it."""
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=AssetGraph.from_assets(order_assets(flow.settings)),
        partition_names=cfg_ids,
        asset_selection=REDELIVERY,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=flow.instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    flow.instance.add_backfill(backfill)
    return backfill.backfill_id


def test_a_re_delivery_past_the_per_order_limit_is_refused_with_the_reason_and_sends_nothing(
    flow: OrderFlow,
) -> None:
    limited = _limited(flow, per_order=1)
    cfg_id = _delivered(limited)
    assert limited.materialize(cfg_id, REDELIVERY).success, "one re-delivery is within the limit"
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2

    reason = _refusal(limited.materialize(cfg_id, REDELIVERY, raise_on_error=False))

    assert f"re-delivery of order {cfg_id} refused (it has 2 published portal version(s)" in reason
    assert "re-delivered 1 time(s), the limit per order (api.max_redeliveries_per_order = 1)" in reason
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2
    assert len(flow.outbox(cfg_id)) == 2
    assert _published(flow, cfg_id) == [1, 2]
    assert flow.keys(f"portal/{cfg_id}/v3/") == []
    assert flow.status(cfg_id) == OrderStatus.DELIVERED


def test_a_fleet_backfill_re_delivers_only_with_the_confirmation_tag(flow: OrderFlow) -> None:
    limited = _limited(flow, fleet=2)
    cfg_id = _delivered(limited)
    backfill_id = _backfill(flow, [cfg_id, flow.submit("cloud"), flow.submit("onprem")])

    reason = _refusal(
        limited.materialize(cfg_id, REDELIVERY, raise_on_error=False, tags={BACKFILL_ID_TAG: backfill_id})
    )

    assert f"backfill {backfill_id} re-delivers to 3 orders" in reason
    assert "pipeline.max_redelivery_backfill_orders (2)" in reason
    assert f"launch the backfill again with the tag {FLEET_CONFIRMATION_TAG}=3" in reason
    assert len(flow.emails_sent_by_ses(cfg_id)) == 1
    assert _published(flow, cfg_id) == [1]

    confirmed = limited.materialize(
        cfg_id, REDELIVERY, tags={BACKFILL_ID_TAG: backfill_id, FLEET_CONFIRMATION_TAG: "3"}
    )

    assert confirmed.success
    assert _published(flow, cfg_id) == [1, 2]
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2
