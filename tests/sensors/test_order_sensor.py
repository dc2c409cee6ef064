"""order_sensor: a received order whose first run nobody started becomes a partition and exactly one run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster._core.definitions.dynamic_partitions_request import AddDynamicPartitionsRequest

from order_pipeline.keys import CONFIG, EVERY_STEP, first_run_selection

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform


def _added_partitions(data) -> list[list[str]]:
    return [
        list(request.partition_keys)
        for request in data.dynamic_partitions_requests
        if isinstance(request, AddDynamicPartitionsRequest)
    ]


def test_orders_nobody_started_become_partitions_and_one_run_each(platform: Platform) -> None:
    first = platform.submit_order("cloud")
    second = platform.submit_order("onprem")

    data = platform.tick("order_sensor")

    assert data.skip_message is None
    assert _added_partitions(data) == [[first.cfg_id, second.cfg_id]]
    assert all(request.partitions_def_name == "orders" for request in data.dynamic_partitions_requests)
    assert [request.partition_key for request in data.run_requests] == [first.cfg_id, second.cfg_id]
    selection = first_run_selection(platform.settings.pipeline.edp_wait_in_run_seconds)
    for request, order in zip(data.run_requests, [first, second], strict=True):
        assert request.asset_selection == selection
        assert order.cfg_id in request.run_key
    # Run keys differ per order: the daemon dedupes by run key, so a shared key would drop an order.
    assert len({request.run_key for request in data.run_requests}) == 2


def test_an_order_the_api_started_is_left_alone(platform: Platform) -> None:
    started = platform.submit_order()
    waiting = platform.submit_order("onprem")
    assert platform.orders.claim_first_run(started.cfg_id)

    data = platform.tick("order_sensor")

    assert [request.partition_key for request in data.run_requests] == [waiting.cfg_id]


def test_a_second_tick_requests_nothing_again(platform: Platform) -> None:
    platform.submit_order()
    assert platform.tick("order_sensor").run_requests

    again = platform.tick("order_sensor")

    assert again.run_requests == []
    assert again.dynamic_partitions_requests == []
    assert again.skip_message


def test_an_order_whose_launch_the_api_gave_back_is_started(platform: Platform) -> None:
    """The API claimed the start, Dagster did not answer, the API released the claim."""
    order = platform.submit_order()
    assert platform.orders.claim_first_run(order.cfg_id)
    assert platform.tick("order_sensor").run_requests == []

    platform.orders.release_first_run(order.cfg_id)
    data = platform.tick("order_sensor")

    assert [request.partition_key for request in data.run_requests] == [order.cfg_id]


def test_no_orders_at_all_skips(platform: Platform) -> None:
    data = platform.tick("order_sensor")

    assert data.run_requests == []
    assert data.skip_message


def test_the_first_run_is_the_whole_order_only_where_edp_may_be_waited_for() -> None:
    assert first_run_selection(60) == EVERY_STEP
    assert first_run_selection(0) == [CONFIG]
