from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DeviceTopologyModel, DtmDevice, Point
from edge_gateway.polling import (
    MAX_REGISTERS_PER_READ,
    DeviceHealth,
    DevicePoller,
    DeviceState,
    PollingSupervisor,
    backoff_delay,
    decode,
    plan_reads,
)
from edge_gateway.settings import PollingSettings
from edge_gateway.storage import MeasurementStore, Reading
from tests.edge_gateway.conftest import device_document, dtm_document, encode, free_port


def polling_every(interval: float, *, backoff_from: float, backoff_to: float) -> PollingSettings:
    """Polling each ``interval`` s, backing off from ``backoff_from`` to ``backoff_to`` s; a request
    times out after 0.5 s."""
    return PollingSettings(
        interval_seconds=interval,
        request_timeout_seconds=0.5,
        backoff_initial_seconds=backoff_from,
        backoff_max_seconds=backoff_to,
    )


FAST = polling_every(0.1, backoff_from=0.05, backoff_to=0.2)

# One point of every data type and register kind, with values at the edges of each type.
TYPED_POINTS: dict[Point, int] = {
    Point(name="h_int16", address=0, register_kind="holding", data_type="int16", scale=0.1, unit="V"): -1234,
    Point(
        name="h_uint16", address=1, register_kind="holding", data_type="uint16", scale=1.0, unit="%"
    ): 65535,
    Point(
        name="h_int32", address=2, register_kind="holding", data_type="int32", scale=1.0, unit="W"
    ): -2_000_000_000,
    Point(
        name="h_uint32", address=4, register_kind="holding", data_type="uint32", scale=0.01, unit="kWh"
    ): 4_000_000_000,
    Point(name="i_int16", address=10, register_kind="input", data_type="int16", scale=2.0, unit="A"): 32767,
    Point(name="i_uint16", address=11, register_kind="input", data_type="uint16", scale=0.5, unit="Hz"): 100,
    Point(name="i_int32", address=20, register_kind="input", data_type="int32", scale=0.001, unit="var"): -1,
    Point(
        name="i_uint32", address=22, register_kind="input", data_type="uint32", scale=1.0, unit="Wh"
    ): 70000,
}

# Plausible raw values for the catalog's register maps.
CATALOG_VALUES: dict[str, int] = {
    "active_power": -15000,
    "voltage_l1": 2301,
    "energy_import": 123456789,
    "ac_power": 98000,
    "daily_yield": 4321,
    "state_of_charge": 875,
    "power": -5000,
}


def device(device_id: str, points: Iterable[Point], port: int | None = None, unit_id: int = 1) -> DtmDevice:
    return DtmDevice.model_validate(device_document(device_id, list(points), port=port, unit_id=unit_id))


def topology(*devices: DtmDevice) -> DeviceTopologyModel:
    return DeviceTopologyModel.model_validate(dtm_document([d.model_dump(mode="json") for d in devices]))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def store_in(path: Path) -> tuple[MeasurementStore, Callable[[Sequence[Reading]], Awaitable[None]]]:
    store = MeasurementStore(path)

    async def add(readings: Sequence[Reading]) -> None:
        await asyncio.to_thread(store.add, readings)

    return store, add


# --- decoding and request planning -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        ("int16", 0), ("int16", -1), ("int16", -32768), ("int16", 32767),
        ("uint16", 0), ("uint16", 65535),
        ("int32", -1), ("int32", -2**31), ("int32", 2**31 - 1), ("int32", 70000),
        ("uint32", 0), ("uint32", 2**32 - 1), ("uint32", 65536),
    ],
)  # fmt: skip
def test_decode_round_trips_every_data_type(data_type: Any, value: int) -> None:
    assert decode(encode(value, data_type), data_type) == value


def test_32_bit_values_are_high_word_first() -> None:
    assert decode([0x0001, 0x0000], "uint32") == 65536
    assert decode([0xFFFF, 0xFFFE], "int32") == -2


def test_decode_rejects_the_wrong_number_of_registers() -> None:
    with pytest.raises(ValueError, match="int32 needs 2 register"):
        decode([1], "int32")


def test_adjacent_points_share_a_request_and_gaps_do_not() -> None:
    blocks = plan_reads(POINT_CATALOG["power_meter"])
    # active_power 0..1 and voltage_l1 2 are adjacent; energy_import starts after an unmapped register 3.
    assert [(b.kind, b.address, b.count, [p.name for p in b.points]) for b in blocks] == [
        ("input", 0, 3, ["active_power", "voltage_l1"]),
        ("input", 4, 2, ["energy_import"]),
    ]
    mixed = plan_reads(TYPED_POINTS)
    assert [(b.kind, b.address, b.count) for b in mixed] == [
        ("holding", 0, 6),
        ("input", 10, 2),
        ("input", 20, 4),
    ]


def test_a_request_never_exceeds_the_modbus_limit() -> None:
    points = [Point(name=f"p{i}", address=i * 2, data_type="uint32", unit="W") for i in range(100)]
    blocks = plan_reads(points)
    assert all(block.count <= MAX_REGISTERS_PER_READ for block in blocks)
    assert sum(len(block.points) for block in blocks) == 100
    assert [block.count for block in blocks] == [124, 76]


def test_backoff_doubles_from_initial_and_caps_at_max() -> None:
    delays = [backoff_delay(n, 1.0, 30.0) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(10_000, 1.0, 30.0) == 30.0


# --- against real Modbus devices ---------------------------------------------------------------


def test_values_of_every_data_type_are_decoded_scaled_and_stored(
    tmp_path: Path, modbus_device: Callable[..., Any]
) -> None:
    server = modbus_device(TYPED_POINTS, unit_id=3)
    store, add = store_in(tmp_path / "gateway.db")

    async def scenario() -> PollingSupervisor:
        supervisor = PollingSupervisor(FAST, add)
        await supervisor.apply(topology(device("meter", TYPED_POINTS, server.port, unit_id=3)))
        await until(lambda: store.count() >= 3 * len(TYPED_POINTS))
        assert supervisor.device_health()["meter"].state == "polling"
        assert supervisor.device_health()["meter"].last_success_at is not None
        await supervisor.stop()
        return supervisor

    supervisor = asyncio.run(scenario())
    latest = store.latest()["meter"]
    for point, raw in TYPED_POINTS.items():
        assert latest[point.name]["value"] == pytest.approx(raw * point.scale), point.name
        assert latest[point.name]["unit"] == point.unit
    assert latest["h_int32"]["value"] == -2_000_000_000
    assert latest["h_uint32"]["value"] == pytest.approx(40_000_000.0)
    # Whole polls only: every stored poll holds every point.
    assert store.count() % len(TYPED_POINTS) == 0
    assert len(store.history("meter", "h_int16")) == store.count() // len(TYPED_POINTS)
    assert supervisor.connection_attempts == 1, "one connection serves every poll"
    assert supervisor.device_health() == {}, "a stopped supervisor polls nothing"
    store.close()


@pytest.mark.parametrize("device_type", sorted(POINT_CATALOG))
def test_every_catalog_device_type_polls(
    device_type: str, tmp_path: Path, modbus_device: Callable[..., Any]
) -> None:
    points = {point: CATALOG_VALUES[point.name] for point in POINT_CATALOG[device_type]}  # type: ignore[index]
    server = modbus_device(points)
    store, add = store_in(tmp_path / "gateway.db")

    async def scenario() -> None:
        supervisor = PollingSupervisor(FAST, add)
        await supervisor.apply(topology(device("dev", points, server.port)))
        await until(lambda: store.count() >= len(points))
        await supervisor.stop()

    asyncio.run(scenario())
    latest = store.latest()["dev"]
    assert {name: entry["value"] for name, entry in latest.items()} == pytest.approx(
        {point.name: raw * point.scale for point, raw in points.items()}
    )
    store.close()


def test_a_bare_topology_is_quiet(tmp_path: Path) -> None:
    store, add = store_in(tmp_path / "gateway.db")
    bare = topology(*(device(f"dev-{n}", POINT_CATALOG["power_meter"]) for n in range(3)))

    async def scenario() -> tuple[PollingSupervisor, int, dict[str, DeviceState]]:
        # Counted where every TCP connection of the loop starts, independent of the gateway's own count.
        loop = asyncio.get_running_loop()
        opened = 0
        original = loop.create_connection

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal opened
            opened += 1
            return await original(*args, **kwargs)

        loop.create_connection = counting  # type: ignore[method-assign]
        supervisor = PollingSupervisor(FAST, add)
        await supervisor.apply(bare)
        await asyncio.sleep(5 * FAST.interval_seconds)
        states = {device_id: health.state for device_id, health in supervisor.device_health().items()}
        await supervisor.stop()
        return supervisor, opened, states

    supervisor, opened, states = asyncio.run(scenario())
    assert opened == 0
    assert supervisor.connection_attempts == 0
    assert states == {
        "dev-0": "not_connected",
        "dev-1": "not_connected",
        "dev-2": "not_connected",
    }
    assert store.count() == 0
    store.close()


def test_backoff_delays_grow_and_cap_for_a_device_that_does_not_answer() -> None:
    polling = polling_every(1.0, backoff_from=0.5, backoff_to=3.0)
    waits: list[float] = []
    attempts = 0

    def count() -> None:
        nonlocal attempts
        attempts += 1

    async def record(delay: float) -> None:
        # Time stands still: the real connection attempts happen, the waits are only recorded.
        waits.append(delay)
        if len(waits) >= 7:
            await asyncio.Future()  # the seventh wait lasts until the test ends it
        await asyncio.sleep(0)

    async def stored(readings: Sequence[Reading]) -> None:
        raise AssertionError("nothing answers, so nothing is stored")

    async def scenario() -> DevicePoller:
        dead = device("gone", POINT_CATALOG["battery"], free_port())
        assert dead.connection is not None
        poller = DevicePoller(dead, dead.connection, polling, stored, count, sleep=record)
        task = asyncio.create_task(poller.run())
        await until(lambda: len(waits) >= 7)
        task.cancel()
        await asyncio.wait([task])
        return poller

    poller = asyncio.run(scenario())
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert attempts == len(waits), "every retry is one counted connection attempt"
    assert poller.health.state == "failing"
    assert poller.health.consecutive_failures == len(waits)
    assert "cannot connect to 127.0.0.1" in (poller.health.last_error or "")


def test_retries_are_spaced_by_the_backoff_in_real_time() -> None:
    polling = polling_every(0.05, backoff_from=0.08, backoff_to=0.32)
    stamps: list[float] = []

    async def stored(readings: Sequence[Reading]) -> None:
        raise AssertionError("nothing answers")

    async def scenario() -> None:
        dead = device("gone", POINT_CATALOG["battery"], free_port())
        assert dead.connection is not None
        poller = DevicePoller(dead, dead.connection, polling, stored, lambda: stamps.append(time.monotonic()))
        task = asyncio.create_task(poller.run())
        await until(lambda: len(stamps) >= 6)
        task.cancel()
        await asyncio.wait([task])

    asyncio.run(scenario())
    gaps = [later - earlier for earlier, later in pairwise(stamps)]
    expected = [0.08, 0.16, 0.32, 0.32, 0.32]
    for gap, wait in zip(gaps[: len(expected)], expected, strict=True):
        # Never sooner than the backoff; later only by scheduling noise.
        assert wait - 0.01 <= gap < wait + 0.25, (gaps, expected)
    assert gaps[2] > gaps[0] * 2.5, "the waits grow"


def test_a_cancellation_lost_inside_a_step_still_stops_the_poller() -> None:
    polling = polling_every(1.0, backoff_from=0.05, backoff_to=0.05)
    lost = 0

    async def sleep_losing_the_cancellation(delay: float) -> None:
        nonlocal lost
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            # What Python 3.11's asyncio.wait_for does when the awaited call completes as the
            # cancellation arrives (pymodbus' connect waits that way).
            lost += 1

    async def stored(readings: Sequence[Reading]) -> None:
        raise AssertionError("nothing answers")

    async def scenario() -> bool:
        dead = device("gone", POINT_CATALOG["battery"], free_port())
        assert dead.connection is not None
        poller = DevicePoller(
            dead, dead.connection, polling, stored, lambda: None, sleep=sleep_losing_the_cancellation
        )
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.2)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        return bool(done)

    assert asyncio.run(scenario()), "the poller still ran 5 s after it was cancelled"
    assert lost == 1


def test_a_modbus_exception_fails_the_poll_but_keeps_the_connection(
    tmp_path: Path, modbus_device: Callable[..., Any]
) -> None:
    good = Point(name="ok", address=0, data_type="uint16", unit="W")
    server = modbus_device({good: 7})
    unmapped = Point(name="beyond", address=200, data_type="uint16", unit="W")
    store, add = store_in(tmp_path / "gateway.db")

    async def scenario() -> tuple[PollingSupervisor, DeviceHealth]:
        supervisor = PollingSupervisor(FAST, add)
        await supervisor.apply(topology(device("meter", [good, unmapped], server.port)))
        await until(lambda: supervisor.device_health()["meter"].consecutive_failures >= 3)
        health = supervisor.device_health()["meter"]
        await supervisor.stop()
        return supervisor, health

    supervisor, health = asyncio.run(scenario())
    assert health.state == "failing"
    assert "holding registers 200..200: Modbus exception code 2" in (health.last_error or "")
    assert store.count() == 0, "a poll is stored whole or not at all"
    assert supervisor.connection_attempts == 1, "the device answered: no reason to reconnect"
    store.close()


def test_applying_a_new_topology_stops_removed_devices_and_starts_new_ones(
    tmp_path: Path, modbus_device: Callable[..., Any]
) -> None:
    point = Point(name="p", address=0, data_type="uint16", unit="W")
    first, second = modbus_device({point: 1}), modbus_device({point: 2})
    store, add = store_in(tmp_path / "gateway.db")

    async def scenario() -> tuple[int, int]:
        supervisor = PollingSupervisor(FAST, add)
        await supervisor.apply(topology(device("a", [point], first.port), device("b", [point])))
        await until(lambda: len(store.history("a", "p")) >= 2)
        assert supervisor.device_health()["b"].state == "not_connected"
        # Commissioning b (now with a connection) and removing a.
        await supervisor.apply(topology(device("b", [point], second.port)))
        stopped_at = len(store.history("a", "p"))
        await until(lambda: len(store.history("b", "p")) >= 3)
        assert set(supervisor.device_health()) == {"b"}
        await supervisor.stop()
        return stopped_at, len(store.history("a", "p"))

    stopped_at, final = asyncio.run(scenario())
    assert final == stopped_at, "the removed device is not polled after apply() returned"
    assert store.latest()["b"]["p"]["value"] == 2
    store.close()


def test_an_unchanged_device_keeps_its_poller_across_apply(
    tmp_path: Path, modbus_device: Callable[..., Any]
) -> None:
    point = Point(name="p", address=0, data_type="uint16", unit="W")
    server = modbus_device({point: 5})
    store, add = store_in(tmp_path / "gateway.db")

    async def scenario() -> PollingSupervisor:
        supervisor = PollingSupervisor(FAST, add)
        kept = device("kept", [point], server.port)
        await supervisor.apply(topology(kept))
        await until(lambda: store.count() >= 1)
        await supervisor.apply(topology(kept, device("new", [point])))
        await until(lambda: store.count() >= 3)
        await supervisor.stop()
        return supervisor

    supervisor = asyncio.run(scenario())
    assert supervisor.connection_attempts == 1, "no reconnect for a device the new topology did not change"
    store.close()
