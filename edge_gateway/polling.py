"""Polling the devices of a topology over Modbus TCP: one asyncio task per connected device.

A device without a connection is never contacted. A device that stops answering is retried
with exponential backoff and reported failing while the others keep being polled; it recovers
on its own when it answers again. Every outbound connection attempt is counted, so "quiet" can
be checked from outside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pymodbus.client import AsyncModbusTcpClient

from contracts.configurator import ModbusTcpConnection
from contracts.dtm import DeviceTopologyModel, DtmDevice, Point
from edge_gateway.settings import PollingSettings
from edge_gateway.storage import Reading, format_timestamp

log = logging.getLogger(__name__)

DataType = Literal["int16", "uint16", "int32", "uint32"]
RegisterKind = Literal["holding", "input"]
DeviceState = Literal["polling", "failing", "not_connected"]
Sleep = Callable[[float], Awaitable[None]]
StoreReadings = Callable[[Sequence[Reading]], Awaitable[None]]

# The Modbus limit for one read of holding or input registers (function codes 3 and 4).
MAX_REGISTERS_PER_READ = 125
_WIDTH: dict[DataType, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2}
# pymodbus enforces the request timeout itself; this only catches a request that never returns.
_GUARD_SECONDS = 1.0


def register_width(data_type: DataType) -> int:
    return _WIDTH[data_type]


def decode(registers: Sequence[int], data_type: DataType) -> int:
    """The raw integer of one point; 32-bit values are big-endian in word order (high word first)."""
    width = register_width(data_type)
    if len(registers) != width:
        raise ValueError(f"{data_type} needs {width} register(s), got {len(registers)}")
    raw = 0
    for register in registers:
        raw = (raw << 16) | (register & 0xFFFF)
    bits = 16 * width
    if data_type.startswith("int") and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw


@dataclass(frozen=True)
class ReadBlock:
    """One Modbus request: a run of registers that covers one or more points without gaps."""

    kind: RegisterKind
    address: int
    count: int
    points: tuple[Point, ...]


def plan_reads(points: Iterable[Point]) -> list[ReadBlock]:
    """Group points into as few requests as possible.

    Only adjacent or overlapping registers share a request: many devices answer a read that
    spans an unmapped register with an exception, which would fail the whole block.
    """
    blocks: list[ReadBlock] = []
    ordered = sorted(points, key=lambda p: (p.register_kind, p.address, register_width(p.data_type)))
    for point in ordered:
        end = point.address + register_width(point.data_type)
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.kind == point.register_kind
            and point.address <= last.address + last.count
            and max(end, last.address + last.count) - last.address <= MAX_REGISTERS_PER_READ
        ):
            blocks[-1] = ReadBlock(
                kind=last.kind,
                address=last.address,
                count=max(end, last.address + last.count) - last.address,
                points=(*last.points, point),
            )
        else:
            blocks.append(
                ReadBlock(
                    kind=point.register_kind,
                    address=point.address,
                    count=end - point.address,
                    points=(point,),
                )
            )
    return blocks


def backoff_delay(consecutive_failures: int, initial: float, maximum: float) -> float:
    """Wait after the n-th failure in a row: initial, 2x, 4x, ... capped at maximum."""
    if consecutive_failures < 1:
        return 0.0
    # The exponent is capped too: after weeks of failures 2**n would overflow a float.
    return float(min(initial * 2.0 ** min(consecutive_failures - 1, 64), maximum))


@dataclass
class DeviceHealth:
    state: DeviceState
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_success_at": format_timestamp(self.last_success_at) if self.last_success_at else None,
        }


class DeviceAnswerError(Exception):
    """The device answered, but with a Modbus exception: it is reachable, the request is wrong."""


class DevicePoller:
    """Polls one device until cancelled; never raises out of ``run`` for a device fault."""

    def __init__(
        self,
        device: DtmDevice,
        connection: ModbusTcpConnection,
        polling: PollingSettings,
        store: StoreReadings,
        on_connect_attempt: Callable[[], None],
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.connection = connection
        self.polling = polling
        self.health = DeviceHealth(state="polling")
        self._store = store
        self._on_connect_attempt = on_connect_attempt
        self._sleep = sleep
        self._clock = clock
        self._blocks = plan_reads(device.points)
        self._client: AsyncModbusTcpClient | None = None

    async def run(self) -> None:
        try:
            while True:
                started = self._clock()
                try:
                    await self.poll_once()
                except Exception as exc:  # noqa: BLE001 - any fault of one device must not end its poller
                    delay = self._record_failure(exc)
                else:
                    self._record_success()
                    # Start to start, so a slow device does not drift its schedule further each poll.
                    delay = max(0.0, self.polling.interval_seconds - (self._clock() - started))
                if _cancel_requested():
                    # Python 3.11's asyncio.wait_for (pymodbus' connect, our reads) can lose a
                    # cancellation that arrives as the awaited call completes: the poller must still stop.
                    raise asyncio.CancelledError
                await self._sleep(delay)
        finally:
            self._close_client()

    async def poll_once(self) -> None:
        """Read every point once and store the readings, all or none."""
        client = await self._connected_client()
        at = datetime.now(UTC)
        readings: list[Reading] = []
        try:
            for block in self._blocks:
                registers = await self._read(client, block)
                for point in block.points:
                    offset = point.address - block.address
                    raw = decode(
                        registers[offset : offset + register_width(point.data_type)], point.data_type
                    )
                    readings.append(Reading(self.device.id, point.name, raw * point.scale, point.unit, at))
        except DeviceAnswerError:
            raise
        except Exception:
            # A timed-out or broken connection may hold half a response; the next poll starts afresh.
            self._close_client()
            raise
        await self._store(readings)

    async def _read(self, client: AsyncModbusTcpClient, block: ReadBlock) -> list[int]:
        read = client.read_holding_registers if block.kind == "holding" else client.read_input_registers
        response = await asyncio.wait_for(
            read(block.address, count=block.count, device_id=self.connection.unit_id),
            timeout=self.polling.request_timeout_seconds + _GUARD_SECONDS,
        )
        where = f"{block.kind} registers {block.address}..{block.address + block.count - 1}"
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise DeviceAnswerError(f"{where}: Modbus exception code {code}")
        registers = list(response.registers)
        if len(registers) < block.count:
            raise DeviceAnswerError(f"{where}: {len(registers)} of {block.count} registers answered")
        return registers

    async def _connected_client(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._close_client()
        client = AsyncModbusTcpClient(
            self.connection.host,
            port=self.connection.port,
            name=f"device {self.device.id}",
            timeout=self.polling.request_timeout_seconds,
            # Retries and reconnects are this poller's job (with its backoff and its count of
            # attempts); pymodbus' own would reconnect behind its back.
            retries=0,
            reconnect_delay=0,
        )
        self._on_connect_attempt()
        if not await client.connect():
            client.close()
            raise ConnectionError(f"cannot connect to {self.connection.host}:{self.connection.port}")
        self._client = client
        return client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _record_success(self) -> None:
        if self.health.consecutive_failures:
            log.info(
                "device %s answers again after %d failed poll(s)",
                self.device.id,
                self.health.consecutive_failures,
            )
        self.health.state = "polling"
        self.health.consecutive_failures = 0
        self.health.last_success_at = datetime.now(UTC)

    def _record_failure(self, exc: Exception) -> float:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.health.state = "failing"
        self.health.consecutive_failures += 1
        self.health.last_error = message
        delay = backoff_delay(
            self.health.consecutive_failures,
            self.polling.backoff_initial_seconds,
            self.polling.backoff_max_seconds,
        )
        # One line when a device starts failing, not one per retry: a dead device would flood the log.
        level = logging.WARNING if self.health.consecutive_failures == 1 else logging.DEBUG
        log.log(level, "device %s failing (%s); next try in %.1f s", self.device.id, message, delay)
        return delay


@dataclass
class _Running:
    poller: DevicePoller
    task: asyncio.Task[None]


@dataclass
class PollingSupervisor:
    """Runs one poller per connected device of the current topology and swaps them on change."""

    polling: PollingSettings
    store: StoreReadings
    sleep: Sleep = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    connection_attempts: int = 0
    _devices: dict[str, DtmDevice] = field(default_factory=dict)
    _running: dict[str, _Running] = field(default_factory=dict)

    async def apply(self, topology: DeviceTopologyModel | None) -> None:
        """Make the running pollers match ``topology``; unchanged devices keep polling undisturbed.

        Returns once removed and changed devices are stopped (their connections closed), so no
        poller of the old topology is still talking when the caller answers.
        """
        wanted = {device.id: device for device in (topology.devices if topology else [])}
        stale = [
            device_id
            for device_id, running in self._running.items()
            if wanted.get(device_id) != running.poller.device
        ]
        await self._stop(stale)
        self._devices = wanted
        for device_id, device in wanted.items():
            if device.connection is not None and device_id not in self._running:
                self._start(device, device.connection)

    async def stop(self) -> None:
        await self._stop(list(self._running))
        self._devices = {}

    def device_health(self) -> dict[str, DeviceHealth]:
        result: dict[str, DeviceHealth] = {}
        for device_id in self._devices:
            running = self._running.get(device_id)
            result[device_id] = running.poller.health if running else DeviceHealth(state="not_connected")
        return result

    def _count_attempt(self) -> None:
        self.connection_attempts += 1

    def _start(self, device: DtmDevice, connection: ModbusTcpConnection) -> None:
        poller = DevicePoller(
            device,
            connection,
            self.polling,
            self.store,
            self._count_attempt,
            sleep=self.sleep,
            clock=self.clock,
        )
        task = asyncio.create_task(poller.run(), name=f"poll {device.id}")
        self._running[device.id] = _Running(poller, task)

    async def _stop(self, device_ids: Sequence[str]) -> None:
        stopping = [self._running.pop(device_id) for device_id in device_ids]
        if not stopping:
            return
        for running in stopping:
            running.task.cancel()
        # wait() rather than awaiting each task: a cancellation of the caller itself still propagates.
        await asyncio.wait([running.task for running in stopping])
        for running in stopping:
            if not running.task.cancelled() and running.task.exception() is not None:
                # run() never raises for a device fault; anything else is a bug worth seeing.
                log.error(
                    "poller of device %s ended with an error",
                    running.poller.device.id,
                    exc_info=running.task.exception(),
                )


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
