"""Industrial fixtures: real fixture processes read back with a pymodbus client, and their DTM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from contracts.configurator import DeviceType
from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DeviceTopologyModel, Point
from delivery.edge_bundle import dtm_json
from industrial_fixtures import fixture_dtm_bytes, load_fixture_dtm, load_manifest
from industrial_fixtures.registers import decode, encode, raw_value, register_count
from industrial_fixtures.signals import DeviceSignals
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
DEVICE_TYPES: tuple[DeviceType, ...] = ("power_meter", "pv_inverter", "battery")
# What a plausible reading of each point looks like.
PLAUSIBLE = {
    "active_power": (-10_000, 10_000),
    "voltage_l1": (215, 245),
    "energy_import": (10_000, 20_010),
    "ac_power": (0, 15_000),
    "daily_yield": (5, 60),
    "state_of_charge": (5, 95),
    "power": (-6_000, 6_000),
}
# Points driven by a waveform change within a second or two; counters may take longer.
WAVEFORM_POINTS = {"active_power", "voltage_l1", "ac_power", "power", "state_of_charge"}
DATATYPE = {
    "int16": ModbusTcpClient.DATATYPE.INT16,
    "uint16": ModbusTcpClient.DATATYPE.UINT16,
    "int32": ModbusTcpClient.DATATYPE.INT32,
    "uint32": ModbusTcpClient.DATATYPE.UINT32,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module", params=DEVICE_TYPES)
def fixture_server(request: pytest.FixtureRequest) -> Iterator[tuple[DeviceType, int, int]]:
    """``python -m industrial_fixtures`` for one device type on a free port; yields (type, port, unit)."""
    device_type: DeviceType = request.param
    port = _free_port()
    unit_id = 7
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "industrial_fixtures",
            "--type",
            device_type,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--unit-id",
            str(unit_id),
            "--update-seconds",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        assert process.poll() is None, process.communicate()[0].decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        wait_for("the fixture listening", listening, 15, interval=0.1)
        yield device_type, port, unit_id
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 0, output
    assert f"{device_type} unit {unit_id} listening on 127.0.0.1:{port}" in output


def read_point(client: ModbusTcpClient, point: Point, unit_id: int) -> float:
    read = client.read_input_registers if point.register_kind == "input" else client.read_holding_registers
    response = read(point.address, count=register_count(point), device_id=unit_id)
    assert not response.isError(), f"{point.name}: {response}"
    # Decoded with pymodbus' own converter, big-endian words: independent of the fixture's encoder.
    raw = client.convert_from_registers(response.registers, DATATYPE[point.data_type])
    return float(raw) * point.scale


def test_fixture_serves_its_catalog_registers_with_changing_values(
    fixture_server: tuple[DeviceType, int, int],
) -> None:
    device_type, port, unit_id = fixture_server
    points = POINT_CATALOG[device_type]
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    assert client.connect()
    try:
        samples: list[dict[str, float]] = []
        for _ in range(8):
            samples.append({point.name: read_point(client, point, unit_id) for point in points})
            time.sleep(0.3)
    finally:
        client.close()

    for point in points:
        values = [sample[point.name] for sample in samples]
        low, high = PLAUSIBLE[point.name]
        assert all(low <= value <= high for value in values), (point.name, values)
        # Values are whole multiples of the scale: the raw register is the value divided by it.
        assert all(abs(value / point.scale - round(value / point.scale)) < 1e-6 for value in values)
        if point.name in WAVEFORM_POINTS:
            assert len(set(values)) > 1, f"{point.name} does not change: {values}"
    counters = [point.name for point in points if point.name in ("energy_import", "daily_yield")]
    for name in counters:
        values = [sample[name] for sample in samples]
        assert values == sorted(values), f"{name} runs backwards: {values}"


def test_fixture_answers_nothing_but_its_registers(fixture_server: tuple[DeviceType, int, int]) -> None:
    device_type, port, unit_id = fixture_server
    points = POINT_CATALOG[device_type]
    used = {
        (point.register_kind, point.address + offset)
        for point in points
        for offset in range(register_count(point))
    }
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    assert client.connect()
    try:
        for kind in ("holding", "input"):
            read = client.read_input_registers if kind == "input" else client.read_holding_registers
            for address in range(8):
                response = read(address, count=1, device_id=unit_id)
                assert response.isError() == ((kind, address) not in used), (kind, address, response)
        other_unit = client.read_holding_registers(0, count=1, device_id=unit_id + 1)
        assert other_unit.isError() and other_unit.exception_code == 0x0B  # gateway target failed to respond
        assert client.read_coils(0, count=1, device_id=unit_id).isError()
        kind = points[0].register_kind
        if kind == "holding":
            assert client.write_register(points[0].address, 1, device_id=unit_id).isError()
    finally:
        client.close()


@pytest.mark.parametrize("device_type", DEVICE_TYPES)
def test_every_catalog_point_round_trips_through_its_registers(device_type: DeviceType) -> None:
    signals = DeviceSignals(device_type, seed=1)
    for _ in range(50):
        values = signals.step(0.5)
        assert set(values) == {point.name for point in POINT_CATALOG[device_type]}
        for point in POINT_CATALOG[device_type]:
            registers = encode(point, values[point.name])
            assert len(registers) == register_count(point)
            assert all(0 <= register <= 0xFFFF for register in registers)
            assert decode(point, registers) == pytest.approx(
                raw_value(point, values[point.name]) * point.scale
            )
            assert abs(decode(point, registers) - values[point.name]) <= point.scale / 2 + 1e-9


def test_encoding_is_big_endian_and_signed_where_the_type_says() -> None:
    int32 = Point(name="p", address=0, data_type="int32", scale=1.0, unit="W")
    assert encode(int32, -2) == [0xFFFF, 0xFFFE]
    assert encode(int32, 70_000) == [0x0001, 0x1170]
    uint16 = Point(name="v", address=0, data_type="uint16", scale=0.1, unit="V")
    assert encode(uint16, 230.4) == [2304]
    # Out-of-range values clamp to what the register can hold instead of wrapping around.
    assert encode(uint16, -5) == [0]
    assert encode(Point(name="x", address=0, data_type="int16", unit="W"), 40_000) == [0x7FFF]


def test_battery_state_of_charge_follows_its_power() -> None:
    signals = DeviceSignals("battery", seed=3)
    # Over ten seconds of strong charging or discharging, the state of charge moves with the power
    # (the reported value is noisy, like a real BMS estimate, so single steps may not).
    history = [signals.step(0.5) for _ in range(480)]
    checked = 0
    for start in range(0, len(history) - 20, 20):
        window = history[start : start + 20]
        powers = [values["power"] for values in window]
        if min(powers) > 2_000 or max(powers) < -2_000:
            rise = window[-1]["state_of_charge"] - window[0]["state_of_charge"]
            assert (rise > 0) == (powers[0] > 0), (powers[0], rise)
            checked += 1
    assert checked >= 3
    assert all(0 <= values["state_of_charge"] <= 100 for values in history)


def test_industrial_fixtures_json_is_a_dtm_pointing_at_fixture_hostnames() -> None:
    data = json.loads(fixture_dtm_bytes())
    dtm = DeviceTopologyModel.model_validate(data)
    assert dtm == load_fixture_dtm()
    # Stored canonically, so that the delivered dtm.json is byte-identical to the file.
    assert fixture_dtm_bytes() == dtm_json(dtm)

    manifest = load_manifest()
    hostnames = [fixture.hostname for fixture in manifest.fixtures]
    assert len(hostnames) == len(set(hostnames))
    assert {fixture.type for fixture in manifest.fixtures} == set(POINT_CATALOG)
    served = set()
    for device in dtm.devices:
        assert device.connection is not None, f"{device.id} has no connection"
        fixture = manifest.by_hostname(device.connection.host)
        assert (fixture.type, fixture.port, fixture.unit_id) == (
            device.type,
            device.connection.port,
            device.connection.unit_id,
        ), device.id
        assert tuple(device.points) == POINT_CATALOG[device.type]
        served.add(fixture.hostname)
    assert served == set(hostnames), "every fixture is polled by some device"
