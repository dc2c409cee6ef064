"""The whole local stack (``python -m local_stack``) in a subprocess, on free ports and in its own folder.

For end-to-end tests and benchmarks: every port is a free loopback port and every piece of state
(platform_db, Dagster's home, the email outbox, the EDP stand-in's jobs, the embedded S3/SES, the
generated portal token key) lives under one directory,
so a run never touches ``.local/`` or the fixed ports of ``make run``, and a second stack started
on the same directory finds the state of the first.

    with IsolatedStack(tmp_path) as stack:
        cfg_id = stack.submit(payload, idempotency_key="order-1")
        stack.wait_for_status([cfg_id], "waiting_for_apk")

The launcher's output goes to ``<state_dir>/stack.log`` and each service's to ``<state_dir>/logs/<name>.log``;
the tail of the launcher's output is part
of every error this module raises.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import boto3
import requests
import yaml

from platform_config.settings import Secrets, Settings, api_credentials, deep_merge, load_settings
from standins.hmi_ci import publish_sample_apk

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UP_LINE_RE = re.compile(r"^stage \S+ is up")
URL_LINE_RE = re.compile(r"^([a-z][a-z0-9_-]*): (https?://\S+)$")
# Which service a process of the stack is, by the module its command line runs.
SERVICE_MODULES = {"standins.aws": "aws", "standins.edp": "edp", "api": "api", "dagster": "dagster"}
OUTPUT_TAIL_LINES = 400
HTTP_TIMEOUT_SECONDS = 10.0


class StackError(RuntimeError):
    """The stack did not come up, did not stop cleanly, or an order went wrong."""


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now (all probed at once, so never repeated)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgid)`` of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses; the fields after the last ")" do not.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def child_pids(parent: int) -> list[int]:
    return [pid for pid in _all_pids() if (stat := _proc_stat(pid)) is not None and stat[1] == parent]


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    return any(
        (stat := _proc_stat(pid)) is not None and stat[2] == pgid and stat[0] != "Z" for pid in _all_pids()
    )


def _service_name(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    args = [part.decode(errors="replace") for part in argv]
    if "-m" in args[:-1]:
        return SERVICE_MODULES.get(args[args.index("-m") + 1])
    return None


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class IsolatedStack:
    """``python -m local_stack`` on free loopback ports with all state under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        stage: str = "local",
        overrides: Mapping[str, Any] | None = None,
        startup_timeout: float = 240.0,
        stop_timeout: float = 90.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.stage = stage
        self.overrides = dict(overrides or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(env or {})
        self.customer_path = self.state_dir / "cfg.customer.yml"
        # Absent on purpose: a developer's secrets.env must not leak into an isolated stack.
        self.secrets_path = self.state_dir / "secrets.env"
        self.log_path = self.state_dir / "stack.log"
        self.urls: dict[str, str] = {}
        self.settings: Settings | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._up = threading.Event()
        self._reader: threading.Thread | None = None
        self._service_groups: dict[int, str] = {}
        self._ports: list[int] = []

    # -- configuration -------------------------------------------------------------------------

    def customer_config(self) -> dict[str, Any]:
        """Free ports for every listener and every state path under ``state_dir``, then the overrides."""
        api_port, aws_port, edp_port, dagster_port = free_loopback_ports(4)
        host = "127.0.0.1"
        base: dict[str, Any] = {
            "api": {"host": host, "port": api_port, "public_url": f"http://{host}:{api_port}"},
            "platform_db": {"url": f"sqlite:///{self.state_dir / 'platform.db'}"},
            "aws": {
                "endpoint_url": f"http://{host}:{aws_port}",
                "public_endpoint_url": f"http://{host}:{aws_port}",
            },
            "email": {"outbox_dir": str(self.state_dir / "outbox")},
            "edp": {"base_url": f"http://{host}:{edp_port}"},
            "dagster": {"host": host, "port": dagster_port, "home": str(self.state_dir / "dagster")},
            "portal": {
                "local_key_file": str(self.state_dir / "portal_token.key"),
                "local_signing_key_file": str(self.state_dir / "manifest_signing.key"),
            },
            "logs": {"dir": str(self.state_dir / "logs")},
            "standins": {
                "aws": {"host": host, "port": aws_port, "state_dir": str(self.state_dir / "aws")},
                "edp": {"host": host, "port": edp_port, "state_dir": str(self.state_dir / "edp")},
            },
        }
        return deep_merge(base, self.overrides)

    def write_customer_file(self) -> dict[str, Any]:
        """Write ``customer_path`` (fresh free ports each time) and return what it holds."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.customer_config()
        self.customer_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return config

    def child_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in Secrets.model_fields}
        env.update(
            ENV=self.stage,
            CFG_CUSTOMER_PATH=str(self.customer_path),
            SECRETS_PATH=str(self.secrets_path),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    @property
    def outbox_dir(self) -> Path:
        assert self.settings is not None and self.settings.email.outbox_dir is not None
        return Path(self.settings.email.outbox_dir)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> IsolatedStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        except StackError as stop_error:
            if exc is None:
                raise
            # The caller's own failure is the more useful error; the leftover is still reported.
            print(f"IsolatedStack: {stop_error}", file=sys.stderr)

    def start(self) -> None:
        if self.process is not None:
            raise StackError("this stack is already started")
        self.write_customer_file()
        env = self.child_env()
        self.settings = load_settings(
            self.stage, customer_path=self.customer_path, secrets_path=self.secrets_path, environ=env
        )
        s = self.settings
        self._ports = [s.api.port, s.standins.aws.port, s.standins.edp.port, s.dagster.port]
        self._up.clear()
        self._tail.clear()
        self.urls = {}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_stack"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, name="isolated-stack-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._up.wait(0.5):
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                code = self.process.returncode
                self._force_stop()
                raise StackError(
                    f"python -m local_stack exited with code {code} before it was up:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop(quiet=True)
                raise StackError(
                    f"the stack was not up within {self.startup_timeout:.0f} s:\n{self.output()}"
                )
        self._remember_services()

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("ab") as log:
            for raw in iter(self.process.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace").rstrip("\r\n")
                self._tail.append(line)
                if self._up.is_set():
                    continue
                if UP_LINE_RE.match(line):
                    self._up.set()
                elif match := URL_LINE_RE.match(line):
                    self.urls[match.group(1)] = match.group(2)

    def output(self) -> str:
        """The last lines the stack printed (the whole output is in ``log_path``)."""
        return "\n".join(self._tail)

    def wait_for_output(
        self, pattern: re.Pattern[str], *, count: int = 1, timeout: float = 240.0
    ) -> list[str]:
        """Wait until the stack has printed ``count`` lines matching ``pattern``; those lines."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self._tail if pattern.search(line)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise StackError(
                    f"the stack printed {len(lines)} of {count} lines like {pattern.pattern!r}\n{self.output()}"
                )
            time.sleep(0.2)

    def _remember_services(self) -> None:
        # Each service runs in its own process group (its pid); after the supervisor is gone they
        # could no longer be found through it, so they are noted while it lives.
        if self.process is None:
            return
        for pid in child_pids(self.process.pid):
            self._service_groups[pid] = _service_name(pid) or f"pid {pid}"

    def service_pids(self) -> dict[str, int]:
        """Service name -> pid of its process (also its process group id), e.g. ``{"api": 1234}``."""
        if self.process is None:
            return {}
        pids: dict[str, int] = {}
        for pid in child_pids(self.process.pid):
            name = _service_name(pid)
            if name is not None:
                pids[name] = pid
        return pids

    def stop(self, *, quiet: bool = False) -> None:
        """SIGTERM to the stack (it stops its services), then SIGKILL whatever is left; no listener stays."""
        process = self.process
        if process is None:
            return
        self._remember_services()
        if process.poll() is None:
            _kill_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        self._force_stop()
        if self._reader is not None:
            self._reader.join(timeout=5)
        leftovers = self._leftovers()
        self.process = None
        if leftovers and not quiet:
            raise StackError(f"still running after stop: {', '.join(leftovers)}\n{self.output()}")

    def _force_stop(self) -> None:
        process = self.process
        if process is None:
            return
        self._remember_services()
        _kill_group(process.pid, signal.SIGKILL)
        for pgid in self._service_groups:
            _kill_group(pgid, signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._leftovers():
            time.sleep(0.2)

    def _leftovers(self) -> list[str]:
        left = [
            f"{name} (process group {pgid})"
            for pgid, name in self._service_groups.items()
            if group_alive(pgid)
        ]
        left += [f"a listener on port {port}" for port in self._ports if port_is_listening(port)]
        return left

    # -- talking to the stack ------------------------------------------------------------------

    def _settings(self) -> Settings:
        if self.settings is None:
            raise StackError("the stack is not started")
        return self.settings

    @property
    def api_url(self) -> str:
        return self.urls.get("api") or self._settings().api.public_url

    def authorization(self, credential: Literal["website", "operator"]) -> dict[str, str]:
        """The Authorization header of ``credential`` (its first value) where the stage needs one."""
        settings = self._settings()
        if not settings.api.require_token:
            return {}
        website, operator = api_credentials(settings.secrets)
        token = website[0] if credential == "website" else operator[0]
        return {"Authorization": f"Bearer {token}"}

    def submit(self, payload: Mapping[str, Any], idempotency_key: str | None = None) -> str:
        """POST /submit, as the website sends it; the cfg_id of the stored order."""
        headers = self.authorization("website")
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        answer = requests.post(
            f"{self.api_url}/submit", json=payload, headers=headers, timeout=HTTP_TIMEOUT_SECONDS
        )
        if answer.status_code != 200:
            raise StackError(f"POST /submit answered {answer.status_code}: {answer.text}")
        return str(answer.json()["cfg_id"])

    def order(self, cfg_id: str) -> dict[str, Any]:
        """GET /orders/{cfg_id}, the whole order an operator sees."""
        answer = requests.get(
            f"{self.api_url}/orders/{cfg_id}",
            headers=self.authorization("operator"),
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        if answer.status_code != 200:
            raise StackError(f"GET /orders/{cfg_id} answered {answer.status_code}: {answer.text}")
        result: dict[str, Any] = answer.json()
        return result

    def wait_for_status(
        self, cfg_ids: Iterable[str], status: str, *, timeout: float = 240.0, poll_seconds: float = 1.0
    ) -> dict[str, dict[str, Any]]:
        """Poll GET /orders/{cfg_id} until every order has ``status``; a failed order ends the wait."""
        pending = list(cfg_ids)
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            for cfg_id in pending:
                seen[cfg_id] = self.order(cfg_id)
                if seen[cfg_id]["status"] == "failed" and status != "failed":
                    raise StackError(f"order {cfg_id} failed: {seen[cfg_id].get('error')}")
            if all(seen[cfg_id]["status"] == status for cfg_id in pending):
                return seen
            if time.monotonic() > deadline:
                states = ", ".join(f"{cfg_id}: {seen[cfg_id]['status']}" for cfg_id in pending)
                raise StackError(
                    f"not all orders reached {status!r} within {timeout:.0f} s ({states})\n{self.output()}"
                )
            time.sleep(poll_seconds)

    def boto3_client(self, service: str) -> Any:
        settings = self._settings()
        return boto3.client(
            service,
            endpoint_url=settings.aws.endpoint_url,
            region_name=settings.aws.region,
            **settings.aws_credentials(),
        )

    def publish_apk(self, version: str = "1.0.0") -> str:
        """Publish the HMI CI's sample APK of ``version`` to the stack's bucket; returns its key."""
        return publish_sample_apk(self.boto3_client("s3"), self._settings().artifacts.bucket, version=version)
