"""MonitoredDefaultRunLauncher: Dagster's DefaultRunLauncher, with run worker health checks.

The DefaultRunLauncher runs every run as a subprocess of the code location's gRPC server and
records that server's address on the run (tag ``.dagster/grpc_info``). It cannot tell run
monitoring whether a run's worker is still alive, so a run whose worker died with its server
(``kill -9`` of ``dagster dev``'s process group, a restarted code-location container) stays
STARTED for ever, and with it the order's slot in the run queue (one run per partition).

For each STARTED run, run monitoring (every ``run_monitoring.poll_interval_seconds``) asks this
launcher, which asks the recorded server ``CanCancelExecution(run_id)``:

* the server holds the run -> RUNNING.
* Otherwise the worker decides where the daemon can see it: a code server on this host
  (``dagster dev``: 127.0.0.1 or a Unix socket) shares the daemon's processes, so the worker's
  pid (the run's "Started process for run (pid: N)" event) is looked up. Gone -> FAILED, alive ->
  RUNNING (a code reload: see below).
* Where it cannot (compose: the code location is another container):
  - the server answers, does not hold the run, and is the very server that started it (same
    server id, recorded at launch in ``platform/code_server_id``) -> FAILED: the worker ended
    without reporting an outcome;
  - the server answers but is another server than at launch: it restarted (its workers died with
    it) or its code was reloaded (``dagster code-server start`` then serves from a new child while
    the previous one finishes its runs, and answers for the new one only). The run is FAILED once
    it has logged nothing for ``QUIET_SECONDS``; a live worker logs every step;
  - nothing answers at the address (refused, name not resolvable, reset) -> FAILED once that is
    so on ``UNREACHABLE_CHECKS_TO_FAIL`` monitoring passes in a row, so that one lost connection
    does not fail a healthy run;
  - the server takes the request but does not answer within ``CALL_TIMEOUT_SECONDS`` -> RUNNING:
    a slow server (a loaded machine) still holds its workers, and failing their runs would start
    a retry beside a live worker. ``run_monitoring.max_runtime_seconds`` bounds such a run.

A run marked FAILED here fails with the reason in its event log ("the run worker is gone: ...");
``run_retries`` then re-executes it from the failure. The daemon builds that retry from the run's
code location, and gives it up for good ("Failed to retry run") if the location does not answer
at that moment: so while the location's own address (the workspace's ``grpc_server`` entry, e.g.
compose's code-location:4000) does not answer, the verdict is held back, for at most
``HOLD_SECONDS``. (A Unix-socket location, as ``dagster dev`` makes them, gets a new socket and a new
daemon when it restarts: nothing to wait for.) Resuming a run in place is not supported
(``max_resume_run_attempts`` must stay 0).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

import grpc
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import ConfigurableClassData, deserialize_value

logger = logging.getLogger(__name__)

# The id of the gRPC server that started the run (GetServerId at launch; a new one per process).
CODE_SERVER_ID_TAG = "platform/code_server_id"
# CanCancelExecution takes the server's execution lock and looks up a dict: a healthy server
# answers in milliseconds. A monitoring pass checks its runs one after another, so a hung server
# costs this much per run and pass.
CALL_TIMEOUT_SECONDS = 5
# Passes in a row on which nothing answered at the server's address before its runs are failed.
UNREACHABLE_CHECKS_TO_FAIL = 2
# A run whose code server changed since its launch (restart or code reload) and that has logged
# nothing for this long has no worker left. Steps take seconds and log their start and end.
QUIET_SECONDS = 120
# How long a verdict "the run worker is gone" waits for the run's code location to answer again.
HOLD_SECONDS = 120
GONE = "the run worker is gone: "
# The worker's pid is looked up only where the daemon shares the code server's host.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
STARTED_PROCESS_PREFIX = "Started process for run (pid: "
# Streaks of runs that are neither seen again nor failed (their run ended) are forgotten after this.
_STREAK_TTL_SECONDS = 3600.0


def server_address(client: DagsterGrpcClient) -> str:
    return f"{client.host}:{client.port}" if client.port else f"unix:{client.socket}"


def is_local(client: DagsterGrpcClient) -> bool:
    return not client.port or client.host in LOCAL_HOSTS


def process_alive(pid: int, started_by: float | None = None) -> bool:
    """Whether ``pid`` runs on this host (not a zombie), and, on Linux, was started by ``started_by``
    (epoch seconds): a process started later only reuses the number."""
    if not os.path.isdir("/proc/self"):  # no procfs (macOS): existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    if fields[0] in {"Z", "X"}:
        return False
    if started_by is not None:
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))
        if boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") > started_by + 2:
            return False
    return True


class MonitoredDefaultRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher (same config: none) that supports ``check_run_worker_health``."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        super().__init__(inst_data=inst_data)
        self._lock = threading.Lock()
        # run_id -> (consecutive passes on which the server was unreachable, monotonic time of the last)
        self._unreachable: dict[str, tuple[int, float]] = {}
        # run_id -> monotonic time of the first "gone" verdict held back for its code location
        self._held: dict[str, float] = {}

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    @property
    def supports_resume_run(self) -> bool:
        return False

    def launch_run(self, context: LaunchRunContext) -> None:
        server_id = ""
        origin = context.dagster_run.remote_job_origin
        if context.workspace is not None and origin is not None:
            location_name = origin.repository_origin.code_location_origin.location_name
            try:
                client = getattr(context.workspace.get_code_location(location_name), "client", None)
                if isinstance(client, DagsterGrpcClient):
                    server_id = client.get_server_id(timeout=CALL_TIMEOUT_SECONDS)
            except Exception:  # the launch itself reports an unreachable server
                logger.warning(
                    "could not read the code server's id for run %s",
                    context.dagster_run.run_id,
                    exc_info=True,
                )
        # Always written: a retry carries its parent's tags, and with them the parent's server id.
        self._instance.add_run_tags(context.dagster_run.run_id, {CODE_SERVER_ID_TAG: server_id})
        super().launch_run(context)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        result = self._worker_health(run)
        if result.status == WorkerStatus.FAILED and (result.msg or "").startswith(GONE):
            return self._hold_for_location(run, result)
        with self._lock:
            self._held.pop(run.run_id, None)
        return result

    def _hold_for_location(self, run: DagsterRun, verdict: CheckRunHealthResult) -> CheckRunHealthResult:
        origin = (
            run.remote_job_origin.repository_origin.code_location_origin if run.remote_job_origin else None
        )
        if not isinstance(origin, GrpcServerCodeLocationOrigin) or not origin.port:
            return verdict
        location = f"{origin.host}:{origin.port}"
        try:
            DagsterGrpcClient(port=origin.port, host=origin.host, use_ssl=bool(origin.use_ssl)).get_server_id(
                timeout=CALL_TIMEOUT_SECONDS
            )
        except DagsterUserCodeUnreachableError:
            now = time.monotonic()
            with self._lock:
                self._prune(now)
                first = self._held.setdefault(run.run_id, now)
            if now - first < HOLD_SECONDS:
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING,
                    f"{verdict.msg}; the run is failed once its code location at {location} answers again, so that "
                    "its automatic retry can start",
                    transient=True,
                )
            msg = f"{verdict.msg}; its code location at {location} is still unreachable, so its automatic retry may not start"
            verdict = CheckRunHealthResult(WorkerStatus.FAILED, msg)
        with self._lock:
            self._held.pop(run.run_id, None)
        return verdict

    def _worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if GRPC_INFO_TAG not in run.tags:
            # Not launched through a code server (e.g. `dagster asset materialize` in-process on
            # the same DAGSTER_HOME): nothing to ask, so nothing is failed here; max runtime applies.
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"run {run.run_id} has no code server address ({GRPC_INFO_TAG}) to check",
            )
        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:
            # The run ended between the monitoring pass's query and this check.
            return self._ended(run.run_id) or CheckRunHealthResult(WorkerStatus.RUNNING)
        address = server_address(client)
        try:
            result = deserialize_value(
                client.can_cancel_execution(
                    CanCancelExecutionRequest(run_id=run.run_id), timeout=CALL_TIMEOUT_SECONDS
                ),
                CanCancelExecutionResult,
            )
        except DagsterUserCodeUnreachableError as error:
            return self._unreachable_result(run, client, address, error)
        self._forget(run.run_id)
        if result.can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"the code server at {address} runs this run")
        # The worker reports its outcome before it exits: an ended run is no orphan.
        return self._ended(run.run_id) or self._not_held_result(run, client, address)

    def _not_held_result(
        self, run: DagsterRun, client: DagsterGrpcClient, address: str
    ) -> CheckRunHealthResult:
        """The server answers, but does not hold the run."""
        worker = self._local_worker(run, client)
        if worker is not None:
            pid, alive = worker
            if alive:
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING,
                    f"the code server at {address} no longer holds this run (its code was reloaded), but the run's "
                    f"worker process {pid} still runs",
                )
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"{GONE}the code server at {address} no longer runs this run, and its worker "
                f"process {pid} has exited without reporting an outcome",
            )
        launched_on = run.tags.get(CODE_SERVER_ID_TAG)
        try:
            current = client.get_server_id(timeout=CALL_TIMEOUT_SECONDS)
        except DagsterUserCodeUnreachableError:
            current = None
        if launched_on and current == launched_on:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"{GONE}the code server at {address} no longer runs this run (the worker process "
                "ended without reporting an outcome)",
            )
        quiet = self._quiet_seconds(run)
        if quiet >= QUIET_SECONDS:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"{GONE}the code server at {address} no longer runs this run (the server restarted "
                f"or its code was reloaded since the launch), and the run has logged nothing for {int(quiet)} s",
            )
        return CheckRunHealthResult(
            WorkerStatus.RUNNING,
            f"the code server at {address} restarted or reloaded its code since the launch; the run is failed if it "
            f"logs nothing for {QUIET_SECONDS} s",
            transient=True,
        )

    def _unreachable_result(
        self, run: DagsterRun, client: DagsterGrpcClient, address: str, error: DagsterUserCodeUnreachableError
    ) -> CheckRunHealthResult:
        cause = error.__cause__
        code = cause.code() if isinstance(cause, grpc.RpcError) else None
        reason = f"{error}" + (f" ({code.name})" if code is not None and code.name not in str(error) else "")
        worker = self._local_worker(run, client)
        if worker is not None:
            self._forget(run.run_id)
            pid, alive = worker
            if alive:
                return CheckRunHealthResult(
                    WorkerStatus.RUNNING,
                    f"the code server at {address} does not answer ({reason}), but the run's worker process {pid} "
                    "still runs",
                    transient=True,
                )
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"{GONE}the code server that ran it, at {address}, is gone ({reason}), and its "
                f"worker process {pid} has exited",
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            # Someone holds the address and took the request: slow, not gone.
            self._forget(run.run_id)
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"the code server at {address} did not answer within {CALL_TIMEOUT_SECONDS} s; the run is left "
                "running (bounded by the maximum runtime)",
                transient=True,
            )
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            count = self._unreachable.get(run.run_id, (0, now))[0] + 1
            self._unreachable[run.run_id] = (count, now)
        if count < UNREACHABLE_CHECKS_TO_FAIL:
            logger.warning(
                "run %s: the code server at %s is unreachable (%s); checking again",
                run.run_id,
                address,
                reason,
            )
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"the code server at {address} is unreachable ({reason}), checking again",
                transient=True,
            )
        # The count goes on (a verdict held for the code location is given again on the next pass).
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"{GONE}the code server that ran it, at {address}, is gone (unreachable on {count} "
            f"checks in a row: {reason})",
        )

    def _local_worker(self, run: DagsterRun, client: DagsterGrpcClient) -> tuple[int, bool] | None:
        """(pid, alive) of the run's worker process, if it runs on this host and said its pid."""
        if not is_local(client) or not self.has_instance:
            return None
        started = [
            entry
            for entry in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if entry.message.startswith(STARTED_PROCESS_PREFIX)
        ]
        if not started:
            return None
        entry = started[-1]
        metadata: Mapping[str, object] = {}
        if entry.dagster_event is not None and entry.dagster_event.engine_event_data is not None:
            metadata = entry.dagster_event.engine_event_data.metadata or {}
        raw = (
            getattr(metadata.get("pid"), "value", None)
            or entry.message[len(STARTED_PROCESS_PREFIX) :].split(")")[0]
        )
        try:
            pid = int(str(raw))
        except ValueError:
            return None
        return pid, process_alive(pid, started_by=entry.timestamp)

    def _quiet_seconds(self, run: DagsterRun) -> float:
        last = self._instance.event_log_storage.get_logs_for_run(run.run_id, limit=1, ascending=False)
        return time.time() - last[0].timestamp if last else float("inf")

    def _ended(self, run_id: str) -> CheckRunHealthResult | None:
        """The result for a run that has ended meanwhile, else None."""
        self._forget(run_id)
        current = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if current is None or not current.is_finished:
            return None
        status = WorkerStatus.SUCCESS if current.status == DagsterRunStatus.SUCCESS else WorkerStatus.FAILED
        return CheckRunHealthResult(status, f"the run already ended ({current.status.value})")

    def _prune(self, now: float) -> None:
        """Drop the state of runs not checked for long (they ended). Call with the lock held."""
        for run_id, (_, seen) in list(self._unreachable.items()):
            if now - seen > _STREAK_TTL_SECONDS:
                del self._unreachable[run_id]
        for run_id, first in list(self._held.items()):
            if now - first > _STREAK_TTL_SECONDS:
                del self._held[run_id]

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._unreachable.pop(run_id, None)
