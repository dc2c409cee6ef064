"""stuck_order_sensor: an order standing still with no run left is resumed, then failed with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dagster import DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.runs.schema import RunsTable
from sqlalchemy import update

from contracts.orders import OrderStatus
from order_pipeline.keys import AFTER_EDP, CONFIG
from platform_db.schema import orders
from sensors.order_runs import NOT_STARTED_ORPHAN_AFTER
from tests.order_lifecycle import walk_to

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform

SENSOR = "stuck_order_sensor"


def _stand_still(platform: Platform, cfg_id: str, seconds: int) -> None:
    """As if the order's status had not moved for ``seconds``."""
    with platform.orders.engine.begin() as connection:
        connection.execute(
            update(orders)
            .where(orders.c.cfg_id == cfg_id)
            .values(updated_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_orders_within_their_limits_are_left_alone(platform: Platform) -> None:
    order = platform.submit_order()
    walk_to(platform.orders, order.cfg_id, OrderStatus.BUILDING)

    data = platform.tick(SENSOR)

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.BUILDING


def test_a_stuck_order_is_resumed_at_its_step_unless_a_run_is_still_in_progress(platform: Platform) -> None:
    limits = platform.settings.pipeline
    received = platform.submit_order()
    building = platform.submit_order()
    walk_to(platform.orders, building.cfg_id, OrderStatus.BUILDING)
    platform.add_partitions(received.cfg_id, building.cfg_id)
    _stand_still(platform, received.cfg_id, limits.stuck_received_seconds + 1)
    _stand_still(platform, building.cfg_id, limits.stuck_building_seconds + 1)

    data = platform.tick(SENSOR)

    by_order = {request.partition_key: request for request in data.run_requests}
    assert list(by_order[received.cfg_id].asset_selection or []) == [CONFIG]
    assert list(by_order[building.cfg_id].asset_selection or []) == AFTER_EDP
    assert by_order[building.cfg_id].tags["platform/sweep"] == "resume_build"

    # A run of the order is in progress: that run will move it (or run monitoring ends it).
    platform.instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            status=DagsterRunStatus.STARTED,
            tags={"dagster/partition": building.cfg_id},
        )
    )
    again = platform.tick(SENSOR)
    assert [request.partition_key for request in again.run_requests] == [received.cfg_id]


def test_a_run_left_not_started_by_a_killed_launcher_does_not_hold_the_order_for_ever(
    platform: Platform,
) -> None:
    limits = platform.settings.pipeline
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    _stand_still(platform, order.cfg_id, limits.stuck_received_seconds + 1)
    # Created, then the process that would have submitted it was killed.
    left = DagsterRun(
        job_name="__ASSET_JOB", status=DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": order.cfg_id}
    )
    platform.instance.add_run(left)

    # Just created: its launcher may still submit it.
    assert platform.tick(SENSOR).run_requests == []

    created = datetime.now(UTC) - NOT_STARTED_ORPHAN_AFTER - timedelta(seconds=1)
    with platform.instance.run_storage.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(
            RunsTable.update()
            .where(RunsTable.c.run_id == left.run_id)
            .values(create_timestamp=created.replace(tzinfo=None))
        )
    [resumed] = platform.tick(SENSOR).run_requests
    assert resumed.partition_key == order.cfg_id
    assert list(resumed.asset_selection or []) == [CONFIG]


def test_an_edp_job_past_its_timeout_fails_the_order_with_the_reason(platform: Platform) -> None:
    order = platform.submit_order()
    platform.orders.record_edp_job(order.cfg_id, "job-slow")
    _stand_still(platform, order.cfg_id, platform.settings.pipeline.edp_job_timeout_seconds + 1)

    data = platform.tick(SENSOR)

    assert data.run_requests == []
    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.status == OrderStatus.FAILED
    assert stored.last_error is not None and "EDP job job-slow did not finish" in stored.last_error
