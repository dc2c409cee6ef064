"""Child processes of the local stack, each in its own process group so stopping leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests


class ServiceFailed(RuntimeError):
    """A service exited or did not become healthy in time."""


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    url: str
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The service's own output goes to its log file, so the terminal keeps the stack's summary.
        log = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("ab")
        # Own session = own process group: a signal to the group reaches the service's children too
        # (dagster dev starts its webserver and daemon as grandchildren).
        try:
            self.process = subprocess.Popen(
                list(self.argv),
                env={**os.environ, **self.env},
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
            )
        finally:
            if log is not None:
                log.close()

    def wait_healthy(self, timeout: float, should_stop: Callable[[], bool] | None = None) -> bool:
        """True once the health URL answers; False when ``should_stop`` says the stack is stopping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Checked on every poll, so Ctrl-C during a slow start (or a restart) is not held up.
            if should_stop is not None and should_stop():
                return False
            if self.exited():
                where = f"; see {self.log_path}" if self.log_path else ""
                raise ServiceFailed(
                    f"{self.name} exited with code {self.process.returncode if self.process else '?'}{where}"
                )
            try:
                if requests.get(self.health_url, timeout=1).status_code < 500:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise ServiceFailed(f"{self.name} did not answer {self.health_url} within {timeout:.0f} s")

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def group_alive(self) -> bool:
        """Whether any process of the service's group is left (its leader or what it started)."""
        return self.process is not None and process_group_alive(self.process.pid)

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, grace_seconds: float = 10.0) -> None:
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        # Grandchildren may outlive the group leader; whatever is left of the group is killed.
        self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # Until the killed grandchildren are really gone they still hold their ports, and a
        # restart of the service would fail to bind them.
        deadline = time.monotonic() + 5
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def process_group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        # No procfs (macOS): the signal-0 probe, which also counts zombies not yet reaped.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # there, only not ours to signal
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the fields after the last ")" do not.
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
