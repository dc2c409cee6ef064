"""order_sensor: every new order becomes a partition and exactly one config run."""

from __future__ import annotations

from dagster._core.definitions.dynamic_partitions_request import AddDynamicPartitionsRequest

from platform_assets.partitions import CONFIG

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform


def _added_partitions(data) -> list[list[str]]:
    return [
        list(request.partition_keys)
        for request in data.dynamic_partitions_requests
        if isinstance(request, AddDynamicPartitionsRequest)
    ]


def test_new_orders_become_partitions_and_config_runs(platform: Platform) -> None:
    first = platform.submit_order("cloud")
    second = platform.submit_order("onprem")

    data = platform.tick("order_sensor")

    assert data.skip_message is None
    assert _added_partitions(data) == [[first.cfg_id, second.cfg_id]]
    assert all(request.partitions_def_name == "orders" for request in data.dynamic_partitions_requests)
    assert [request.partition_key for request in data.run_requests] == [first.cfg_id, second.cfg_id]
    for request, order in zip(data.run_requests, [first, second], strict=True):
        assert request.asset_selection == [CONFIG]
        assert order.cfg_id in request.run_key
    # Run keys differ per order: the daemon dedupes by run key, so a shared key would drop an order.
    assert len({request.run_key for request in data.run_requests}) == 2
    assert data.cursor == str(max(first.seq, second.seq))


def test_a_tick_with_nothing_new_skips(platform: Platform) -> None:
    platform.submit_order()
    cursor = platform.tick("order_sensor").cursor

    again = platform.tick("order_sensor", cursor=cursor)

    assert again.run_requests == []
    assert again.dynamic_partitions_requests == []
    assert again.skip_message


def test_only_the_order_after_the_cursor_is_requested(platform: Platform) -> None:
    platform.submit_order()
    platform.submit_order()
    first_tick = platform.tick("order_sensor")
    # The daemon applies the add request before it launches the runs.
    platform.add_partitions(*[request.partition_key for request in first_tick.run_requests])

    third = platform.submit_order("onprem")
    data = platform.tick("order_sensor", cursor=first_tick.cursor)

    assert _added_partitions(data) == [[third.cfg_id]]
    assert [request.partition_key for request in data.run_requests] == [third.cfg_id]
    assert third.cfg_id in data.run_requests[0].run_key
    assert data.cursor == str(third.seq)


def test_a_repeated_tick_from_the_same_cursor_repeats_the_same_run_keys(platform: Platform) -> None:
    """A daemon restarted before it saved the cursor asks again; equal run keys make that harmless."""
    platform.submit_order()

    first = platform.tick("order_sensor")
    repeated = platform.tick("order_sensor")

    assert [r.run_key for r in repeated.run_requests] == [r.run_key for r in first.run_requests]


def test_no_orders_at_all_skips(platform: Platform) -> None:
    data = platform.tick("order_sensor")

    assert data.run_requests == []
    assert data.skip_message
