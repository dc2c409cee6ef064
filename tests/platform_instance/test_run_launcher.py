"""MonitoredDefaultRunLauncher.check_run_worker_health against a real instance and real code servers.

A fake STARTED run (created in the instance's run storage, tagged as the launcher tags a launched
run) stands for a run whose worker is gone; a run launched for real on a live `dagster
code-server start` stands for a healthy one. The last test lets Dagster's own run monitoring
(``monitor_started_run``, what the daemon calls each poll) act on the launcher's answer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    instance_for_test,
)
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from platform_instance import run_launcher
from platform_instance.run_launcher import (
    CODE_SERVER_ID_TAG,
    MonitoredDefaultRunLauncher,
)
from tests.conftest import wait_for
from tests.platform_instance.conftest import (
    CodeServer,
    free_port,
    start_order_run,
)

LAUNCHER = {"module": "platform_instance.run_launcher", "class": "MonitoredDefaultRunLauncher"}
GONE = "the run worker is gone: "


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "home"
    home.mkdir()
    with instance_for_test(overrides={"run_launcher": LAUNCHER}, temp_dir=str(home)) as instance:
        assert type(instance.run_launcher) is MonitoredDefaultRunLauncher
        yield instance


@pytest.fixture
def launcher(instance: DagsterInstance) -> MonitoredDefaultRunLauncher:
    launcher = instance.run_launcher
    assert isinstance(launcher, MonitoredDefaultRunLauncher)
    return launcher


@pytest.fixture
def server_env(instance: DagsterInstance, tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    return {**os.environ, "DAGSTER_HOME": instance.root_directory, "ORPHAN_STATE_DIR": str(state)}


def started_run(
    instance: DagsterInstance,
    port: int,
    server_id: str = "",
    pid: int | None = None,
    location_port: int | None = None,
) -> DagsterRun:
    """A STARTED run as the launcher leaves it: address and server id tagged, optionally its worker's pid
    event and the code location it came from (by default none: no location to wait for)."""
    origin = None
    if location_port is not None:
        location = GrpcServerCodeLocationOrigin(
            host="127.0.0.1", port=location_port, location_name="orphan_test"
        )
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "order_job")
    run = create_run_for_test(
        instance,
        job_name="order_job",
        status=DagsterRunStatus.STARTED,
        tags={GRPC_INFO_TAG: json.dumps({"host": "127.0.0.1", "port": port}), CODE_SERVER_ID_TAG: server_id},
        remote_job_origin=origin,
    )
    if pid is not None:
        instance.report_engine_event(
            f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
        )
    return run


def exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_run_on_a_dead_port_is_failed_on_the_second_check(
    instance: DagsterInstance, launcher: MonitoredDefaultRunLauncher
) -> None:
    port = free_port()
    run = started_run(instance, port)
    first = launcher.check_run_worker_health(run)
    # One refused connection is no proof: checked again on the next monitoring pass.
    assert first.status == WorkerStatus.RUNNING and first.transient
    second = launcher.check_run_worker_health(run)
    assert second.status == WorkerStatus.FAILED
    assert second.msg is not None
    assert second.msg.startswith(
        f"{GONE}the code server that ran it, at 127.0.0.1:{port}, is gone (unreachable on 2 checks"
    )
    assert "UNAVAILABLE" in second.msg


def test_a_dead_local_worker_fails_the_run_at_once(
    instance: DagsterInstance, launcher: MonitoredDefaultRunLauncher
) -> None:
    """On the daemon's host the worker's pid decides: no second check needed."""
    pid = exited_pid()
    port = free_port()
    result = launcher.check_run_worker_health(started_run(instance, port, pid=pid))
    assert result.status == WorkerStatus.FAILED
    assert result.msg == (
        f"{GONE}the code server that ran it, at 127.0.0.1:{port}, is gone (Could not reach user code server. "
        f"gRPC Error code: UNAVAILABLE), and its worker process {pid} has exited"
    )


def test_the_verdict_waits_for_the_code_location_to_answer(
    instance: DagsterInstance, launcher: MonitoredDefaultRunLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry is built from the run's code location: the run is failed once that answers, or after HOLD_SECONDS."""
    port = free_port()
    run = started_run(instance, port, pid=exited_pid(), location_port=port)
    for _ in range(2):
        held = launcher.check_run_worker_health(run)
        assert held.status == WorkerStatus.RUNNING and held.transient
        assert held.msg is not None and held.msg.startswith(GONE)
        assert held.msg.endswith(
            f"the run is failed once its code location at 127.0.0.1:{port} answers again, so that its automatic retry can start"
        )
    monkeypatch.setattr(run_launcher, "HOLD_SECONDS", 0)
    failed = launcher.check_run_worker_health(run)
    assert failed.status == WorkerStatus.FAILED
    assert failed.msg is not None and failed.msg.startswith(GONE)
    assert failed.msg.endswith(
        f"its code location at 127.0.0.1:{port} is still unreachable, so its automatic retry may not start"
    )


def test_a_run_without_a_code_server_address_is_left_alone(
    instance: DagsterInstance, launcher: MonitoredDefaultRunLauncher
) -> None:
    run = create_run_for_test(instance, job_name="order_job", status=DagsterRunStatus.STARTED)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_slow_server_is_not_taken_for_a_dead_one(
    instance: DagsterInstance, launcher: MonitoredDefaultRunLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something holds the port and takes the connection but never answers: the deadline passes."""
    monkeypatch.setattr(run_launcher, "CALL_TIMEOUT_SECONDS", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        run = started_run(instance, silent.getsockname()[1])
        for _ in range(2):
            result = launcher.check_run_worker_health(run)
            assert result.status == WorkerStatus.RUNNING and result.transient, result
            assert result.msg is not None and "did not answer within 1 s" in result.msg


@pytest.mark.slow
def test_live_code_server(
    instance: DagsterInstance,
    launcher: MonitoredDefaultRunLauncher,
    code_servers: Callable[..., CodeServer],
    server_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = code_servers(server_env)
    run_id = start_order_run(instance, server.port, "order-60", queue=False)
    pid_file = Path(server_env["ORPHAN_STATE_DIR"]) / f"{run_id}.pid"
    wait_for("the run's step to start", pid_file.exists, 60)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.STARTED
    server_id = server.client.get_server_id()
    assert run.tags[CODE_SERVER_ID_TAG] == server_id

    # The server executes the run: RUNNING.
    healthy = launcher.check_run_worker_health(run)
    assert healthy.status == WorkerStatus.RUNNING
    assert healthy.msg == f"the code server at 127.0.0.1:{server.port} runs this run"

    # The same server, a run it does not hold: the worker ended without a word. FAILED at once.
    lost = launcher.check_run_worker_health(started_run(instance, server.port, server_id=server_id))
    assert lost.status == WorkerStatus.FAILED
    assert lost.msg == (
        f"{GONE}the code server at 127.0.0.1:{server.port} no longer runs this run (the worker process ended "
        "without reporting an outcome)"
    )

    # Another server than at launch (restarted, or its code reloaded): the local worker's pid decides.
    alive = launcher.check_run_worker_health(
        started_run(instance, server.port, server_id="before", pid=os.getpid())
    )
    assert alive.status == WorkerStatus.RUNNING
    assert alive.msg is not None and f"worker process {os.getpid()} still runs" in alive.msg
    dead_pid = exited_pid()
    dead = launcher.check_run_worker_health(
        started_run(instance, server.port, server_id="before", pid=dead_pid)
    )
    assert dead.status == WorkerStatus.FAILED
    assert dead.msg == (
        f"{GONE}the code server at 127.0.0.1:{server.port} no longer runs this run, and its worker process "
        f"{dead_pid} has exited without reporting an outcome"
    )

    # ...and without a pid to look at, the run's silence: a run that logged a moment ago is left running.
    silent = started_run(instance, server.port, server_id="before")
    instance.report_engine_event("a step logs", silent)
    waiting = launcher.check_run_worker_health(silent)
    assert waiting.status == WorkerStatus.RUNNING and waiting.transient
    monkeypatch.setattr(run_launcher, "QUIET_SECONDS", 0)
    quiet = launcher.check_run_worker_health(silent)
    assert quiet.status == WorkerStatus.FAILED
    assert quiet.msg is not None and quiet.msg.startswith(
        f"{GONE}the code server at 127.0.0.1:{server.port} no longer runs this run (the server restarted or its "
        "code was reloaded since the launch), and the run has logged nothing for 0 s"
    )

    # The healthy run is untouched by all of that; it ends as an operator would end it.
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert launcher.terminate(run_id)
    ended = wait_for("the run to end", lambda: instance.get_run_by_id(run_id).is_finished, 60)  # type: ignore[union-attr]
    assert ended and instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED  # type: ignore[union-attr]


def test_run_monitoring_fails_the_orphan_with_the_reason(instance: DagsterInstance) -> None:
    """Dagster's monitoring pass, as the daemon runs it, on a run whose code server is gone."""
    run = started_run(instance, free_port(), pid=exited_pid())
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None
    monitor_started_run(instance, None, record, logging.getLogger("test"))  # type: ignore[arg-type]
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert failure.message.startswith(
        f"Detected run worker status FAILED: '{GONE}the code server that ran it"
    )
    assert "has exited" in failure.message
