"""What the bundle's compose file says about how to run each service, read for a run without Docker.

Only the parts a process-based run needs: environment, bind mounts, named volumes, container
ports, profiles and command. Long and short compose syntax are both understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from delivery.edge_bundle import FIXTURES_PROFILE, GATEWAY_SERVICE


class ComposeError(ValueError):
    """The compose file asks for something a process-based run cannot reproduce."""


@dataclass(frozen=True)
class BindMount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    environment: dict[str, str] = field(default_factory=dict)
    binds: tuple[BindMount, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    ports: tuple[int, ...] = ()
    profiles: tuple[str, ...] = ()
    command: tuple[str, ...] | None = None


def _environment(raw: Any, service: str) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(key): "" if value is None else str(value) for key, value in raw.items()}
    if isinstance(raw, list):
        pairs = [str(item).split("=", 1) for item in raw]
        return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}
    raise ComposeError(f"services.{service}.environment: neither a mapping nor a list")


def _mounts(
    raw: Any, service: str, project_dir: Path, named: set[str]
) -> tuple[list[BindMount], list[VolumeMount]]:
    binds: list[BindMount] = []
    volumes: list[VolumeMount] = []
    for index, entry in enumerate(raw or []):
        where = f"services.{service}.volumes[{index}]"
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) < 2:
                raise ComposeError(f"{where}: anonymous volumes are not supported")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            kind = entry.get("type", "volume")
            source, target = entry.get("source"), entry.get("target")
            read_only = bool(entry.get("read_only", False))
        if not target or not str(target).startswith("/"):
            raise ComposeError(f"{where}: the target must be an absolute path")
        if kind == "bind":
            path = Path(str(source)).expanduser()
            binds.append(BindMount((project_dir / path).resolve(), str(target), read_only))
        elif kind == "volume":
            if source not in named:
                raise ComposeError(f"{where}: volume {source!r} is not declared under volumes:")
            volumes.append(VolumeMount(str(source), str(target), read_only))
        else:
            raise ComposeError(f"{where}: mount type {kind!r} is not supported")
    return binds, volumes


def _env_files(raw: Any, service: str, project_dir: Path) -> dict[str, str]:
    """What ``env_file`` adds to the environment (the service's ``environment`` wins, as in compose)."""
    entries = [raw] if isinstance(raw, str) else list(raw or [])
    values: dict[str, str] = {}
    for index, entry in enumerate(entries):
        path = entry if isinstance(entry, str) else entry.get("path") if isinstance(entry, Mapping) else None
        if not path:
            raise ComposeError(f"services.{service}.env_file[{index}]: neither a path nor a mapping with one")
        file = (project_dir / str(path)).resolve()
        if not file.is_file():
            raise ComposeError(f"services.{service}.env_file[{index}]: {file} does not exist")
        values.update({key: value or "" for key, value in dotenv_values(file).items()})
    return values


def _ports(raw: Any, service: str) -> tuple[int, ...]:
    ports: list[int] = []
    for entry in raw or []:
        if isinstance(entry, Mapping):
            ports.append(int(entry["target"]))
        else:
            # "published:target[/proto]" or "target"
            ports.append(int(str(entry).split("/")[0].split(":")[-1]))
    return tuple(ports)


def read_services(compose: Mapping[str, Any], project_dir: Path) -> dict[str, Service]:
    """Every service of the compose document; relative bind sources resolve against ``project_dir``."""
    named = set((compose.get("volumes") or {}).keys())
    services: dict[str, Service] = {}
    for name, spec in (compose.get("services") or {}).items():
        binds, volumes = _mounts(spec.get("volumes"), name, project_dir, named)
        command = spec.get("command")
        if isinstance(command, str):
            raise ComposeError(f"services.{name}.command: use the exec (list) form")
        services[name] = Service(
            name=name,
            environment={
                **_env_files(spec.get("env_file"), name, project_dir),
                **_environment(spec.get("environment"), name),
            },
            binds=tuple(binds),
            volumes=tuple(volumes),
            ports=_ports(spec.get("ports"), name),
            profiles=tuple(spec.get("profiles") or ()),
            command=tuple(str(part) for part in command) if command is not None else None,
        )
    return services


def gateway_service(services: Mapping[str, Service]) -> Service:
    try:
        return services[GATEWAY_SERVICE]
    except KeyError:
        raise ComposeError(f"the compose file has no {GATEWAY_SERVICE!r} service") from None


def fixture_services(services: Mapping[str, Service]) -> list[Service]:
    return [service for service in services.values() if FIXTURES_PROFILE in service.profiles]


@dataclass(frozen=True)
class FixtureCommand:
    """A fixture service's command, split into what the harness keeps and what it maps."""

    device_type: str
    port: int
    unit_id: int
    module: str


def parse_fixture_command(service: Service) -> FixtureCommand:
    command = list(service.command or ())
    if len(command) < 3 or command[1] != "-m":
        raise ComposeError(f"services.{service.name}.command: expected <python> -m <module> ...")
    options: dict[str, str] = {}
    rest = command[3:]
    if len(rest) % 2:
        raise ComposeError(f"services.{service.name}.command: options must come in --name value pairs")
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        options[flag] = value
    if "--type" not in options:
        raise ComposeError(f"services.{service.name}.command: no --type")
    return FixtureCommand(
        device_type=options["--type"],
        port=int(options.get("--port", "502")),
        unit_id=int(options.get("--unit-id", "1")),
        module=command[2],
    )
