"""An order in one run: order/edp_artifacts waits for EDP inside it, and leaves a slow job to edp_sensor."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from contracts.orders import OrderStatus
from order_pipeline.keys import AFTER_EDP, EVERY_STEP
from platform_assets.definitions import build_definitions
from platform_config.settings import EdpStandinSettings
from standins.hmi_ci import publish_sample_apk
from tests.sensors.conftest import Platform

if TYPE_CHECKING:
    from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow

EDP_SECONDS = 2.0


@pytest.fixture
def edp_settings(edp_settings: EdpStandinSettings) -> EdpStandinSettings:
    """Jobs that take EDP_SECONDS queued and as long running: longer than a short wait, shorter than a long one."""
    return edp_settings.model_copy(update={"queued_seconds": EDP_SECONDS, "running_seconds": EDP_SECONDS})


def _order_with_an_apk(flow: OrderFlow, target: str, *, wait_seconds: float) -> tuple[OrderFlow, str]:
    """The flow with ``edp_wait_in_run_seconds`` set, an APK published and one order submitted."""
    pipeline = flow.settings.pipeline.model_copy(update={"edp_wait_in_run_seconds": wait_seconds})
    waiting = dataclasses.replace(flow, settings=flow.settings.model_copy(update={"pipeline": pipeline}))
    publish_sample_apk(waiting.s3(), waiting.settings.artifacts.bucket, "1.0.0")
    return waiting, waiting.submit(target)


def test_an_order_is_delivered_in_one_run_when_edp_finishes_within_the_wait(flow: OrderFlow) -> None:
    one_run, cfg_id = _order_with_an_apk(flow, "cloud", wait_seconds=30)

    result = one_run.materialize(cfg_id, EVERY_STEP)

    assert result.success
    assert not result.get_step_skipped_events()
    assert one_run.status(cfg_id) == OrderStatus.DELIVERED
    assert len(one_run.outbox(cfg_id)) == 1


def test_a_job_outlasting_the_wait_ends_the_run_and_edp_sensor_builds_the_order(flow: OrderFlow) -> None:
    short, cfg_id = _order_with_an_apk(flow, "onprem", wait_seconds=0.5)

    first = short.materialize(cfg_id, EVERY_STEP)

    # The run ends, without failing and without building: nothing after edp_artifacts ran.
    assert first.success
    assert {event.step_key for event in first.get_step_skipped_events()} == {
        "order__cfn_or_iso",
        "order__manifest",
        "order__email",
    }
    assert not first.asset_materializations_for_node("order__edp_artifacts")
    assert short.status(cfg_id) == OrderStatus.EDP_PENDING
    assert short.outbox(cfg_id) == []

    # edp_sensor, once the job is complete and no run of the order is left, starts the build.
    short.wait_for_edp(cfg_id)
    platform = Platform(
        settings=short.settings,
        defs=build_definitions(short.settings),
        instance=short.instance,
        orders=short.orders,
    )
    [request] = platform.tick("edp_sensor").run_requests
    assert set(request.asset_selection) == set(AFTER_EDP)
    assert short.status(cfg_id) == OrderStatus.BUILDING

    built = short.materialize(cfg_id, AFTER_EDP)

    assert built.success
    assert built.asset_materializations_for_node("order__edp_artifacts")
    assert short.status(cfg_id) == OrderStatus.DELIVERED
    assert len(short.outbox(cfg_id)) == 1
