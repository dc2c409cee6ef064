"""A run whose earlier step fails while no APK exists yet ends (it used to spin forever).

Dagster's in-process executor never finishes a run in which an asset skipped its optional output
while another step failed: the worker spins at full CPU and ignores SIGTERM. The first test keeps
that shape (a five-asset toy) to show what the platform must not do; the second runs the order's
own assets in exactly that situation and needs them to end.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest
import requests
from dagster import ExecuteInProcessResult

from contracts.orders import OrderStatus
from order_pipeline.keys import AFTER_EDP, CONFIG

if TYPE_CHECKING:
    from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow

# The toy finishes in about a second when it does not hang.
HANG_AFTER_SECONDS = 15.0
RUN_BOUND_SECONDS = 120.0

SKIPPED_OPTIONAL_OUTPUT_BESIDE_A_FAILURE = textwrap.dedent(
    """
    from dagster import Failure, Output, asset, materialize

    @asset
    def edp_artifacts():
        raise Failure("dtm.json is invalid")

    @asset
    def built(edp_artifacts):
        return 1

    @asset(output_required=False)
    def apk():
        if False:
            yield Output(1)

    @asset
    def manifest(built, apk):
        return 1

    @asset
    def email(manifest):
        return 1

    materialize([edp_artifacts, built, apk, manifest, email], raise_on_error=False)
    print("the run ended")
    """
)


def test_the_shape_that_hangs_an_in_process_run() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", SKIPPED_OPTIONAL_OUTPUT_BESIDE_A_FAILURE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(HANG_AFTER_SECONDS)
        worker.terminate()
        time.sleep(1)
        # Still there after SIGTERM: the run spins instead of ending.
        assert worker.poll() is None
    finally:
        worker.kill()
        out, _ = worker.communicate(timeout=30)
    assert b"the run ended" not in out


def test_an_order_whose_edp_job_failed_while_no_apk_exists_ends_failed(flow: OrderFlow) -> None:
    requests.put(
        f"{flow.settings.edp.base_url}/_standin/faults", json={"failure": "job_fails"}, timeout=5
    ).raise_for_status()
    cfg_id = flow.submit("onprem")
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id, ends="failed")

    results: list[ExecuteInProcessResult] = []
    worker = threading.Thread(
        target=lambda: results.append(flow.materialize(cfg_id, AFTER_EDP, raise_on_error=False)), daemon=True
    )
    worker.start()
    worker.join(RUN_BOUND_SECONDS)

    assert not worker.is_alive(), f"the run did not end within {RUN_BOUND_SECONDS:.0f} s"
    [result] = results
    assert not result.success
    assert flow.status(cfg_id) == OrderStatus.FAILED
    assert "failed" in (flow.order(cfg_id).last_error or "")
