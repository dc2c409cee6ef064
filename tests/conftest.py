"""Fixtures shared by the test packages: settings on free ports and tmp dirs, real servers in threads,
and the waits of the tests that run whole stacks."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import uvicorn
import yaml

from platform_config.settings import EdpStandinSettings, Settings, deep_merge, load_settings
from standins.edp import create_edp_app

# The Docker engine and the project's images, for the tiers that run containers.
pytest_plugins = ["tests.docker_engine"]

SERVER_START_TIMEOUT = 10.0
T = TypeVar("T")
BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}
"""
BACKFILL_DONE = frozenset({"COMPLETED", "COMPLETED_SUCCESS"})
# A canceling backfill ends canceled: it will not complete either.
BACKFILL_GAVE_UP = frozenset({"FAILED", "COMPLETED_FAILED", "CANCELED", "CANCELING"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A port nothing listens on right now (for servers that take a port number, not a socket)."""
    return _free_port


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[[dict[str, Any]], Settings]:
    """Local-stage settings with a customer file merged over them; never the fixed local ports."""

    def make(overrides: dict[str, Any]) -> Settings:
        aws_port = _free_port()
        edp_port = _free_port()
        base: dict[str, Any] = {
            "aws": {
                "endpoint_url": f"http://127.0.0.1:{aws_port}",
                "public_endpoint_url": f"http://127.0.0.1:{aws_port}",
            },
            "edp": {"base_url": f"http://127.0.0.1:{edp_port}"},
            "email": {"outbox_dir": str(tmp_path / "outbox")},
            "standins": {
                "aws": {"port": aws_port},
                "edp": {"port": edp_port, "state_dir": str(tmp_path / "edp-state")},
            },
        }
        customer = tmp_path / "cfg.customer.yml"
        customer.write_text(yaml.safe_dump(deep_merge(base, overrides)))
        return load_settings(
            "local", customer_path=customer, secrets_path=tmp_path / "no-secrets.env", environ={}
        )

    return make


@dataclass
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread
    base_url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def serve_in_thread(app: Any, sock: socket.socket, base_url: str) -> RunningServer:
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return RunningServer(server=server, thread=thread, base_url=base_url)


@pytest.fixture
def edp_settings(tmp_path: Path) -> EdpStandinSettings:
    """Short latencies (yet long enough to observe each status under load): a job completes within a second."""
    return load_settings(
        "local", secrets_path=tmp_path / "no-secrets.env", environ={}
    ).standins.edp.model_copy(
        update={
            "state_dir": str(tmp_path / "edp-state"),
            "queued_seconds": 0.4,
            "running_seconds": 0.4,
            "failure": "none",
            "hang_seconds": 2.0,
        }
    )


@pytest.fixture
def start_edp() -> Iterator[Callable[[EdpStandinSettings], RunningServer]]:
    """Start the EDP stand-in over real HTTP on a free port; every server started is stopped at the end."""
    started: list[RunningServer] = []

    def start(settings: EdpStandinSettings, port: int = 0) -> RunningServer:
        # Binding the socket ourselves tells the port before the app exists, so artifact URLs name it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        running = serve_in_thread(create_edp_app(settings, public_base_url=base_url), sock, base_url)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded AWS (moto's server mode) for the session; tests keep apart by bucket."""
    from standins.aws import start_aws_standin

    port = _free_port()
    customer = tmp_path_factory.mktemp("aws") / "cfg.customer.yml"
    endpoint = f"http://127.0.0.1:{port}"
    customer.write_text(
        yaml.safe_dump(
            {
                "aws": {"endpoint_url": endpoint, "public_endpoint_url": endpoint},
                "standins": {"aws": {"port": port}},
            }
        )
    )
    settings = load_settings(
        "local", customer_path=customer, secrets_path=customer.parent / "none.env", environ={}
    )
    server = start_aws_standin(settings)
    yield endpoint
    server.stop()


@pytest.fixture
def pipeline_settings(
    tmp_path: Path,
    aws_endpoint: str,
    edp_settings: EdpStandinSettings,
    start_edp: Callable[[EdpStandinSettings], RunningServer],
) -> Settings:
    """Local settings against real servers: moto (own bucket), an EDP stand-in, a migrated SQLite platform_db."""
    from platform_db.migrate import upgrade
    from standins.aws import bootstrap

    edp = start_edp(edp_settings)
    customer = tmp_path / "pipeline.cfg.customer.yml"
    customer.write_text(
        yaml.safe_dump(
            {
                "aws": {"endpoint_url": aws_endpoint, "public_endpoint_url": aws_endpoint},
                "artifacts": {"bucket": f"test-{uuid.uuid4().hex[:20]}"},
                "platform_db": {"url": f"sqlite:///{tmp_path / 'platform.db'}"},
                "edp": {"base_url": edp.base_url, "timeout_seconds": 2, "retries": 1},
                "email": {"outbox_dir": str(tmp_path / "outbox")},
                "dagster": {"home": str(tmp_path / "dagster")},
                "portal": {
                    "local_key_file": str(tmp_path / "portal_token.key"),
                    "local_signing_key_file": str(tmp_path / "manifest_signing.key"),
                },
                # A step failure is retried once, at once: tests of transient outages set their own.
                # Runs are started by the tests (sensor ticks, materialize), not by the API.
                # The in-run wait for EDP is 5 s: the stand-in's jobs take under a second here, and a
                # test of a misbehaving EDP waits that out on each try.
                "pipeline": {
                    "step_retries": 1,
                    "step_retry_delay_seconds": 0.1,
                    "api_starts_first_run": False,
                    "edp_wait_in_run_seconds": 5,
                },
            }
        )
    )
    settings = load_settings("local", customer_path=customer, secrets_path=tmp_path / "none.env", environ={})
    upgrade(settings.platform_db_url())
    bootstrap(settings)
    return settings


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    diagnostics: Callable[[], str] | None = None,
    *,
    interval: float = 0.2,
) -> T:
    """Ask ``check`` every ``interval`` s until it answers something truthy, and return that.

    After ``timeout`` s an AssertionError names ``what``, followed by ``diagnostics()``: what to
    look at first when the wait fails.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(f"not within {timeout:g} s: {what}{detail}")
        time.sleep(interval)


def backfill_status(graphql_url: str, backfill_id: str, timeout: float) -> str | None:
    """The backfill's status as the Dagster UI shows it (None while the webserver cannot tell)."""
    answer = requests.post(
        graphql_url,
        json={"query": BACKFILL_STATUS, "variables": {"backfillId": backfill_id}},
        timeout=timeout,
    )
    result = answer.json().get("data", {}).get("partitionBackfillOrError", {})
    status = result.get("status")
    return str(status) if status else None


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 without an access log: the base of the handlers of the tests' small upstreams."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackHTTPServer:
    """``handler`` on a free port of 127.0.0.1, served by a daemon thread until ``stop``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_port)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_together(workers: int, action: Callable[[int], Any]) -> list[Any]:
    """``action(0 .. workers-1)`` in threads released at one moment; the results by index, or the first error."""
    start = threading.Barrier(workers)

    def run(index: int) -> Any:
        start.wait(timeout=30)
        return action(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, index) for index in range(workers)]
        return [future.result(timeout=60) for future in futures]


@pytest.fixture
def race() -> Callable[[int, Callable[[int], Any]], list[Any]]:
    """Race ``workers`` calls against each other, as concurrent API requests or Dagster runs would."""
    return run_together


@dataclass
class ScriptedEdp:
    """An EDP whose answers the test writes: what a broken or hostile EDP might send.

    ``POST /edp-api/jobs`` accepts every order as ``job_id``; ``GET /edp-api/jobs/{job_id}``
    answers ``job_answer``; ``GET /files/<name>`` answers ``files[name]`` (status, headers, body).
    """

    base_url: str
    job_id: str = "job-1"
    job_answer: tuple[int, bytes] = (200, b'{"status": "queued"}')
    files: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)


@pytest.fixture
def scripted_edp() -> Iterator[ScriptedEdp]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    edp = ScriptedEdp(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}")

    async def create_job(request: Request) -> Response:
        return JSONResponse({"job_id": edp.job_id, "edp_artifact_urls": []}, status_code=202)

    async def get_job(request: Request) -> Response:
        status_code, body = edp.job_answer
        return Response(body, status_code=status_code, media_type="application/json")

    async def get_file(request: Request) -> Response:
        status_code, headers, body = edp.files.get(request.path_params["name"], (404, {}, b"unknown"))
        return Response(body, status_code=status_code, headers=headers)

    app = Starlette(
        routes=[
            Route("/edp-api/jobs", create_job, methods=["POST"]),
            Route("/edp-api/jobs/{job_id}", get_job, methods=["GET"]),
            Route("/files/{name}", get_file, methods=["GET"]),
        ]
    )
    running = serve_in_thread(app, sock, edp.base_url)
    yield edp
    running.stop()


# The six order assets as the API and the Dagster UI name them, in lineage order.
ORDER_ASSET_NAMES = [
    "order/config",
    "order/edp_artifacts",
    "order/cfn_or_iso",
    "order/apk",
    "order/manifest",
    "order/email",
]


def run_module(
    args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m args...`` to its end, its output captured as text; the exit code is the test's to check."""
    return run_captured([sys.executable, "-m", *args], cwd=cwd, env=env, timeout=timeout)


@dataclass
class ModuleServer:
    """A ``python -m`` server process; ``stdout`` and ``stderr`` hold its output once it is stopped."""

    process: subprocess.Popen[bytes]
    stdout: bytes = b""
    stderr: bytes = b""


@contextmanager
def serving_module(
    module: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    ready: Callable[[], bool],
    timeout: float,
    stop_signal: signal.Signals = signal.SIGTERM,
    stderr: int = subprocess.PIPE,
) -> Iterator[ModuleServer]:
    """``python -m module`` until ``ready()`` answers True, then the test; at the end ``stop_signal``.

    A process that exits before it is ready fails the wait at once, with what it printed.
    ``stderr=subprocess.STDOUT`` gathers all its output in ``stdout``.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr
    )
    server = ModuleServer(process)

    def started() -> bool:
        if process.poll() is not None:
            stdout, stderr_output = process.communicate()
            raise AssertionError(
                f"python -m {module} exited with {process.returncode}:\n{(stderr_output or stdout).decode()}"
            )
        return ready()

    try:
        wait_for(f"python -m {module} serving", started, timeout, interval=0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
        server.stdout, server.stderr = (output or b"" for output in process.communicate(timeout=20))


def run_captured(
    argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``argv`` to its end, its output captured as text; the exit code is the test's to check."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
