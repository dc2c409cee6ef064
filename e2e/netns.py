"""A Linux network namespace of its own per run, with compose-like name resolution.

The namespace has only its own loopback interface. Every service gets a loopback address
(127.0.10.x) and ``/etc/netns/<ns>/hosts`` maps the service names to them: ``ip netns exec``
bind-mounts that file over ``/etc/hosts`` for the processes it starts, so the names resolve through
the system resolver, as compose's DNS resolves service names in a compose network.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

NETNS_PREFIX = "ems-e2e-"
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
# Loopback addresses only: the namespace never holds a routable address.
SERVICE_ADDRESS_BASE = "127.0.10."
FIRST_SERVICE_HOST = 10


class NamespaceError(RuntimeError):
    """The namespace cannot be set up (not root, no iproute2, ...)."""


def require_root_and_iproute2() -> str:
    """The path of ``ip``; raises NamespaceError with what is missing."""
    if os.geteuid() != 0:
        raise NamespaceError(
            "the e2e harness needs root: it creates a network namespace (ip netns add) and mounts inside it"
        )
    ip = shutil.which("ip")
    if ip is None:
        raise NamespaceError("the e2e harness needs iproute2's `ip` (Debian package iproute2)")
    return ip


def service_addresses(names: Sequence[str]) -> dict[str, str]:
    """A loopback address per service name, 127.0.10.10 upwards, in the given order."""
    if len(names) > 245:
        raise NamespaceError("too many services for 127.0.10.0/24")
    return {name: f"{SERVICE_ADDRESS_BASE}{FIRST_SERVICE_HOST + index}" for index, name in enumerate(names)}


def hosts_file(addresses: Mapping[str, str]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for name, address in addresses.items()]
    return "\n".join(lines) + "\n"


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


class NetworkNamespace:
    """``ip netns add`` on create(), everything undone by delete(), which is safe to call twice."""

    def __init__(self, addresses: Mapping[str, str], name: str | None = None) -> None:
        self.ip = require_root_and_iproute2()
        self.name = name or f"{NETNS_PREFIX}{secrets.token_hex(4)}"
        self.addresses = dict(addresses)
        self._created = False
        self._created_etc_netns = False

    @property
    def etc_dir(self) -> Path:
        return NETNS_ETC / self.name

    def create(self) -> None:
        result = _run([self.ip, "netns", "add", self.name])
        if result.returncode != 0:
            raise NamespaceError(f"ip netns add {self.name}: {result.stderr.strip()}")
        self._created = True
        result = _run([self.ip, "-n", self.name, "link", "set", "lo", "up"])
        if result.returncode != 0:
            raise NamespaceError(f"ip -n {self.name} link set lo up: {result.stderr.strip()}")
        if not NETNS_ETC.exists():
            NETNS_ETC.mkdir(mode=0o755)
            self._created_etc_netns = True
        self.etc_dir.mkdir(mode=0o755)
        (self.etc_dir / "hosts").write_text(hosts_file(self.addresses))

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return [self.ip, "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        if not self._created:
            return []
        result = _run([self.ip, "netns", "pids", self.name])
        return [int(line) for line in result.stdout.split() if line.strip().isdigit()]

    def kill_remaining(self, grace_seconds: float = 3.0) -> list[int]:
        """Processes still in the namespace (only ones this run started can be there): TERM, then KILL."""
        remaining = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in remaining:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_seconds
            while remaining and time.monotonic() < deadline:
                time.sleep(0.1)
                remaining = self.pids()
            if not remaining:
                break
        return remaining

    def delete(self) -> None:
        if self._created:
            self.kill_remaining()
            _run([self.ip, "netns", "del", self.name])
            self._created = False
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        if self._created_etc_netns:
            try:
                NETNS_ETC.rmdir()
            except OSError:
                pass  # another run's namespace lives there now
            self._created_etc_netns = False


def other_runs_active(own: str) -> bool:
    """Whether another e2e run has a namespace right now."""
    if not NETNS_RUN.is_dir():
        return False
    return any(entry.name.startswith(NETNS_PREFIX) and entry.name != own for entry in NETNS_RUN.iterdir())
