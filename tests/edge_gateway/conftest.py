"""Real Modbus TCP devices for the gateway's tests: pymodbus servers in their own threads."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from contracts.dtm import Point
from edge_gateway.settings import GatewaySettings, load_gateway_settings

REGISTERS = 64
COMMISSIONING_TOKEN = "test-commissioning-token"
START_TIMEOUT = 10.0
_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}


def encode(value: int, data_type: str) -> list[int]:
    """Registers of ``value``, high word first; struct, not the gateway's own code, so a bug there shows."""
    packed = struct.pack(_STRUCT[data_type], value)
    return [int.from_bytes(packed[index : index + 2], "big") for index in range(0, len(packed), 2)]


def register_image(points: Mapping[Point, int]) -> tuple[list[int], list[int]]:
    """Holding and input register contents that serve each point's raw value."""
    holding, inputs = [0] * REGISTERS, [0] * REGISTERS
    for point, raw in points.items():
        target = holding if point.register_kind == "holding" else inputs
        for offset, word in enumerate(encode(raw, point.data_type)):
            target[point.address + offset] = word
    return holding, inputs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ModbusDeviceServer:
    """One Modbus TCP device on 127.0.0.1; stop() and start() again keep its port, like a device
    that is switched off and on."""

    def __init__(
        self, holding: list[int], inputs: list[int], *, unit_id: int = 1, port: int | None = None
    ) -> None:
        self.holding = holding
        self.inputs = inputs
        self.unit_id = unit_id
        self.port = port or free_port()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _device(self) -> SimDevice:
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(
                bits,
                list(bits),
                [SimData(0, values=list(self.holding), datatype=DataType.REGISTERS)],
                [SimData(0, values=list(self.inputs), datatype=DataType.REGISTERS)],
            ),
        )

    async def _serve(self) -> None:
        try:
            server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
            await server.serve_forever(background=True)
            self._stop = asyncio.Event()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._started.set()
        await self._stop.wait()
        await server.shutdown()  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException:  # noqa: BLE001 - whatever ends the serving loop, the thread just ends
            pass
        finally:
            loop.close()

    def start(self) -> ModbusDeviceServer:
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"modbus device :{self.port}", daemon=True)
        self._thread.start()
        # The port was free a moment ago; after a stop the OS may still hold it briefly.
        if not self._started.wait(START_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"modbus device on port {self.port} did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "modbus device did not stop"
        self._thread = None


@pytest.fixture
def modbus_device() -> Iterator[Callable[..., ModbusDeviceServer]]:
    """Start real Modbus devices serving given point values; all are stopped at the end."""
    started: list[ModbusDeviceServer] = []

    def start(points: Mapping[Point, int], *, unit_id: int = 1) -> ModbusDeviceServer:
        holding, inputs = register_image(points)
        server = ModbusDeviceServer(holding, inputs, unit_id=unit_id).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def dtm_document(devices: list[dict[str, Any]], *, site: str = "Plant Nord") -> dict[str, Any]:
    return {"schema_version": 1, "site": {"name": site, "timezone": "Europe/Berlin"}, "devices": devices}


def device_document(
    device_id: str,
    points: list[Point],
    *,
    port: int | None = None,
    unit_id: int = 1,
    device_type: str = "power_meter",
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": device_id,
        "type": device_type,
        "model": "PM5560",
        "points": [point.model_dump(mode="json") for point in points],
    }
    if port is not None:
        document["connection"] = {
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit_id,
        }
    return document


@pytest.fixture
def gateway_settings(tmp_path: Path) -> Callable[..., GatewaySettings]:
    """Local-stage gateway settings with a tmp database and fast polling, via a customer file.

    The gateway has ``COMMISSIONING_TOKEN`` (``token``; None: unset) and, since the test devices
    listen on 127.0.0.1, accepts loopback hosts unless ``commissioning`` says otherwise.
    """

    def make(
        *,
        token: str | None = COMMISSIONING_TOKEN,
        commissioning: dict[str, Any] | None = None,
        **polling: float,
    ) -> GatewaySettings:
        customer = tmp_path / "gateway.cfg.customer.yml"
        customer.write_text(
            yaml.safe_dump(
                {
                    "storage": {"path": str(tmp_path / "edge" / "gateway.db")},
                    "polling": {
                        "interval_seconds": 0.1,
                        "request_timeout_seconds": 0.5,
                        "backoff_initial_seconds": 0.05,
                        "backoff_max_seconds": 0.2,
                        **polling,
                    },
                    "commissioning": {"allow_loopback_hosts": True, **(commissioning or {})},
                }
            )
        )
        environ = {"COMMISSIONING_TOKEN": token} if token is not None else {}
        return load_gateway_settings("local", customer_path=customer, environ=environ)

    return make


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
