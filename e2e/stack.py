"""The delivered stack, started the way its compose file says, as processes in a network namespace.

Compose                                  | here
---------------------------------------- | ----------------------------------------------------------
the gateway container (image CMD)        | ``python -m edge_gateway`` with the service's environment
bind mounts ``./<file>`` -> ``/etc/ems``  | the bundle's files bind-mounted at the same paths (read-only
                                         | as declared) in the gateway's own mount namespace
named volume -> ``/var/lib/ems``         | a temporary directory bind-mounted there
container port 8080                      | port 8080 inside the namespace
fixture services (profile ``fixtures``)  | their command, each on its own loopback address
compose DNS (service names)              | ``/etc/netns/<ns>/hosts``, seen as /etc/hosts in the namespace

Every process is started with ``ip netns exec <ns> <python> -m ...``; the harness talks to them
through a probe process inside the namespace. ``close()`` ends the processes, deletes the
namespace and its hosts file, and removes the mount-point directories it had to create.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Self

from contracts.dtm import DeviceTopologyModel
from e2e.bundle import PROJECT_ROOT, Bundle
from e2e.compose import (
    FixtureCommand,
    Service,
    fixture_services,
    gateway_service,
    parse_fixture_command,
    read_services,
)
from e2e.mountns import current_mount_namespace
from e2e.netns import NetworkNamespace, other_runs_active, service_addresses
from industrial_fixtures import load_manifest

if TYPE_CHECKING:
    # Imported where used at run time: the gateway's settings module loads only once a stack is built.
    from edge_gateway.settings import GatewaySettings

GATEWAY_MODULE = "edge_gateway"
DELIVERED_STAGE = "beta"
READY_TIMEOUT_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 60


class StackError(RuntimeError):
    """The stack cannot be started as its compose file says; the message tells why."""


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    started_at: float

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Signal the process (its own session, started by us) and wait; KILL after ``grace``."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=grace)
        return self.popen.returncode


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _bind_source(spec: Service, target: str) -> Path:
    for bind in spec.binds:
        if bind.target == target:
            return bind.source
    raise StackError(f"services.{spec.name}: nothing is mounted at {target}")


def gateway_settings(spec: Service) -> GatewaySettings:
    """The settings the gateway service will load: its stage block with the bind-mounted customer file."""
    environment = spec.environment
    if environment.get("ENV") != DELIVERED_STAGE:
        raise StackError(
            f"the gateway runs ENV={environment.get('ENV')!r}; the delivered stack runs {DELIVERED_STAGE}"
        )
    from edge_gateway.settings import load_gateway_settings

    customer = environment.get("CFG_CUSTOMER_PATH")
    return load_gateway_settings(
        DELIVERED_STAGE, customer_path=_bind_source(spec, customer) if customer else None, environ={}
    )


def checked_http_port(settings: GatewaySettings, spec: Service) -> int:
    """The gateway's port, once it is sure the compose file exposes it and keeps its data in a volume."""
    port = int(settings.http.port)
    if port not in spec.ports:
        raise StackError(
            f"the gateway listens on {port} (http.port), the compose file exposes {list(spec.ports)}"
        )
    storage = PurePosixPath(settings.storage.path)
    if not any(PurePosixPath(volume.target) in storage.parents for volume in spec.volumes):
        raise StackError(
            f"the gateway stores its data at {storage} (storage.path), outside every volume of the compose file:"
            " it would be lost with the container"
        )
    return port


class Probe:
    """One long-lived ``e2e.probe`` process inside the namespace, one JSON line per request."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self._log = log_path.open("ab")
        self._popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(env),
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        self._lock = threading.Lock()

    def ask(self, request: dict[str, Any], timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, Any]:
        assert self._popen.stdin is not None and self._popen.stdout is not None
        with self._lock:
            if self._popen.poll() is not None:
                raise StackError(f"the probe has exited ({self._popen.returncode})")
            self._popen.stdin.write((json.dumps(request) + "\n").encode())
            self._popen.stdin.flush()
            ready, _, _ = select.select([self._popen.stdout], [], [], timeout)
            if not ready:
                raise StackError(f"the probe did not answer within {timeout:.0f} s: {request}")
            line = self._popen.stdout.readline()
        if not line:
            raise StackError("the probe closed its output")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._popen.stdin is not None:
            try:
                self._popen.stdin.close()
            except OSError:
                pass
        try:
            self._popen.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait(timeout=STOP_GRACE_SECONDS)
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        self._log.close()


@dataclass(frozen=True)
class Fixture:
    hostname: str
    address: str
    command: FixtureCommand


class GatewayApi:
    """What the scenarios ask of the gateway, over whatever transport a stack's ``request`` uses."""

    bundle: Bundle

    def request(
        self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        raise NotImplementedError

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise StackError(f"GET {path} answered {status}: {body}")
        return body

    def measurements(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/measurements")
        return result

    def health(self) -> dict[str, Any]:
        """Per-device health: GET /status with the bundle's commissioning token."""
        status, body = self.request("GET", "/status", headers=self.bundle.commissioning_headers())
        if status != 200:
            raise StackError(f"GET /status answered {status}: {body}")
        result: dict[str, Any] = body
        return result

    def topology(self) -> DeviceTopologyModel:
        """GET /topology with the bundle's commissioning token: the DTM maps the site's devices."""
        status, body = self.request("GET", "/topology", headers=self.bundle.commissioning_headers())
        if status != 200:
            raise StackError(f"GET /topology answered {status}: {body}")
        return DeviceTopologyModel.model_validate(body)

    def post_topology(self, topology: DeviceTopologyModel) -> tuple[int, Any]:
        return self.request(
            "POST", "/topology", topology.model_dump(mode="json"), headers=self.bundle.commissioning_headers()
        )


class ManagedStack(GatewayApi):
    """A stack that a with block starts and always closes, after a failed start too."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stack(ManagedStack):
    """One run of a bundle's stack; use as a context manager so that it is always torn down."""

    def __init__(self, bundle: Bundle, workdir: Path, *, python: str = sys.executable) -> None:
        self.bundle = bundle
        self.workdir = Path(workdir)
        self.python = python
        services = read_services(bundle.compose(), bundle.directory)
        self.gateway_spec = gateway_service(services)
        commands = self._fixture_commands(services)
        self.addresses = service_addresses([self.gateway_spec.name, *commands])
        self.fixtures = {
            name: Fixture(name, self.addresses[name], command) for name, command in commands.items()
        }
        self.settings = gateway_settings(self.gateway_spec)
        self.http_port = checked_http_port(self.settings, self.gateway_spec)
        self.volume_dirs = {
            volume.volume: self.workdir / "volumes" / volume.volume for volume in self.gateway_spec.volumes
        }
        self.logs_dir = self.workdir / "logs"
        self.namespace: NetworkNamespace | None = None
        self.probe: Probe | None = None
        self.gateway: ManagedProcess | None = None
        self.fixture_processes: dict[str, ManagedProcess] = {}
        self._created_dirs: list[Path] = []

    # -- reading the compose file ---------------------------------------------------------------

    @staticmethod
    def _fixture_commands(services: Mapping[str, Service]) -> dict[str, FixtureCommand]:
        declared = fixture_services(services)
        if declared:
            return {service.name: parse_fixture_command(service) for service in declared}
        # A bundle from before the fixtures profile: the manifest says the same.
        return {
            fixture.hostname: FixtureCommand(
                device_type=fixture.type,
                port=fixture.port,
                unit_id=fixture.unit_id,
                module="industrial_fixtures",
            )
            for fixture in load_manifest().fixtures
        }

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def fixture_commands(self) -> dict[str, FixtureCommand]:
        return {hostname: fixture.command for hostname, fixture in self.fixtures.items()}

    @property
    def gateway_started_at(self) -> float:
        if self.gateway is None:
            raise StackError("the gateway was never started")
        return self.gateway.started_at

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A container-like environment: nothing of the caller's shell leaks in."""
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            **(extra or {}),
        }

    def start(self, *, fixtures: bool = True) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for directory in self.volume_dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        self.namespace = NetworkNamespace(self.addresses)
        self.namespace.create()
        self.probe = Probe(
            self.namespace.exec_argv([self.python, "-m", "e2e.probe"]),
            self.env(),
            self.logs_dir / "probe.log",
        )
        if fixtures:
            for hostname in self.fixtures:
                self.start_fixture(hostname, wait=False)
            for hostname in self.fixtures:
                self.wait_fixture_listening(hostname)
        self.start_gateway()

    def _process(self, name: str, argv: list[str], env: Mapping[str, str]) -> ManagedProcess:
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        return ManagedProcess(name, argv, log_path, popen, time.monotonic())

    def start_fixture(self, hostname: str, *, wait: bool = True) -> ManagedProcess:
        assert self.namespace is not None
        fixture = self.fixtures[hostname]
        running = self.fixture_processes.get(hostname)
        if running is not None and running.alive():
            raise StackError(f"fixture {hostname} is already running")
        command = fixture.command
        argv = self.namespace.exec_argv(
            [
                self.python,
                "-m",
                command.module,
                "--type",
                command.device_type,
                # compose: 0.0.0.0 in a container of its own; here: the service's own loopback address.
                "--host",
                fixture.address,
                "--port",
                str(command.port),
                "--unit-id",
                str(command.unit_id),
            ]
        )
        process = self._process(f"fixture-{hostname}", argv, self.env())
        self.fixture_processes[hostname] = process
        if wait:
            self.wait_fixture_listening(hostname)
        return process

    def wait_fixture_listening(self, hostname: str, timeout: float = 15.0) -> None:
        fixture = self.fixtures[hostname]
        deadline = time.monotonic() + timeout
        while True:
            process = self.fixture_processes[hostname]
            if not process.alive():
                raise StackError(
                    f"fixture {hostname} exited ({process.popen.returncode}):\n{tail(process.log_path)}"
                )
            # By name: checks the namespace's hosts file as much as the fixture.
            if self.ask({"op": "tcp", "host": hostname, "port": fixture.command.port}).get("open"):
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"fixture {hostname} does not listen after {timeout:.0f} s:\n{tail(process.log_path)}"
                )
            time.sleep(0.1)

    def kill_fixture(self, hostname: str, sig: int = signal.SIGKILL) -> None:
        process = self.fixture_processes.get(hostname)
        if process is None:
            raise StackError(f"fixture {hostname} was never started")
        process.stop(sig)

    def _ensure_mount_point(self, directory: PurePosixPath) -> Path:
        path = Path(directory)
        if not path.exists():
            missing = [parent for parent in [path, *path.parents] if not parent.exists()]
            path.mkdir(parents=True, mode=0o755)
            # Deepest first, so close() can remove them in order.
            self._created_dirs.extend(missing)
        elif not path.is_dir():
            raise StackError(f"{path} exists and is no directory; it cannot take the mount")
        return path

    def gateway_argv(self) -> list[str]:
        assert self.namespace is not None
        mounts: list[str] = []
        # Files are mounted into a tmpfs over their directory, so that directory holds exactly the
        # mounted files, as in the container; it must not hold anything of the host's.
        file_dirs = sorted({str(PurePosixPath(bind.target).parent) for bind in self.gateway_spec.binds})
        for directory in file_dirs:
            path = self._ensure_mount_point(PurePosixPath(directory))
            if path not in self._created_dirs and any(path.iterdir()):
                raise StackError(f"{path} holds files of this machine; the harness will not mount over it")
            mounts += ["--tmpfs", directory]
        for bind in self.gateway_spec.binds:
            if not bind.source.exists():
                raise StackError(f"bind mount source {bind.source} does not exist")
            mounts += ["--bind", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        for volume in self.gateway_spec.volumes:
            self._ensure_mount_point(PurePosixPath(volume.target))
            mounts += [
                "--bind",
                f"{self.volume_dirs[volume.volume]}:{volume.target}" + (":ro" if volume.read_only else ""),
            ]
        return self.namespace.exec_argv(
            [
                self.python,
                "-m",
                "e2e.mountns",
                "--host-mnt-ns",
                current_mount_namespace(),
                *mounts,
                "--chdir",
                str(PROJECT_ROOT),
                "--",
                self.python,
                "-m",
                GATEWAY_MODULE,
            ]
        )

    def start_gateway(self) -> ManagedProcess:
        self.gateway = self._process("gateway", self.gateway_argv(), self.env(self.gateway_spec.environment))
        return self.gateway

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Seconds from the gateway's start until /healthz answers 200."""
        assert self.gateway is not None
        deadline = self.gateway.started_at + timeout
        while True:
            if not self.gateway.alive():
                raise StackError(f"the gateway exited ({self.gateway.popen.returncode})")
            answer = self.ask(
                {"op": "http", "method": "GET", "url": f"{self.base_url}/healthz", "timeout": 2}
            )
            if answer.get("status") == 200:
                return time.monotonic() - self.gateway.started_at
            if time.monotonic() > deadline:
                raise StackError(f"the gateway is not healthy {timeout:.0f} s after its start: {answer}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self.gateway is not None:
            self.gateway.stop()
        for process in self.fixture_processes.values():
            process.stop()
        if self.namespace is not None:
            own = self.namespace.name
            self.namespace.delete()
            self.namespace = None
            if not other_runs_active(own):
                for directory in self._created_dirs:
                    try:
                        directory.rmdir()
                    except OSError:
                        pass
                self._created_dirs.clear()

    # -- talking to the gateway --------------------------------------------------------------------

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.probe is None:
            raise StackError("the stack is not started")
        return self.probe.ask(request)

    def request(
        self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        answer = self.ask(
            {
                "op": "http",
                "method": method,
                "url": f"{self.base_url}{path}",
                "body": body,
                "headers": dict(headers or {}),
                "timeout": 5,
            }
        )
        if "error" in answer:
            raise StackError(f"{method} {path}: {answer['error']}")
        text = answer.get("body", "")
        try:
            return int(answer["status"]), json.loads(text) if text else None
        except json.JSONDecodeError:
            return int(answer["status"]), text

    def gateway_log(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.logs_dir / "gateway.log", lines)
