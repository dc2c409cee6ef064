"""The e2e scenarios of the delivered stack, on bundles both delivery paths produce from an order.

Each path runs two stacks in network namespaces of their own: the fixture DTM (scenarios fixtures
and fault) and the order's customer-shape DTM (bare, then commissioning). Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from e2e.runner import run_delivery_path
from e2e.scenarios import ScenarioResult

pytestmark = pytest.mark.slow

SCENARIOS = ("fixtures", "fault", "bare", "commissioning")


@pytest.fixture(scope="module", params=["cloud", "onprem"])
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ScenarioResult]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the e2e scenarios need root and iproute2's `ip`: they run in a network namespace of their own")
    workdir: Path = tmp_path_factory.mktemp(f"e2e-{request.param}")
    return {result.name: result for result in run_delivery_path(request.param, SCENARIOS, workdir)}


def passed(result: ScenarioResult) -> str:
    return f"{result.line()}\nobserved: {result.observations}\nthe gateway logged:\n{result.gateway_log}"


def test_fixtures_are_measured_within_30_s(results: dict[str, ScenarioResult]) -> None:
    result = results["fixtures"]
    assert result.passed, passed(result)
    assert result.observations["measurements"] > 0
    assert result.observations["first_measurement_after_s"] <= 30
    assert result.observations["devices_measured"] == ["battery-1", "meter-1", "pv-1"]


def test_bare_deploy_serves_its_dtm_and_stays_quiet(results: dict[str, ScenarioResult]) -> None:
    result = results["bare"]
    assert result.passed, passed(result)
    assert result.observations["measurements"] == 0
    assert result.observations["topology_equals_dtm"] is True
    assert result.observations["connection_attempts"] == 0
    assert set(result.observations["device_states"].values()) == {"not_connected"}


def test_commissioning_starts_measurements(results: dict[str, ScenarioResult]) -> None:
    result = results["commissioning"]
    assert result.passed, passed(result)
    assert result.observations["post_status"] == 200
    assert result.observations["measurements"] > 0
    assert result.observations["topology_equals_posted"] is True
    assert result.observations["devices_measured"] == [result.observations["device"]]


def test_a_dead_fixture_fails_alone_and_recovers(results: dict[str, ScenarioResult]) -> None:
    result = results["fault"]
    assert result.passed, passed(result)
    seen = result.observations
    dead = next(key for key in seen["health_while_dead"] if key != "status")
    assert seen["health_while_dead"]["status"] == "degraded"
    assert seen["health_while_dead"][dead]["state"] == "failing"
    assert seen["health_while_dead"][dead]["consecutive_failures"] >= 2
    assert sorted(seen["others_kept_measuring"]) == sorted({"battery-1", "meter-1", "pv-1"} - {dead})
    assert seen["status_after_recovery"] == "ok"
