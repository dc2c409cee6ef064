"""local_stack.supervisor: a crashed service is restarted alone, within a bound; a stop stops everything.

Fast tests run tiny HTTP servers (``python -c``) as services; the slow one kills the real
stack's embedded AWS and reads back what was written before.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from local_stack.isolated import IsolatedStack, child_pids
from local_stack.services import Service, process_group_alive
from local_stack.supervisor import RestartBudget, Supervisor, describe_window
from tests.conftest import wait_for

# What the fake services share: a handler answering 200 on every GET.
OK_HANDLER = """
import http.server, os, sys, threading, time
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
"""
# Answers until killed; with a marker path argument, only the first run (no marker yet) listens
# and later runs just sleep: a restart that never becomes healthy.
FAKE_SERVER = (
    OK_HANDLER
    + """
port, marker = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""
if marker and os.path.exists(marker):
    time.sleep(300)
if marker:
    open(marker, "w").close()
http.server.ThreadingHTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""
)
# Answers for a moment, then exits with 3: a service that keeps crashing.
FLAKY_SERVER = (
    OK_HANDLER
    + """
threading.Timer(1.2, os._exit, (3,)).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""
)


def fake_service(
    name: str, port: int, tmp_path: Path, *args: str, code: str = FAKE_SERVER, wrapped: bool = False
) -> Service:
    """A fake service on ``port``; ``wrapped``: behind a shell, so the server is a grandchild (like dagster's)."""
    argv = [sys.executable, "-c", code, str(port), *args]
    if wrapped:
        argv = ["sh", "-c", '"$@" & wait', "sh", *argv]
    url = f"http://127.0.0.1:{port}"
    return Service(name, argv, url, f"{url}/healthz", log_path=tmp_path / f"{name}.log")


class Run:
    """A supervisor watching in a thread, with what it printed; ``stop()`` is Ctrl-C."""

    def __init__(self, services: list[Service], **options: float) -> None:
        self.lines: list[str] = []
        self.stopping = threading.Event()
        self.supervisor = Supervisor(
            services,
            max_restarts=int(options.pop("max_restarts", 5)),
            window_seconds=options.pop("window_seconds", 600.0),
            should_stop=self.stopping.is_set,
            health_timeout=options.pop("health_timeout", 15.0),
            poll_seconds=0.05,
            say=self.lines.append,
            complain=self.lines.append,
        )
        self.code: int | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        self.code = self.supervisor.watch()

    def start(self) -> None:
        assert self.supervisor.start_all()
        self._thread.start()

    def wait(self, timeout: float = 20.0) -> int | None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the supervisor still watches: {self.lines}"
        return self.code

    def stop(self) -> None:
        self.stopping.set()
        self.wait()
        self.supervisor.stop_all()

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]


@pytest.fixture
def runs() -> Iterator[Callable[..., Run]]:
    made: list[Run] = []

    def make(services: list[Service], **options: float) -> Run:
        run = Run(services, **options)
        made.append(run)
        return run

    yield make
    for run in made:
        run.stopping.set()
        run.supervisor.stop_all()


def test_a_killed_service_is_restarted_and_the_other_keeps_its_process(
    runs: Callable[..., Run], free_port: Callable[[], int], tmp_path: Path
) -> None:
    # "crashy" serves from a grandchild, as dagster dev does: the grandchild holds the port after
    # its leader is killed, so the restart only binds once the supervisor has killed it too.
    crashy = fake_service("crashy", free_port(), tmp_path, wrapped=True)
    steady = fake_service("steady", free_port(), tmp_path)
    run = runs([crashy, steady])
    run.start()
    assert crashy.process is not None and steady.process is not None
    old_leader, steady_pid = crashy.process.pid, steady.process.pid
    wait_for("crashy's server", lambda: len(child_pids(old_leader)) == 1, 15.0, interval=0.05)
    old_server = child_pids(old_leader)[0]

    os.kill(old_leader, signal.SIGKILL)
    wait_for("crashy started again", lambda: len(run.matching(r"^crashy: ")) == 2, 15.0, interval=0.05)

    assert run.matching(r"^crashy stopped") == [
        f"crashy stopped unexpectedly (exit code -9, see {crashy.log_path}); restarting it (1 of 5 in 10 min)"
    ]
    assert crashy.process.pid != old_leader and crashy.process.poll() is None
    # The grandchild that held the port went with its leader (a zombie at most, until init reaps it).
    assert not process_group_alive(old_leader)
    assert (
        not Path(f"/proc/{old_server}").exists()
        or Path(f"/proc/{old_server}/stat").read_text().split(") ")[1][0] == "Z"
    )
    # The other service was left alone: same process, never restarted, still answering.
    assert steady.process.pid == steady_pid and steady.process.poll() is None
    assert run.matching(r"^steady") == [f"steady: {steady.url}"]
    assert crashy.wait_healthy(5) and steady.wait_healthy(5)

    run.stop()
    assert run.code == 0
    assert not process_group_alive(crashy.process.pid) and not process_group_alive(steady_pid)


@pytest.mark.parametrize("max_restarts", [0, 2])
def test_a_service_that_keeps_crashing_stops_the_stack_past_the_bound(
    runs: Callable[..., Run], free_port: Callable[[], int], tmp_path: Path, max_restarts: int
) -> None:
    flaky = fake_service("flaky", free_port(), tmp_path, code=FLAKY_SERVER)
    steady = fake_service("steady", free_port(), tmp_path)
    run = runs([flaky, steady], max_restarts=max_restarts, window_seconds=600.0)
    run.start()
    assert run.wait() == 1
    restarts = run.matching(r"^flaky stopped unexpectedly .*restarting it")
    assert [line.rsplit("(", 1)[1] for line in restarts] == [
        f"{n} of {max_restarts} in 10 min)" for n in range(1, max_restarts + 1)
    ]
    assert run.lines[-1] == (
        f"flaky stopped unexpectedly (exit code 3, see {flaky.log_path}); it was restarted {max_restarts} times "
        "within 10 min already (supervisor.max_restarts, supervisor.restart_window_seconds); stopping the stack"
    )
    run.supervisor.stop_all()
    assert steady.process is not None and not process_group_alive(steady.process.pid)


def test_restarts_that_never_become_healthy_count_against_the_bound(
    runs: Callable[..., Run], free_port: Callable[[], int], tmp_path: Path
) -> None:
    marker = tmp_path / "started-once"
    service = fake_service("stuck", free_port(), tmp_path, str(marker))
    run = runs([service], max_restarts=2, health_timeout=1.0)
    run.start()
    assert service.process is not None
    os.kill(service.process.pid, signal.SIGKILL)
    assert run.wait() == 1
    assert [line.split(";")[0] for line in run.lines[1:]] == [
        f"stuck stopped unexpectedly (exit code -9, see {service.log_path})",
        f"stuck did not come back (no answer at {service.health_url} within 1 s, see {service.log_path})",
        f"stuck did not come back (no answer at {service.health_url} within 1 s, see {service.log_path})",
    ]
    assert run.lines[-1].endswith(
        "it was restarted 2 times within 10 min already "
        "(supervisor.max_restarts, supervisor.restart_window_seconds); stopping the stack"
    )
    # The last attempt, which never answered, was killed before the supervisor gave up.
    assert not process_group_alive(service.process.pid)


def test_a_stop_during_a_restart_leaves_no_process_behind(
    runs: Callable[..., Run], free_port: Callable[[], int], tmp_path: Path
) -> None:
    marker = tmp_path / "started-once"
    service = fake_service("stuck", free_port(), tmp_path, str(marker), wrapped=True)
    other = fake_service("other", free_port(), tmp_path)
    run = runs([service, other], health_timeout=60.0)
    run.start()
    assert service.process is not None and other.process is not None
    first = service.process.pid
    os.kill(first, signal.SIGKILL)
    # The restart is under way (and would wait a minute for an answer) when Ctrl-C comes.
    wait_for(
        "the restart under way",
        lambda: (
            service.process is not None
            and service.process.pid != first
            and len(child_pids(service.process.pid)) == 1
        ),
        15.0,
        interval=0.05,
    )
    restarted = service.process.pid
    started = time.monotonic()
    run.stop()
    # Well below the restart's 60 s health timeout it would otherwise sit out (loaded CI machines
    # have taken 20 s to stop the fakes).
    assert time.monotonic() - started < 30
    assert run.code == 0
    assert run.matching(r"^stuck: ") == [f"stuck: {service.url}"]  # only the first start answered
    for pgid in (first, restarted, other.process.pid):
        assert not process_group_alive(pgid)


def test_restarts_older_than_the_window_no_longer_count() -> None:
    now = [1000.0]
    budget = RestartBudget(2, 600.0, clock=lambda: now[0])
    assert (budget.take("dagster"), budget.take("dagster"), budget.take("dagster")) == (1, 2, None)
    assert budget.take("api") == 1  # each service has its own budget
    now[0] += 599
    assert budget.take("dagster") is None
    now[0] += 2
    assert budget.take("dagster") == 1
    assert budget.describe() == "2 in 10 min"
    assert describe_window(90) == "90 s" and describe_window(3600) == "60 min"


# --- the real stack -------------------------------------------------------------------------

FAST_EDP = {"standins": {"edp": {"queued_seconds": 0.5, "running_seconds": 0.5}}}


@pytest.mark.slow
def test_the_real_stack_restarts_its_killed_aws_with_the_objects_written_before(tmp_path: Path) -> None:
    with IsolatedStack(
        tmp_path / "stack", overrides=FAST_EDP, env={"AWS_EC2_METADATA_DISABLED": "true"}
    ) as stack:
        assert stack.settings is not None
        bucket = stack.settings.artifacts.bucket
        s3 = stack.boto3_client("s3")
        s3.put_object(
            Bucket=bucket,
            Key="orders/cfg-1/config.json",
            Body=b'{"cfg_id": "cfg-1"}',
            ContentType="application/json",
        )
        apk_key = stack.publish_apk("1.0.0")
        before = stack.service_pids()

        os.kill(before["aws"], signal.SIGKILL)
        stack.wait_for_output(
            re.compile(r"^aws stopped unexpectedly \(exit code -9, .*restarting it \(1 of 5 in 10 min\)$"),
            timeout=30,
        )
        stack.wait_for_output(re.compile(r"^aws: http://"), count=2, timeout=60)

        stored = s3.get_object(Bucket=bucket, Key="orders/cfg-1/config.json")
        assert (stored["Body"].read(), stored["ContentType"]) == (b'{"cfg_id": "cfg-1"}', "application/json")
        assert s3.head_object(Bucket=bucket, Key=apk_key)["ContentLength"] > 0
        after = stack.service_pids()
        assert after["aws"] != before["aws"]
        assert {name: pid for name, pid in after.items() if name != "aws"} == {
            name: pid for name, pid in before.items() if name != "aws"
        }
        # The API kept running and still answers.
        assert requests.get(f"{stack.api_url}/healthz", timeout=10).status_code == 200
