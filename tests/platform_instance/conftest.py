"""Real Dagster processes for the run launcher's tests: code servers, a daemon, runs submitted to them.

Every process starts in its own session (process group), so that a test can SIGKILL a code server
with every process below it (the run workers), as `kill -9` of `dagster dev`'s group does, and so
that teardown leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from dagster import DagsterInstance
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._grpc.client import DagsterGrpcClient

from tests.conftest import wait_for

# The session's PostgreSQL server of tests/integration (a fixture of its own in this directory).
from tests.integration.conftest import postgres  # noqa: F401

HERE = Path(__file__).resolve().parent
DEFINITIONS = HERE / "orphan_defs.py"
LOCATION = "orphan_test"
JOB_NAME = "order_job"
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole group (it leads its own session) and reap the leader."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def stop_group(process: subprocess.Popen[bytes], grace: float = 0.0) -> None:
    """SIGTERM to the group (if ``grace``), SIGKILL to whatever is left of it after ``grace``. The
    tests' processes hold nothing worth a graceful stop: by default they are killed at once."""
    if grace and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group outlives its leader
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=20)


class CodeServer:
    """`dagster code-server start` (what `dagster dev` and the compose code-location run) on a fixed port."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, port: int | None = None, command: str = "code-server"
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.port = port or free_port()
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def client(self) -> DagsterGrpcClient:
        return DagsterGrpcClient(port=self.port, host="127.0.0.1")

    def start(self) -> CodeServer:
        self.starts += 1
        self._log = open(self.log_dir / f"code-server-{self.port}-{self.starts}.log", "wb")  # noqa: SIM115
        argv = (
            ["code-server", "start"] if self.command == "code-server" else ["api", "grpc"]
        )  # fmt: skip
        self.process = subprocess.Popen(
            [str(BIN / "dagster"), *argv, "--python-file", str(DEFINITIONS), "--host", "127.0.0.1",
             "--port", str(self.port), "--location-name", LOCATION],
            env=self.env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_for(f"the code server on port {self.port}", self._answers, START_TIMEOUT, interval=0.1)
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the code server exited with {self.process.returncode}: see {self.log_dir}")
        try:
            self.client.ping("")
        except DagsterUserCodeUnreachableError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL to the server and every process of its group: the proxy, its child server, the run workers."""
        assert self.process is not None
        kill_group(self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
        if self._log is not None:
            self._log.close()


class Daemon:
    """`dagster-daemon run` on the code server's address: queue, run monitoring, run retries."""

    def __init__(self, env: dict[str, str], home: Path, port: int) -> None:
        self.workspace = home / "workspace.yaml"
        self.workspace.write_text(
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: {LOCATION}\n"
        )
        self.env = env
        self.log_path = home / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, instance: DagsterInstance) -> Daemon:
        started = time.time()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
                env=self.env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        needed = {"QUEUED_RUN_COORDINATOR", "MONITORING", "EVENT_LOG_CONSUMER"}

        def beating() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"dagster-daemon exited with {self.process.returncode}: see {self.log_path}"
                )
            beats = instance.get_daemon_heartbeats()
            return all(name in beats and beats[name].timestamp >= started for name in needed)

        wait_for("the daemon's heartbeats", beating, START_TIMEOUT, interval=0.5)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


def start_order_run(instance: DagsterInstance, port: int, partition: str, *, queue: bool) -> str:
    """A run of the order job for ``partition``, created as the webserver's launch does (plan snapshot
    and all), then submitted to the queue (the daemon launches it) or launched at once."""
    instance.add_dynamic_partitions("orders", [partition])
    target = GrpcServerTarget(host="127.0.0.1", port=port, socket=None, location_name=LOCATION)
    with WorkspaceProcessContext(instance, target) as context:
        request = context.create_request_context()
        location = request.get_code_location(LOCATION)
        repository = location.get_repository(SINGLETON_REPOSITORY_NAME)
        job = repository.get_full_job(JOB_NAME)
        plan = location.get_execution_plan(
            job, {}, step_keys_to_execute=None, known_state=None, instance=instance
        )
        run = instance.create_run(
            job_name=JOB_NAME,
            run_id=None,
            run_config={},
            resolved_op_selection=None,
            step_keys_to_execute=None,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={"dagster/partition": partition},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        if queue:
            instance.submit_run(run.run_id, request)
        else:
            instance.launch_run(run.run_id, request)
    return run.run_id


@pytest.fixture
def code_servers(tmp_path: Path) -> Iterator[Callable[..., CodeServer]]:
    """Starts code servers for one test; all of them (and their process groups) are stopped after it."""
    started: list[CodeServer] = []

    def start(env: dict[str, str], **kwargs: Any) -> CodeServer:
        server = CodeServer(env, tmp_path, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
