"""The e2e scenarios of the delivered stack (ENV=beta), run against a started ``EdgeStack``.

| scenario      | DTM                                 | expected                                              |
| ------------- | ----------------------------------- | ----------------------------------------------------- |
| fixtures      | industrial-fixtures.json            | measurements > 0, of every device, within 30 s of the |
|               |                                     | gateway's start                                       |
| bare          | customer-shape DTM (no connections) | 0 measurements after a few poll intervals, GET        |
|               |                                     | /topology equals the DTM, 0 connection attempts       |
| commissioning | bare, then POST /topology           | measurements > 0 after the POST                       |
| fault         | industrial-fixtures.json            | one fixture killed: the others keep measuring, its    |
|               |                                     | health says failing; restarted: it recovers           |

Each scenario returns a ``ScenarioResult`` with its verdict, its timing and what it observed; a
failed one carries the tail of the gateway's log. A stack is anything with ``EdgeStack``'s
members: ``e2e.stack.Stack`` (processes in a network namespace) or
``e2e.container_stack.ContainerStack`` (the bundle's compose file on a Docker engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from contracts.dtm import DeviceTopologyModel
from e2e.bundle import Bundle
from e2e.compose import FixtureCommand
from e2e.stack import StackError

if TYPE_CHECKING:
    from edge_gateway.settings import GatewaySettings

FIXTURES_DEADLINE_SECONDS = 30.0
COMMISSIONING_DEADLINE_SECONDS = 30.0
QUIET_POLL_INTERVALS = 3
MIN_QUIET_SECONDS = 3.0
POLL_SECONDS = 0.25


@dataclass
class ScenarioResult:
    name: str
    delivery: str
    passed: bool
    seconds: float
    summary: str
    observations: dict[str, Any] = field(default_factory=dict)
    gateway_log: str = ""

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{self.delivery:<7} {self.name:<14} {verdict}  {self.seconds:6.1f} s  {self.summary}"


class ScenarioFailed(AssertionError):
    pass


class EdgeStack(Protocol):
    """What the scenarios use of a started stack; its methods raise ``StackError`` when it cannot answer."""

    @property
    def bundle(self) -> Bundle: ...

    @property
    def settings(self) -> GatewaySettings: ...

    @property
    def fixture_commands(self) -> Mapping[str, FixtureCommand]:
        """Per fixture hostname (a compose service name), what it simulates; in compose file order."""
        ...

    @property
    def gateway_started_at(self) -> float:
        """``time.monotonic()`` when the gateway process started."""
        ...

    def wait_ready(self) -> float: ...

    def measurements(self) -> dict[str, Any]: ...

    def health(self) -> dict[str, Any]: ...

    def topology(self) -> DeviceTopologyModel: ...

    def post_topology(self, topology: DeviceTopologyModel) -> tuple[int, Any]: ...

    def kill_fixture(self, hostname: str) -> None: ...

    def start_fixture(self, hostname: str) -> object: ...

    def gateway_log(self) -> str: ...


def _wait_for(condition: Callable[[], Any], deadline: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; ScenarioFailed at ``deadline`` (monotonic)."""
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScenarioFailed(what)
        time.sleep(POLL_SECONDS)


def _run(name: str, stack: EdgeStack, body: Callable[[dict[str, Any]], tuple[float, str]]) -> ScenarioResult:
    observations: dict[str, Any] = {}
    started = time.monotonic()
    try:
        seconds, summary = body(observations)
        passed = True
    except (ScenarioFailed, StackError) as exc:
        seconds, summary, passed = time.monotonic() - started, str(exc), False
    result = ScenarioResult(name, stack.bundle.delivery, passed, seconds, summary, observations)
    if not passed:
        result.gateway_log = stack.gateway_log()
    return result


def _measurement_count(stack: EdgeStack) -> int:
    return int(stack.measurements()["count"])


def fixtures(stack: EdgeStack, deadline_seconds: float = FIXTURES_DEADLINE_SECONDS) -> ScenarioResult:
    """Measurements > 0, and of every connected device, within ``deadline_seconds`` of the gateway's start.

    Timed from that start. Nothing orders the gateway after the fixtures (compose starts them
    together): a fixture that is not listening yet fails the gateway's first poll and is retried
    with backoff, so "every device" gets the same deadline as "a measurement".
    """

    def body(seen: dict[str, Any]) -> tuple[float, str]:
        started = stack.gateway_started_at
        expected = sorted(device.id for device in stack.bundle.dtm().devices if device.connection is not None)
        seen["ready_after_s"] = round(stack.wait_ready(), 2)
        count = _wait_for(
            lambda: _measurement_count(stack),
            started + deadline_seconds,
            f"no measurements within {deadline_seconds:.0f} s of the gateway's start",
        )
        elapsed = time.monotonic() - started
        seen["measurements"] = count
        seen["first_measurement_after_s"] = round(elapsed, 2)

        def every_device_measured() -> list[str]:
            seen["devices_measured"] = sorted(stack.measurements()["latest"])
            return seen["devices_measured"] if set(expected) <= set(seen["devices_measured"]) else []

        _wait_for(
            every_device_measured,
            started + deadline_seconds,
            f"not every device ({', '.join(expected)}) was measured"
            f" within {deadline_seconds:.0f} s of the gateway's start",
        )
        seen["every_device_after_s"] = round(time.monotonic() - started, 2)
        return elapsed, (
            f"{count} measurement(s), the first {elapsed:.1f} s after the gateway started;"
            f" all {len(expected)} devices by {seen['every_device_after_s']:.1f} s"
        )

    return _run("fixtures", stack, body)


def bare(stack: EdgeStack) -> ScenarioResult:
    """A customer-shape DTM: the gateway serves it and stays quiet."""

    def body(seen: dict[str, Any]) -> tuple[float, str]:
        started = time.monotonic()
        stack.wait_ready()
        interval = float(stack.settings.polling.interval_seconds)
        quiet = max(QUIET_POLL_INTERVALS * interval, MIN_QUIET_SECONDS)
        time.sleep(quiet)
        count = _measurement_count(stack)
        health = stack.health()
        topology = stack.topology()
        expected = stack.bundle.dtm()
        seen.update(
            measurements=count,
            connection_attempts=health.get("connection_attempts"),
            topology_equals_dtm=topology == expected,
            device_states={device: state.get("state") for device, state in health.get("devices", {}).items()},
            quiet_seconds=quiet,
        )
        problems = []
        if count != 0:
            problems.append(f"{count} measurement(s)")
        if topology != expected:
            problems.append("GET /topology differs from dtm.json")
        if health.get("connection_attempts") != 0:
            problems.append(f"{health.get('connection_attempts')} connection attempt(s)")
        if problems:
            raise ScenarioFailed("bare deploy is not quiet: " + ", ".join(problems))
        return time.monotonic() - started, (
            f"0 measurements and 0 connection attempts after {quiet:.0f} s; GET /topology equals dtm.json"
        )

    return _run("bare", stack, body)


def commissioned_topology(stack: EdgeStack) -> tuple[DeviceTopologyModel, str, str]:
    """The bare DTM with its first device that a fixture can play connected to that fixture."""
    dtm = stack.bundle.dtm()
    for index, device in enumerate(dtm.devices):
        for hostname, command in stack.fixture_commands.items():
            if command.device_type == device.type:
                connection = {
                    "protocol": "modbus_tcp",
                    "host": hostname,
                    "port": command.port,
                    "unit_id": command.unit_id,
                }
                data = dtm.model_dump(mode="json")
                data["devices"][index]["connection"] = connection
                return DeviceTopologyModel.model_validate(data), device.id, hostname
    raise StackError("no device of the DTM has a fixture of its type")


def commissioning(
    stack: EdgeStack, deadline_seconds: float = COMMISSIONING_DEADLINE_SECONDS
) -> ScenarioResult:
    """POST /topology with a real connection; measurements > 0 after it, timed from the POST."""

    def body(seen: dict[str, Any]) -> tuple[float, str]:
        stack.wait_ready()
        topology, device_id, hostname = commissioned_topology(stack)
        before = _measurement_count(stack)
        posted_at = time.monotonic()
        status, answer = stack.post_topology(topology)
        seen.update(device=device_id, fixture=hostname, post_status=status, post_answer=answer, before=before)
        if status != 200:
            raise ScenarioFailed(f"POST /topology answered {status}: {answer}")

        def new_measurements() -> int:
            count = _measurement_count(stack)
            return count if count > before else 0

        count = _wait_for(
            new_measurements,
            posted_at + deadline_seconds,
            f"no measurements within {deadline_seconds:.0f} s of POST /topology",
        )
        elapsed = time.monotonic() - posted_at
        seen["measurements"] = count
        seen["first_measurement_after_s"] = round(elapsed, 2)
        seen["topology_equals_posted"] = stack.topology() == topology
        seen["devices_measured"] = sorted(stack.measurements()["latest"])
        if not seen["topology_equals_posted"]:
            raise ScenarioFailed("GET /topology does not return the posted topology")
        return (
            elapsed,
            f"{count} measurement(s) from {device_id} ({hostname}), the first {elapsed:.1f} s after the POST",
        )

    return _run("commissioning", stack, body)


def _latest_at(stack: EdgeStack) -> dict[str, str]:
    """Per device, the newest reading's timestamp."""
    latest = stack.measurements()["latest"]
    return {
        device: max(point["at"] for point in points.values()) for device, points in latest.items() if points
    }


def fault(stack: EdgeStack, victim: str | None = None, recovery_seconds: float = 90.0) -> ScenarioResult:
    """Kill one fixture mid-run: the others keep measuring, it shows failing; restarted, it recovers."""

    def body(seen: dict[str, Any]) -> tuple[float, str]:
        started = time.monotonic()
        stack.wait_ready()
        dtm = stack.bundle.dtm()
        by_host = {device.connection.host: device.id for device in dtm.devices if device.connection}
        hostname = victim or list(stack.fixture_commands)[-1]
        dead_device = by_host[hostname]
        others = sorted(device for host, device in by_host.items() if host != hostname)
        _wait_for(
            lambda: set(by_host.values()) <= set(_latest_at(stack)),
            started + FIXTURES_DEADLINE_SECONDS,
            "not every device was measured before the fault",
        )

        stack.kill_fixture(hostname)
        killed_at = time.monotonic()
        before = _latest_at(stack)

        def failing_health() -> dict[str, Any] | None:
            health = stack.health()
            return health if health["devices"][dead_device]["state"] == "failing" else None

        _wait_for(
            failing_health,
            killed_at + 20,
            f"health does not show {dead_device} failing within 20 s of killing {hostname}",
        )
        seen["failing_after_s"] = round(time.monotonic() - killed_at, 2)
        _wait_for(
            lambda: all(_latest_at(stack).get(device, "") > before.get(device, "") for device in others),
            time.monotonic() + 15,
            f"{', '.join(others)} stopped measuring while {hostname} was dead",
        )
        # Dead for a few poll intervals, so that the gateway retries (and backs off) a while; the
        # others must go on measuring all along.
        dead_for = max(
            QUIET_POLL_INTERVALS * float(stack.settings.polling.interval_seconds), MIN_QUIET_SECONDS
        )
        midway = _latest_at(stack)
        time.sleep(max(0.0, killed_at + dead_for - time.monotonic()))
        _wait_for(
            lambda: all(_latest_at(stack).get(device, "") > midway.get(device, "") for device in others),
            time.monotonic() + 15,
            f"{', '.join(others)} stopped measuring while {hostname} stayed dead",
        )
        health = stack.health()
        seen["dead_seconds"] = round(time.monotonic() - killed_at, 2)
        seen["health_while_dead"] = {"status": health["status"], dead_device: health["devices"][dead_device]}
        if health["devices"][dead_device]["state"] != "failing":
            raise ScenarioFailed(f"health no longer shows {dead_device} failing while {hostname} is dead")
        if [device for device in others if health["devices"][device]["state"] != "polling"]:
            raise ScenarioFailed(f"health shows more than {dead_device} failing: {health['devices']}")
        seen["others_kept_measuring"] = others

        stack.start_fixture(hostname)
        restarted_at = time.monotonic()
        dead_at = _latest_at(stack).get(dead_device, "")
        _wait_for(
            lambda: (
                stack.health()["devices"][dead_device]["state"] == "polling"
                and _latest_at(stack).get(dead_device, "") > dead_at
            ),
            restarted_at + recovery_seconds,
            f"{dead_device} did not recover within {recovery_seconds:.0f} s",
        )
        seen["recovered_after_s"] = round(time.monotonic() - restarted_at, 2)
        seen["status_after_recovery"] = stack.health()["status"]
        return time.monotonic() - started, (
            f"{hostname} killed: failing after {seen['failing_after_s']:.1f} s, {', '.join(others)} kept measuring"
            f" for {seen['dead_seconds']:.0f} s; restarted: recovered after {seen['recovered_after_s']:.1f} s"
        )

    return _run("fault", stack, body)


SCENARIOS: dict[str, Callable[[EdgeStack], ScenarioResult]] = {
    "fixtures": fixtures,
    "bare": bare,
    "commissioning": commissioning,
    "fault": fault,
}
# Which bundle each scenario runs on: the fixture DTM, or the order's customer-shape DTM.
FIXTURE_SCENARIOS = ("fixtures", "fault")
BARE_SCENARIOS = ("bare", "commissioning")
DEFAULT_SCENARIOS = ("fixtures", "bare", "commissioning")
