"""order_run_failure_sensor: a failed run of an order marks the order failed, with the step's error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import ExecuteInProcessResult, Failure, asset, build_run_status_sensor_context, materialize

from contracts.orders import OrderStatus
from order_pipeline.keys import CONFIG, ORDER_PREFIX, orders_partitions
from platform_assets.definitions import order_assets
from platform_db.order_retries import OrderRetryRepository

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform

SENSOR = "order_run_failure_sensor"


def _report_failure(platform: Platform, result: ExecuteInProcessResult) -> None:
    """What the daemon does when it sees the run's failure event."""
    assert not result.success
    sensor_def = platform.defs.resolve_sensor_def(SENSOR)
    with build_run_status_sensor_context(
        sensor_name=SENSOR,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=platform.instance,
        dagster_run=result.dagster_run,
        resources=platform.defs.resources,
    ) as context:
        sensor_def(context.for_run_failure())


def _materialize_config(platform: Platform, cfg_id: str) -> ExecuteInProcessResult:
    return materialize(
        order_assets(platform.settings),
        selection=[CONFIG],
        partition_key=cfg_id,
        resources=platform.defs.resources,
        instance=platform.instance,
        raise_on_error=False,
    )


def test_a_config_run_that_edp_refuses_fails_the_order_with_the_reason(platform: Platform) -> None:
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    platform.set_edp_faults(failure="http_500")

    result = _materialize_config(platform, order.cfg_id)
    _report_failure(platform, result)

    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.status == OrderStatus.FAILED
    assert stored.last_error is not None
    assert "EDP refused the job: HTTP 500" in stored.last_error
    # EDP's body ({"error": "EDP stand-in: injected fault http_500"}) stays out: GET /orders returns last_error.
    assert "injected fault" not in stored.last_error


def test_a_failing_step_of_any_order_asset_is_the_reason(platform: Platform) -> None:
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)

    @asset(key_prefix=ORDER_PREFIX, partitions_def=orders_partitions)
    def broken(context) -> None:
        raise Failure(f"dtm.json of {context.partition_key} lists no devices")

    result = materialize(
        [broken], partition_key=order.cfg_id, instance=platform.instance, raise_on_error=False
    )
    _report_failure(platform, result)

    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.status == OrderStatus.FAILED
    assert stored.last_error is not None
    assert f"dtm.json of {order.cfg_id} lists no devices" in stored.last_error


def test_an_earlier_more_specific_reason_is_kept(platform: Platform) -> None:
    """edp_artifacts marks the order failed itself, with EDP's words; the run failure must not overwrite them."""
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    platform.set_edp_faults(failure="http_500")
    result = _materialize_config(platform, order.cfg_id)
    platform.orders.fail(order.cfg_id, "EDP job abc failed: topology invalid")

    _report_failure(platform, result)

    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.last_error == "EDP job abc failed: topology invalid"


def test_a_failed_run_of_an_unknown_order_changes_nothing(platform: Platform) -> None:
    bystander = platform.submit_order()
    unknown = "00000000-0000-4000-8000-000000000000"
    platform.add_partitions(unknown)
    platform.set_edp_faults(failure="http_500")

    result = _materialize_config(platform, unknown)
    _report_failure(platform, result)

    assert platform.orders.get(unknown) is None
    assert platform.status_of(bystander.cfg_id) == OrderStatus.RECEIVED


def test_a_failure_the_operator_already_retried_does_not_fail_the_retry(platform: Platform) -> None:
    """The step failed the order, the operator retried at once, and the sensor saw the run only then."""
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    platform.set_edp_faults(failure="http_500")
    result = _materialize_config(platform, order.cfg_id)
    assert platform.orders.get(order.cfg_id).status == OrderStatus.FAILED  # type: ignore[union-attr]
    retries = OrderRetryRepository(platform.orders.engine)
    retries.claim(order.cfg_id, "retry-1")
    assert platform.orders.start_retry(order.cfg_id, OrderStatus.RECEIVED, new_edp_job=True)

    _report_failure(platform, result)

    stored = platform.orders.get(order.cfg_id)
    assert stored is not None
    assert stored.status == OrderStatus.RECEIVED
    assert stored.last_error is None


def test_a_run_that_began_after_the_retry_still_fails_the_order(platform: Platform) -> None:
    order = platform.submit_order()
    platform.add_partitions(order.cfg_id)
    OrderRetryRepository(platform.orders.engine).claim(order.cfg_id, "retry-earlier")

    @asset(key_prefix=ORDER_PREFIX, partitions_def=orders_partitions)
    def broken() -> None:
        raise Failure("S3 is down")

    result = materialize(
        [broken], partition_key=order.cfg_id, instance=platform.instance, raise_on_error=False
    )
    _report_failure(platform, result)

    assert platform.orders.get(order.cfg_id).status == OrderStatus.FAILED  # type: ignore[union-attr]
