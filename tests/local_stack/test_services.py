"""local_stack.services: a service stops with its whole process group; an early exit is a named failure."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from local_stack.isolated import child_pids, group_alive
from local_stack.services import Service, ServiceFailed
from tests.conftest import wait_for


def test_stop_ends_the_whole_process_group_even_a_grandchild_that_ignores_sigterm() -> None:
    # The background grandchild ignores SIGTERM, so only the SIGKILL to the group after the
    # leader has gone can end it: exactly the case of dagster dev's webserver and daemon.
    service = Service(
        "sleeper",
        ["sh", "-c", "(trap '' TERM; exec sleep 300) & sleep 300"],
        url="http://127.0.0.1:9",
        health_url="http://127.0.0.1:9/",
    )
    service.start()
    assert service.process is not None
    leader = service.process.pid
    try:
        wait_for("the sleeper and its grandchild", lambda: len(child_pids(leader)) == 2, 10.0, interval=0.05)
        assert group_alive(leader)
        service.stop(grace_seconds=2)
        assert service.exited()
        wait_for("the group to end", lambda: not group_alive(leader), 5.0, interval=0.05)
    finally:
        service.signal_group(signal.SIGKILL)


def test_wait_healthy_names_the_service_that_exited_early(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    service = Service("early-exit", ["sh", "-c", "exit 3"], url=url, health_url=f"{url}/healthz")
    service.start()
    with pytest.raises(ServiceFailed, match=r"early-exit exited with code 3"):
        service.wait_healthy(30)


def test_wait_healthy_names_the_service_that_never_answers(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    service = Service("silent", ["sleep", "300"], url=url, health_url=f"{url}/healthz")
    service.start()
    try:
        with pytest.raises(ServiceFailed, match=r"silent did not answer .*/healthz within 1 s"):
            service.wait_healthy(1)
    finally:
        service.stop(grace_seconds=2)
    assert service.exited()
