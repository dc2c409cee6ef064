"""edp_sensor: a finished EDP job sets the build going; a failed one fails the order; a sick EDP costs one tick nothing."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from dagster import DagsterRun, DagsterRunStatus, Definitions
from dagster._core.storage.tags import WILL_RETRY_TAG

from contracts.orders import OrderStatus
from contracts.records import Order
from order_pipeline.keys import APK, CFN_OR_ISO, EDP_ARTIFACTS, EMAIL, MANIFEST
from platform_assets.definitions import build_definitions

if TYPE_CHECKING:
    from tests.conftest import ScriptedEdp
    from tests.sensors.conftest import Platform


def _waiting_on_a_job(platform: Platform, status: str) -> tuple[Order, str]:
    """A submitted order with its partition and its EDP job, once EDP says the job is ``status``."""
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    job_id = platform.submit_edp_job(order)
    platform.wait_for_edp_status(job_id, status)
    return order, job_id


def test_no_order_waiting_on_edp_skips(platform: Platform) -> None:
    platform.submit_order()  # received, no EDP job yet

    data = platform.tick("edp_sensor")

    assert data.run_requests == []
    assert data.skip_message


def test_a_queued_or_running_job_keeps_the_order_waiting(platform: Platform) -> None:
    # Latencies are fixed per job when EDP accepts it: this one stays unfinished through the test.
    platform.set_edp_faults(queued_seconds=30, running_seconds=30)
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    job_id = platform.submit_edp_job(order)
    assert platform.edp_client().get_job(job_id).status in ("queued", "running")

    data = platform.tick("edp_sensor")

    assert data.run_requests == []
    assert data.skip_message
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING


def test_a_running_job_is_still_waited_for(platform: Platform) -> None:
    platform.set_edp_faults(queued_seconds=0, running_seconds=30)
    order, _ = _waiting_on_a_job(platform, "running")

    data = platform.tick("edp_sensor")

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING


def test_a_complete_job_requests_the_build_and_delivery(platform: Platform) -> None:
    order, job_id = _waiting_on_a_job(platform, "complete")

    data = platform.tick("edp_sensor")

    assert data.skip_message is None
    [request] = data.run_requests
    assert request.partition_key == order.cfg_id
    assert set(request.asset_selection) == {EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST, EMAIL}
    assert order.cfg_id in request.run_key and job_id in request.run_key
    assert platform.status_of(order.cfg_id) == OrderStatus.BUILDING


def test_an_order_whose_own_run_waits_for_edp_is_left_to_that_run(platform: Platform) -> None:
    """One run per order: order/edp_artifacts waits for the job inside the run, which builds it."""
    order, _ = _waiting_on_a_job(platform, "complete")
    platform.instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB", status=DagsterRunStatus.STARTED, tags={"dagster/partition": order.cfg_id}
        )
    )

    data = platform.tick("edp_sensor")

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING


def test_an_order_whose_crashed_run_dagster_will_retry_is_left_to_the_retry(platform: Platform) -> None:
    """Run monitoring failed the run of a dead worker; run_retries runs it again, with the build."""
    order, _ = _waiting_on_a_job(platform, "complete")
    crashed = platform.instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            status=DagsterRunStatus.FAILURE,
            tags={"dagster/partition": order.cfg_id, WILL_RETRY_TAG: "true"},
        )
    )

    assert platform.tick("edp_sensor").run_requests == []

    # Dagster decided against a retry (or it already ran and failed for good): the sensor builds.
    platform.instance.add_run_tags(crashed.run_id, {WILL_RETRY_TAG: "false"})
    [request] = platform.tick("edp_sensor").run_requests
    assert request.partition_key == order.cfg_id


def test_only_the_finished_of_several_orders_is_requested(platform: Platform) -> None:
    done = platform.submit_order()
    platform.add_partitions(done.cfg_id)
    done_job = platform.submit_edp_job(done)
    platform.set_edp_faults(queued_seconds=30)
    slow = platform.submit_order("onprem")
    platform.add_partitions(slow.cfg_id)
    platform.submit_edp_job(slow)
    platform.wait_for_edp_status(done_job, "complete")

    data = platform.tick("edp_sensor")

    assert [request.partition_key for request in data.run_requests] == [done.cfg_id]
    assert platform.status_of(done.cfg_id) == OrderStatus.BUILDING
    assert platform.status_of(slow.cfg_id) == OrderStatus.EDP_PENDING


def test_a_failed_job_fails_the_order_with_edps_reason(platform: Platform) -> None:
    platform.set_edp_faults(failure="job_fails")
    order, job_id = _waiting_on_a_job(platform, "failed")

    data = platform.tick("edp_sensor")

    assert data.run_requests == []
    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.status == OrderStatus.FAILED
    assert stored.last_error is not None
    assert "injected fault job_fails" in stored.last_error
    assert job_id in stored.last_error
    # A failed order is no longer polled.
    assert platform.tick("edp_sensor").skip_message


def test_edp_answering_500_leaves_the_order_waiting(platform: Platform) -> None:
    order, _ = _waiting_on_a_job(platform, "complete")
    platform.set_edp_faults(failure="http_500")

    started = time.monotonic()
    data = platform.tick("edp_sensor")
    elapsed = time.monotonic() - started

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING
    assert elapsed < platform.settings.pipeline.edp_poll_budget_seconds

    # EDP recovers: the next tick picks the order up.
    platform.set_edp_faults(failure="none")
    assert [r.partition_key for r in platform.tick("edp_sensor").run_requests] == [order.cfg_id]


def test_a_hanging_edp_costs_one_client_timeout_not_the_hang(platform: Platform) -> None:
    order, _ = _waiting_on_a_job(platform, "complete")
    timeout = platform.settings.edp.timeout_seconds
    platform.set_edp_faults(failure="hang", hang_seconds=timeout + 6)

    started = time.monotonic()
    data = platform.tick("edp_sensor")
    elapsed = time.monotonic() - started

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING
    # One request, no retries inside a tick: about one timeout, well short of the hang.
    assert elapsed < timeout + 4
    assert elapsed < platform.settings.pipeline.edp_poll_budget_seconds


def test_a_hanging_edp_never_lets_a_tick_outlast_its_budget(platform: Platform) -> None:
    settings = platform.settings
    budget = 3.0
    tight = settings.model_copy(
        update={"pipeline": settings.pipeline.model_copy(update={"edp_poll_budget_seconds": budget})}
    )
    orders = [platform.submit_order() for _ in range(4)]
    platform.add_partitions(*[order.cfg_id for order in orders])
    for order in orders:
        platform.submit_edp_job(order)
    platform.set_edp_faults(failure="hang", hang_seconds=settings.edp.timeout_seconds + 6)

    started = time.monotonic()
    data = platform.tick("edp_sensor", defs=build_definitions(tight))
    elapsed = time.monotonic() - started

    assert data.run_requests == []
    # Four orders at one timeout each would take 4 x timeout (8 s); the budget stops polling well before.
    assert elapsed < budget + 2
    assert all(platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING for order in orders)


def _waiting_on_scripted_edp(platform: Platform, scripted_edp: ScriptedEdp) -> tuple[Definitions, Order]:
    """Definitions that poll ``scripted_edp``, and an order waiting on its job."""
    settings = platform.settings
    defs = build_definitions(
        settings.model_copy(
            update={"edp": settings.edp.model_copy(update={"base_url": scripted_edp.base_url})}
        )
    )
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    platform.orders.record_edp_job(order.cfg_id, scripted_edp.job_id)
    return defs, order


def test_edps_reason_reaches_the_order_without_url_queries_and_capped(
    platform: Platform, scripted_edp: ScriptedEdp
) -> None:
    defs, order = _waiting_on_scripted_edp(platform, scripted_edp)
    reason = (
        "upload to https://bucket.s3.amazonaws.com/jobs/1/dtm.json?X-Amz-Credential=AKIDSECRET&X-Amz-Signature=f00d"
        " failed\n" + "detail " * 500
    )
    scripted_edp.job_answer = (200, json.dumps({"status": "failed", "error": reason}).encode())

    platform.tick("edp_sensor", defs=defs)

    stored = platform.orders.get(order.cfg_id)
    assert stored is not None and stored.status == OrderStatus.FAILED
    assert stored.last_error is not None
    assert stored.last_error.startswith(
        f"EDP job {scripted_edp.job_id} failed: upload to https://bucket.s3.amazonaws.com/jobs/1/dtm.json failed detail"
    )
    assert "AKIDSECRET" not in stored.last_error and "X-Amz" not in stored.last_error
    assert len(stored.last_error) <= 500


def test_an_edp_answer_that_is_not_a_job_leaves_the_order_waiting(
    platform: Platform, scripted_edp: ScriptedEdp
) -> None:
    defs, order = _waiting_on_scripted_edp(platform, scripted_edp)
    scripted_edp.job_answer = (200, b'{"status": "SECRET-BODY"}')

    data = platform.tick("edp_sensor", defs=defs)

    assert data.run_requests == []
    assert platform.status_of(order.cfg_id) == OrderStatus.EDP_PENDING
