"""A simulated Modbus TCP device: one catalog device type, one unit id, changing values.

The device answers exactly the registers ``POINT_CATALOG`` defines for its type, in the register
kind (holding or input) the catalog names; any other address answers ILLEGAL_ADDRESS, coils and
discrete inputs ILLEGAL_FUNCTION, writes are refused, and a request for another unit id answers
GATEWAY_NO_RESPONSE, as a Modbus TCP gateway with nothing behind that id would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from contracts.configurator import DeviceType
from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import Point
from industrial_fixtures.registers import encode, register_count
from industrial_fixtures.signals import DeviceSignals

UPDATE_SECONDS = 0.5
MODBUS_TCP_PORT = 502

_READ_FUNCTION_KIND = {3: "holding", 4: "input"}
# Positions in SimDevice's tuple of non-shared blocks: (coils, discrete inputs, holding, input).
_BLOCK_INDEX = {"holding": 2, "input": 3}

log = logging.getLogger("industrial_fixtures")


class FixtureDevice:
    """The register image of one simulated device, refreshed from its signals."""

    def __init__(self, device_type: DeviceType, unit_id: int, *, seed: int | None = None) -> None:
        if not 0 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id} is outside 0..247")
        self.device_type = device_type
        self.unit_id = unit_id
        self.points: tuple[Point, ...] = POINT_CATALOG[device_type]
        self.signals = DeviceSignals(device_type, seed=seed)
        self.registers: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
        self.updates = 0
        self._store(self.signals.values)

    def _store(self, values: dict[str, float]) -> None:
        for point in self.points:
            for offset, register in enumerate(encode(point, values[point.name])):
                self.registers[point.register_kind][point.address + offset] = register

    def refresh(self, seconds: float) -> dict[str, float]:
        """Advance the signals by ``seconds`` and store the new values in the registers."""
        values = self.signals.step(seconds)
        self._store(values)
        self.updates += 1
        return values

    async def _serve_registers(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        kind = _READ_FUNCTION_KIND.get(function_code)
        if kind is None or set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION
        image = self.registers[kind]
        for register_address in range(address, address + count):
            current_registers[register_address - start_address] = image[register_address]
        return None

    async def _no_such_unit(self, *_args: object) -> ExcCodes | None:
        return ExcCodes.GATEWAY_NO_RESPONSE

    def sim_devices(self) -> list[SimDevice]:
        """pymodbus' description of the device (and of the silence behind every other unit id)."""
        blocks: list[list[SimData]] = [
            [SimData(0, values=False, datatype=DataType.BITS)],
            [SimData(0, values=False, datatype=DataType.BITS)],
            [],
            [],
        ]
        for point in self.points:
            # Registers are filled on every read from the current image; the initial values only
            # size the block. Addresses between points stay invalid.
            blocks[_BLOCK_INDEX[point.register_kind]].append(
                SimData(
                    point.address,
                    values=[0] * register_count(point),
                    datatype=DataType.REGISTERS,
                    readonly=True,
                )
            )
        for index in (2, 3):
            if not blocks[index]:
                blocks[index] = [SimData(0, datatype=DataType.INVALID)]
        devices = [
            SimDevice(
                id=self.unit_id,
                simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
                action=self._serve_registers,
            )
        ]
        if self.unit_id != 0:
            # Unit id 0 in pymodbus means "every other unit id".
            anything = [SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)]
            bits = [SimData(0, values=False, datatype=DataType.BITS)]
            devices.append(
                SimDevice(
                    id=0, simdata=(bits, list(bits), anything, list(anything)), action=self._no_such_unit
                )
            )
        return devices


async def serve(
    device_type: DeviceType,
    *,
    host: str,
    port: int = MODBUS_TCP_PORT,
    unit_id: int = 1,
    update_seconds: float = UPDATE_SECONDS,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[ModbusTcpServer], None] | None = None,
) -> None:
    """Serve one device until ``stop`` is set (or forever)."""
    device = FixtureDevice(device_type, unit_id, seed=seed)
    server = ModbusTcpServer(device.sim_devices(), address=(host, port))
    await server.serve_forever(background=True)
    log.info("%s unit %d listening on %s:%d", device_type, unit_id, host, port)
    if on_ready is not None:
        on_ready(server)
    stop = stop or asyncio.Event()
    last = time.monotonic()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=update_seconds)
            except TimeoutError:
                pass
            now = time.monotonic()
            device.refresh(now - last)
            last = now
    finally:
        await server.shutdown()
        log.info("%s unit %d on %s:%d stopped", device_type, unit_id, host, port)
