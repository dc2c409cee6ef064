"""The fault scenario on the process harness: the way of dying a killed container cannot show.

The delivered containers run every scenario on both delivery paths (test_container_scenarios.py).
A killed fixture container takes its address and its compose DNS name with it: the gateway meets a
host that is gone and a name that no longer resolves. Here the fixture is a process on a loopback
address that stays up, so the gateway meets a closed connection and refused reconnects, the other
way a Modbus device dies (its server crashed, the box still on), and must recover at the same
address. One delivery path is enough: both deliver the fixture DTM byte for byte (test_bundle.py).
Needs root and iproute2: the run gets a network namespace of its own.
"""

from __future__ import annotations

import os
import shutil

import pytest

from e2e.runner import run_delivery_path
from e2e.scenarios import ScenarioResult

pytestmark = pytest.mark.slow

FIXTURE_DEVICES = {"battery-1", "meter-1", "pv-1"}


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail(
            "the e2e scenarios need root and iproute2's `ip`: they run in a network namespace of their own"
        )
    [result] = run_delivery_path("onprem", ("fault",), tmp_path_factory.mktemp("e2e-processes"))
    return result


def test_a_dead_fixture_process_fails_alone_and_recovers(fault: ScenarioResult) -> None:
    assert fault.passed, (
        f"{fault.line()}\nobserved: {fault.observations}\nthe gateway logged:\n{fault.gateway_log}"
    )
    seen = fault.observations
    dead = next(key for key in seen["health_while_dead"] if key != "status")
    assert seen["health_while_dead"]["status"] == "degraded"
    assert seen["health_while_dead"][dead]["state"] == "failing"
    assert seen["health_while_dead"][dead]["consecutive_failures"] >= 2
    assert sorted(seen["others_kept_measuring"]) == sorted(FIXTURE_DEVICES - {dead})
    assert seen["status_after_recovery"] == "ok"
