"""Order latency and cost of the local stack, from the answer of POST /submit to the delivery email.

    .venv/bin/python bench/order_latency.py [--sequential 5] [--bursts 20,50] [--redeliver 20] [--keep-dir DIR]

One invocation, one stack (``python -m local_stack`` on free ports, state in one directory, the
sample APK published first), these phases in turn:

1. idle: the stack's CPU per second with nothing to do (sensors, daemon, webserver);
2. one order at a time: K orders, each submitted once the previous one was emailed;
3. bursts: N orders submitted back to back, for each N of ``--bursts``;
4. re-delivery: R of the delivered orders re-delivered through the API at once;
5. the floor, after the stack stopped: a no-op partitioned asset (bench/noop_definitions.py) in a
   second ``dagster dev`` with the stack's instance settings, (a) launched over GraphQL and
   (b) requested by a sensor.

Per phase: seconds per order until ``<cfg_id>-v<N>.eml`` is in the outbox, the CPU seconds of the
whole stack's process tree per order (bench/stack_cpu.py), and where each order's time went, from
its Dagster runs' step times and its EDP job (bench/order_phases.py). Then a summary of all
figures. Nothing is asserted: see bench/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy.exc import SQLAlchemyError

from bench import stack_cpu
from bench.order_phases import (
    BUILD,
    ORDER_PHASES,
    REDELIVERY_PHASES,
    NoRuns,
    OrderPhases,
    OrderTrace,
    median_by_name,
    order_phases,
    redelivery_phases,
)
from bench.order_records import (
    GraphQLError,
    edp_jobs,
    graphql,
    runs_of_partition,
    wait_until_no_run_in_progress,
)
from bench.stack_cpu import CpuDelta, CpuSnapshot
from local_stack.isolated import IsolatedStack, StackError, free_loopback_ports
from platform_db import OrderRepository

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXAMPLES = PROJECT_ROOT / "examples"
TARGETS = ("cloud", "onprem")
INSTANCE_TEMPLATE = PROJECT_ROOT / "local_stack" / "dagster.local.yaml"
NOOP_DEFINITIONS = PROJECT_ROOT / "bench" / "noop_definitions.py"
NOOP_JOB = "noop_job"
NOOP_PARTITIONS = "noop"
OUTBOX_POLL_SECONDS = 0.1
STATUS_POLL_SECONDS = 5.0
RUN_POLL_SECONDS = 0.1
DONE_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
# Statuses an order does not leave by itself, and in which no (further) email comes.
STUCK_STATUSES = {"failed", "email_unknown"}
# High enough that the API's re-delivery limits never refuse one of the benchmark's.
REDELIVERY_LIMIT = 1_000_000
REDELIVERY_LIMIT_KEYS = ("max_redeliveries_per_order", "max_redeliveries_per_order_per_day")
RUNS_SETTLE_TIMEOUT_SECONDS = 180.0
SUBMIT_TIMEOUT_SECONDS = 30.0
SUBMIT_SENDS = 3
FLEET_REDELIVERY_PATH = "/redeliveries"
GOALS = {"sequential": 18.0, "burst 20": 100.0, "re-delivery": 60.0}


@dataclass
class OrderTiming:
    """One delivery (or re-delivery) being waited for; times are unix seconds."""

    index: int
    target: str
    cfg_id: str
    answered: float
    version: int = 1
    # Seconds from sending the request to its answer, and how many sends timed out before it.
    answer_seconds: float = 0.0
    resends: int = 0
    emailed: float | None = None
    status: str = "submitted"
    error: str | None = None

    @property
    def outbox_name(self) -> str:
        return f"{self.cfg_id}-v{self.version}.eml"

    @property
    def took(self) -> float | None:
        return None if self.emailed is None else self.emailed - self.answered


@dataclass
class PhaseResult:
    """One phase of the benchmark: its orders, CPU and where the time went."""

    name: str
    orders: list[OrderTiming]
    cpu: CpuDelta
    # First answer -> last email (of those emailed).
    span: float | None
    phases: dict[str, OrderPhases] = field(default_factory=dict)
    redelivery_phases: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[float]:
        return [t.took for t in self.orders if t.took is not None]

    @property
    def failed(self) -> list[OrderTiming]:
        return [t for t in self.orders if t.took is None]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of all at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> str:
    if not values:
        return "no values"
    return (
        f"n={len(values)}  median {statistics.median(values):6.2f} s  "
        f"p95 {percentile(values, 0.95):6.2f} s  max {max(values):6.2f} s  min {min(values):6.2f} s"
    )


# -- waiting for emails -----------------------------------------------------------------------


class OrderStatuses:
    """Order status straight from platform_db, to notice an order that will never be emailed.

    Read from the benchmark's own process: polling GET /orders would add the API's (and Dagster
    instance reads') CPU to the figures being measured.
    """

    def __init__(self, url: str) -> None:
        self.repository = OrderRepository.from_url(url)

    def stuck(self, timing: OrderTiming) -> tuple[str, str | None] | None:
        try:
            order = self.repository.get(timing.cfg_id)
        except SQLAlchemyError:
            # A busy database is no verdict on the order: the outbox, or the next look, decides.
            return None
        if order is None:
            return None
        if order.status.value in STUCK_STATUSES:
            return order.status.value, order.last_error
        # A failed re-delivery leaves the order delivered and says why here.
        if timing.version > 1 and order.attempt_error:
            return "re-delivery failed", order.attempt_error
        return None

    def close(self) -> None:
        self.repository.dispose()


def wait_for_emails(
    stack: IsolatedStack, statuses: OrderStatuses, timings: Sequence[OrderTiming], timeout: float
) -> None:
    """Until every order's email is in the outbox, has failed, or ``timeout`` s have passed."""
    outbox = stack.outbox_dir
    deadline = time.monotonic() + timeout
    next_status_poll = time.monotonic() + STATUS_POLL_SECONDS
    while True:
        pending = [t for t in timings if t.emailed is None and t.status == "submitted"]
        for timing in pending:
            with contextlib.suppress(FileNotFoundError):
                # The file's mtime, not when the poll saw it: the email's time to within the write.
                timing.emailed = (outbox / timing.outbox_name).stat().st_mtime
                timing.status = "emailed"
        pending = [t for t in pending if t.emailed is None]
        if not pending:
            return
        if time.monotonic() > deadline:
            for timing in pending:
                timing.status = f"timeout after {timeout:.0f} s"
                with contextlib.suppress(StackError, requests.RequestException):
                    timing.status += f" ({stack.order(timing.cfg_id)['status']})"
            return
        if time.monotonic() >= next_status_poll:
            for timing in pending:
                stuck = statuses.stuck(timing)
                if stuck is not None:
                    timing.status, timing.error = stuck
            next_status_poll = time.monotonic() + STATUS_POLL_SECONDS
        time.sleep(OUTBOX_POLL_SECONDS)


# -- the phases -------------------------------------------------------------------------------


@dataclass
class Bench:
    """The running stack and what every phase needs of it."""

    stack: IsolatedStack
    statuses: OrderStatuses
    dagster_url: str
    edp_state_dir: Path
    timeout: float
    examples: dict[str, dict[str, Any]]
    batch: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    submitted: int = 0

    @property
    def root_pid(self) -> int:
        assert self.stack.process is not None
        return self.stack.process.pid

    @property
    def website_headers(self) -> dict[str, str]:
        """What the website sends with POST /submit (none where the stage needs no credential)."""
        return self.stack.authorization("website")

    @property
    def operator_headers(self) -> dict[str, str]:
        """What an operator sends with a re-delivery (none where the stage needs no credential)."""
        return self.stack.authorization("operator")

    def submit(self, index: int) -> OrderTiming:
        """POST /submit as a careful client does: a send that times out is sent again under the
        same Idempotency-Key (the order is stored once); the order's clock starts at the answer."""
        target = TARGETS[self.submitted % len(TARGETS)]
        key = f"bench-{self.batch}-{self.submitted}"
        self.submitted += 1
        error = ""
        began = time.monotonic()
        for resends in range(SUBMIT_SENDS):
            try:
                answer = requests.post(
                    f"{self.stack.api_url}/submit",
                    json=self.examples[target],
                    headers={**self.website_headers, "Idempotency-Key": key},
                    timeout=SUBMIT_TIMEOUT_SECONDS,
                )
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            answered = time.time()
            if answer.status_code != 200:
                error = f"answered {answer.status_code}: {answer.text[:200]}"
                break
            return OrderTiming(
                index=index,
                target=target,
                cfg_id=str(answer.json()["cfg_id"]),
                answered=answered,
                answer_seconds=time.monotonic() - began,
                resends=resends,
            )
        # A refused or unanswered order is a figure of its own, not the end of the run.
        return OrderTiming(
            index=index,
            target=target,
            cfg_id=f"({key})",
            answered=time.time(),
            status="submit failed",
            error=error[:300],
        )

    def settle(self) -> str:
        """Wait until no run is queued or running; a note for the output when that did not happen."""
        try:
            waited = wait_until_no_run_in_progress(self.dagster_url, RUNS_SETTLE_TIMEOUT_SECONDS)
        except (TimeoutError, GraphQLError, requests.RequestException) as exc:
            return f"runs did not settle: {exc}"
        return f"last runs ended {waited:.1f} s after the last email"

    def measured(self, name: str, work: Callable[[], list[OrderTiming]]) -> PhaseResult:
        """Run ``work`` between two CPU snapshots; the second once the phase's runs have ended."""
        before = stack_cpu.snapshot(self.root_pid)
        orders = work()
        note = self.settle()
        after = stack_cpu.snapshot(self.root_pid)
        emailed = [t.emailed for t in orders if t.emailed is not None]
        # Over the orders that were emailed; the ones that were not are listed on their own.
        span = max(emailed) - min(t.answered for t in orders) if emailed else None
        return PhaseResult(
            name=name, orders=orders, cpu=stack_cpu.delta(before, after), span=span, notes=[note]
        )


def sequential_orders(bench: Bench, count: int) -> list[OrderTiming]:
    timings: list[OrderTiming] = []
    for index in range(count):
        timing = bench.submit(index)
        timings.append(timing)
        wait_for_emails(bench.stack, bench.statuses, [timing], bench.timeout)
        took = f"{timing.took:.2f} s" if timing.took is not None else timing.status
        print(f"  order {index} ({timing.target}) {timing.cfg_id}: {took}")
    return timings


def burst_orders(bench: Bench, count: int) -> list[OrderTiming]:
    began = time.monotonic()
    timings = [bench.submit(index) for index in range(count)]
    answers = [t.answer_seconds for t in timings if t.status == "submitted"]
    resent = sum(1 for t in timings if t.resends)
    print(
        f"  {count} submitted in {time.monotonic() - began:.2f} s (answer within median {statistics.median(answers or [0]):.2f} s, "
        f"max {max(answers or [0]):.2f} s; {resent} sent again after a {SUBMIT_TIMEOUT_SECONDS:g} s timeout); waiting for the emails"
    )
    wait_for_emails(bench.stack, bench.statuses, timings, bench.timeout)
    return timings


def fleet_redelivery_field(openapi: dict[str, Any]) -> str | None:
    """The list-of-cfg_ids field of ``POST /redeliveries`` if the API has that fleet endpoint."""
    post = openapi.get("paths", {}).get(FLEET_REDELIVERY_PATH, {}).get("post")
    if not post:
        return None
    schema = post.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = openapi.get("components", {}).get("schemas", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    for name, prop in schema.get("properties", {}).items():
        if prop.get("type") == "array" and prop.get("items", {}).get("type") == "string":
            return str(name)
    return None


def redeliver_orders(
    bench: Bench, delivered: Sequence[OrderTiming], count: int, notes: list[str]
) -> list[OrderTiming]:
    """Re-deliver ``count`` delivered orders at once (in turn, again, when there are fewer)."""
    stack = bench.stack
    versions = collections.Counter[str]()
    timings: list[OrderTiming] = []
    for index in range(count):
        source = delivered[index % len(delivered)]
        versions[source.cfg_id] += 1
        timings.append(
            OrderTiming(
                index=index,
                target=source.target,
                cfg_id=source.cfg_id,
                answered=0.0,
                version=1 + versions[source.cfg_id],
            )
        )
    headers = bench.operator_headers
    try:
        field_name = fleet_redelivery_field(requests.get(f"{stack.api_url}/openapi.json", timeout=10).json())
    except (requests.RequestException, ValueError):
        field_name = None
    began = time.monotonic()
    if field_name is not None and len({t.cfg_id for t in timings}) == len(timings):
        answer = requests.post(
            f"{stack.api_url}{FLEET_REDELIVERY_PATH}",
            json={field_name: [t.cfg_id for t in timings]},
            headers={**headers, "Idempotency-Key": f"bench-fleet-{bench.batch}"},
            timeout=60,
        )
        if answer.ok:
            answered = time.time()
            for timing in timings:
                timing.answered = answered
            notes.append(
                f"one POST {FLEET_REDELIVERY_PATH} ({field_name}: {len(timings)} cfg_ids): {answer.status_code}"
            )
        else:
            notes.append(
                f"POST {FLEET_REDELIVERY_PATH} answered {answer.status_code}, so order by order: {answer.text[:200]}"
            )
            field_name = None
    else:
        field_name = None
    if field_name is None:
        for timing in timings:
            try:
                answer = requests.post(
                    f"{stack.api_url}/orders/{timing.cfg_id}/redeliver",
                    json={"apk": False},
                    headers={**headers, "Idempotency-Key": f"bench-redeliver-{bench.batch}-{timing.index}"},
                    timeout=60,
                )
            except requests.RequestException as exc:
                timing.answered = time.time()
                timing.status, timing.error = "request failed", str(exc)[:300]
                continue
            timing.answered = time.time()
            if answer.status_code != 202:
                timing.status, timing.error = f"refused {answer.status_code}", answer.text[:300]
        notes.append(
            f"{len(timings)} x POST /orders/{{cfg_id}}/redeliver (no fleet endpoint {FLEET_REDELIVERY_PATH})"
        )
    print(f"  {count} re-deliveries requested in {time.monotonic() - began:.2f} s; waiting for the emails")
    wait_for_emails(stack, bench.statuses, timings, bench.timeout)
    return timings


def trace_phases(bench: Bench, result: PhaseResult) -> None:
    """Where the time went for each emailed order of ``result`` (runs and EDP jobs read afterwards)."""
    jobs = edp_jobs(bench.edp_state_dir)
    for timing in result.orders:
        if timing.emailed is None:
            continue
        try:
            runs = runs_of_partition(bench.dagster_url, timing.cfg_id)
        except (GraphQLError, requests.RequestException) as exc:
            result.notes.append(f"runs of {timing.cfg_id} not read: {exc}")
            continue
        if timing.version > 1:
            result.redelivery_phases[f"{timing.cfg_id}-v{timing.version}"] = redelivery_phases(
                timing.answered, timing.emailed, runs
            )
            continue
        try:
            result.phases[timing.cfg_id] = order_phases(
                OrderTrace(
                    submitted=timing.answered,
                    emailed=timing.emailed,
                    runs=tuple(runs),
                    edp=jobs.get(timing.cfg_id),
                )
            )
        except NoRuns as exc:
            result.notes.append(f"{timing.cfg_id}: {exc}")


# -- printing ---------------------------------------------------------------------------------


def print_legend() -> None:
    print("phases of a first delivery (columns below; they sum to submit -> email):")
    for name, meaning in ORDER_PHASES:
        print(f"  {name:<10} {meaning}")
    print("phases of a re-delivery:")
    for name, meaning in REDELIVERY_PHASES:
        print(f"  {name:<10} {meaning}")


def _phase_header() -> str:
    return "".join(f"{name:>10}" for name, _ in ORDER_PHASES)


def _phase_cells(seconds: dict[str, float]) -> str:
    return "".join(f"{seconds.get(name, 0.0):10.2f}" for name, _ in ORDER_PHASES)


def print_cpu(result: PhaseResult, idle_per_second: float | None) -> None:
    cpu, count = result.cpu, max(1, len(result.orders))
    busy = cpu.total / cpu.wall if cpu.wall > 0 else 0.0
    above = (
        ""
        if idle_per_second is None
        else f", {(cpu.total - idle_per_second * cpu.wall) / count:.2f} above idle"
    )
    unit = "re-delivery" if result.name.startswith("re-delivery") else "order"
    print(
        f"  CPU of the stack: {cpu.total:.1f} CPU-s in {cpu.wall:.1f} s ({busy:.2f} CPUs busy on average); "
        f"per {unit}: {cpu.total / count:.2f} CPU-s{above}"
    )
    print(f"    per {unit} by part: {stack_cpu.by_part(cpu, per=count)}")


def print_emailed(result: PhaseResult, start: str, first_start: str) -> None:
    """The times from ``start`` to the email, and how long after ``first_start`` the last was sent."""
    print(f"  {start} -> email: {summary(result.done)}")
    if result.span is not None:
        print(f"  {len(result.done)} of {len(result.orders)} emailed {result.span:.2f} s after {first_start}")


def print_delivery(result: PhaseResult, idle_per_second: float | None, per_order: bool) -> None:
    if per_order:
        print(
            f"  {'#':>2} {'target':<7} {'cfg_id':<36} {'total':>7} {'runs':>4} {'build#':>6}{_phase_header()}"
        )
        for t in result.orders:
            phases = result.phases.get(t.cfg_id)
            if phases is None:
                print(
                    f"  {t.index:>2} {t.target:<7} {t.cfg_id:<36} {t.status}{': ' + t.error if t.error else ''}"
                )
                continue
            build_run = "-" if phases.build_run is None else str(phases.build_run)
            print(
                f"  {t.index:>2} {t.target:<7} {t.cfg_id:<36} {phases.total:7.2f} {phases.runs:>4} {build_run:>6}"
                f"{_phase_cells(phases.seconds)}"
            )
        for t in result.orders:
            phases = result.phases.get(t.cfg_id)
            if phases is None:
                continue
            steps = ", ".join(
                f"{key.removeprefix('order/')} {seconds:.2f}" for key, seconds in phases.step_seconds.items()
            )
            edp = "?" if phases.edp_seconds is None else f"{phases.edp_seconds:.1f} s"
            waited = "; build step waited for EDP in the run" if phases.build_waited_in_run else ""
            print(
                f"  {t.index:>2} steps (s): {steps}; build: {phases.build_in_steps:.2f} s in steps, "
                f"{phases.seconds[BUILD] - phases.build_in_steps:.2f} s between; EDP job {edp}{waited}"
            )
    else:
        for t in result.failed:
            print(f"  not emailed: {t.index} {t.cfg_id}: {t.status}{': ' + t.error if t.error else ''}")
    print_emailed(result, "submit", "the first submit answer")
    if result.phases:
        all_phases = list(result.phases.values())
        runs = collections.Counter(p.runs for p in all_phases)
        build_runs = collections.Counter(p.build_run for p in all_phases)
        print(
            f"  runs per order: {', '.join(f'{n} run(s): {c} orders' for n, c in sorted(runs.items()))}; "
            f"first build step in run #: {', '.join(f'{n}: {c}' for n, c in sorted(build_runs.items(), key=str))}"
        )
        if not per_order:
            print(f"  median per phase (s): {'':>20}{_phase_header()}")
            print(f"  {'':>42}{_phase_cells(median_by_name([p.seconds for p in all_phases]))}")
        in_steps = statistics.median(p.build_in_steps for p in all_phases)
        between = statistics.median(p.seconds[BUILD] - p.build_in_steps for p in all_phases)
        print(f"  build phase, median: {in_steps:.2f} s in steps, {between:.2f} s between steps")
    print_cpu(result, idle_per_second)
    for note in result.notes:
        print(f"  note: {note}")


def print_redelivery(result: PhaseResult, idle_per_second: float | None) -> None:
    for t in result.failed:
        print(f"  not emailed: {t.cfg_id}-v{t.version}: {t.status}{': ' + t.error if t.error else ''}")
    print_emailed(result, "answer", "the first answer")
    if result.redelivery_phases:
        medians = median_by_name(list(result.redelivery_phases.values()))
        print(
            "  median per phase (s): "
            + ", ".join(f"{name} {medians[name]:.2f}" for name, _ in REDELIVERY_PHASES)
        )
    print_cpu(result, idle_per_second)
    for note in result.notes:
        print(f"  note: {note}")


# -- the floor --------------------------------------------------------------------------------


@contextlib.contextmanager
def noop_dagster(work_dir: Path, sensor_interval: int, timeout: float) -> Iterator[tuple[str, Path, int]]:
    """``dagster dev`` over bench/noop_definitions.py with the stack's instance settings; (url, trigger dir, pid)."""
    home = work_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_TEMPLATE.read_text())
    triggers = work_dir / "triggers"
    triggers.mkdir(exist_ok=True)
    (port,) = free_loopback_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = (work_dir / "dagster-noop.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-f",
            str(NOOP_DEFINITIONS),
            "-d",
            str(PROJECT_ROOT),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "DAGSTER_HOME": str(home),
            "BENCH_NOOP_TRIGGER_DIR": str(triggers),
            "BENCH_SENSOR_INTERVAL_SECONDS": str(sensor_interval),
        },
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _noop_job_loaded(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(
                    f"dagster dev for the no-op asset did not come up; see {work_dir / 'dagster-noop.log'}"
                )
            time.sleep(0.5)
        yield url, triggers, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


REPOSITORIES_QUERY = """
query { repositoriesOrError { __typename ... on RepositoryConnection {
  nodes { name location { name } jobs { name } } } } }
"""


WORKSPACE_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _noop_job_loaded(url: str) -> bool:
    """Whether the no-op job is there; a code location that failed to load is an error at once."""
    try:
        entries = graphql(url, WORKSPACE_QUERY)["workspaceOrError"].get("locationEntries", [])
        data = graphql(url, REPOSITORIES_QUERY)
    except (requests.RequestException, GraphQLError, ValueError):
        return False
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "PythonError":
            raise StackError(f"code location {entry['name']} did not load: {loaded.get('message')}")
    nodes = data["repositoriesOrError"].get("nodes", [])
    return any(NOOP_JOB in {job["name"] for job in node["jobs"]} for node in nodes)


def _repository(url: str) -> tuple[str, str]:
    nodes = graphql(url, REPOSITORIES_QUERY)["repositoriesOrError"]["nodes"]
    node = next(node for node in nodes if NOOP_JOB in {job["name"] for job in node["jobs"]})
    return node["location"]["name"], node["name"]


ADD_PARTITION_MUTATION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message } } }
"""

RUNS_BY_PARTITION_QUERY = """
query($key: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
  __typename ... on Runs { results { runId status } } } }
"""


def _wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in DONE_STATUSES:
            return str(status)
        time.sleep(RUN_POLL_SECONDS)
    return "TIMEOUT"


def floor_via_graphql(url: str, runs: int, timeout: float) -> list[tuple[float, str]]:
    """Launch the no-op job over GraphQL, one run after the other: launch -> terminal status."""
    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port), timeout=30)
    location, repository = _repository(url)
    selector = {"repositoryLocationName": location, "repositoryName": repository}
    results: list[tuple[float, str]] = []
    for index in range(runs):
        key = f"graphql-{index}-{uuid.uuid4().hex[:8]}"
        added = graphql(
            url, ADD_PARTITION_MUTATION, {"selector": selector, "name": NOOP_PARTITIONS, "key": key}
        )
        if added["addDynamicPartition"]["__typename"] != "AddDynamicPartitionSuccess":
            raise StackError(f"could not add partition {key}: {added}")
        started = time.monotonic()
        run_id = client.submit_job_execution(
            NOOP_JOB,
            repository_location_name=location,
            repository_name=repository,
            tags={"dagster/partition": key},
        )
        status = _wait_for_run(client, run_id, timeout)
        results.append((time.monotonic() - started, status))
    return results


def floor_via_sensor(url: str, triggers: Path, runs: int, timeout: float) -> list[tuple[float, str]]:
    """Write a trigger file, one after the other: written -> the sensor's run reaches a terminal status."""
    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port), timeout=30)
    results: list[tuple[float, str]] = []
    for index in range(runs):
        key = f"sensor-{index}-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        (triggers / key).touch()
        deadline = started + timeout
        status = "TIMEOUT"
        while time.monotonic() < deadline:
            found = graphql(url, RUNS_BY_PARTITION_QUERY, {"key": key})["runsOrError"].get("results", [])
            if found:
                status = _wait_for_run(client, found[0]["runId"], deadline - time.monotonic())
                break
            time.sleep(RUN_POLL_SECONDS)
        results.append((time.monotonic() - started, status))
    return results


def print_floor(title: str, results: list[tuple[float, str]]) -> list[float]:
    print(title)
    for index, (took, status) in enumerate(results):
        print(f"  run {index}: {took:6.2f} s  {status}")
    done = [took for took, status in results if status == "SUCCESS"]
    print(f"  {summary(done)}")
    return done


# -- main -------------------------------------------------------------------------------------


def parse_bursts(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError("burst sizes are counts of orders, 0 or more")
    return [size for size in sizes if size > 0]


def commit() -> str:
    def git(*args: str) -> str:
        argv = ["git", *args]
        return subprocess.run(
            argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (+ uncommitted changes)" if dirty else head


def measure_idle(root_pid: int, seconds: float) -> CpuDelta:
    before: CpuSnapshot = stack_cpu.snapshot(root_pid)
    time.sleep(seconds)
    return stack_cpu.delta(before, stack_cpu.snapshot(root_pid))


def _row(figure: str, value: str, goal: str = "", met: bool | None = None) -> str:
    verdict = "" if met is None else ("yes" if met else "no")
    return f"  {figure:<58} {value:<30} {goal:<9} {verdict}"


def print_summary(
    revision: str,
    idle: CpuDelta | None,
    results: list[PhaseResult],
    floors: dict[str, list[float]],
    floor_cpu: float | None = None,
) -> None:
    idle_rate = None if idle is None else idle.per_second()
    print(
        f"\n== summary (commit {revision}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end) =="
    )
    print(_row("figure", "value", "goal", None) + "met")
    if idle_rate is not None:
        print(_row("idle CPU of the stack", f"{idle_rate:.3f} CPU-s per s"))
    sequential_median: float | None = None
    for result in results:
        done, count = result.done, len(result.orders)
        is_redelivery = result.name.startswith("re-delivery")
        unit = "re-delivery" if is_redelivery else "order"
        if result.name == "one at a time" and done:
            sequential_median = statistics.median(done)
            goal = GOALS["sequential"]
            print(
                _row(
                    f"one at a time ({count}): median submit -> email",
                    f"{sequential_median:.2f} s",
                    f"<= {goal:g} s",
                    sequential_median <= goal,
                )
            )
        elif done:
            stats = f"{statistics.median(done):.1f} / {percentile(done, 0.95):.1f} / {max(done):.1f} s"
            print(_row(f"{result.name}: per {unit} median / p95 / max", stats))
        if result.span is not None and result.name != "one at a time":
            span_goal = GOALS.get("re-delivery" if is_redelivery else result.name)
            print(
                _row(
                    f"{result.name}: first answer -> all emailed",
                    f"{result.span:.2f} s",
                    "" if span_goal is None else f"<= {span_goal:g} s",
                    None if span_goal is None else result.span <= span_goal,
                )
            )
        if result.failed:
            print(_row(f"{result.name}: not emailed", f"{len(result.failed)} of {count}"))
        per = result.cpu.total / max(1, count)
        above = (
            ""
            if idle_rate is None
            else f" ({(result.cpu.total - idle_rate * result.cpu.wall) / max(1, count):.2f} above idle)"
        )
        print(_row(f"{result.name}: CPU per {unit}", f"{per:.2f} CPU-s{above}"))
        if result.name != "one at a time":
            # All at once, the stack can go no faster than its CPUs get through the work.
            cpus = os.cpu_count() or 1
            print(
                _row(
                    f"{result.name}: CPU-bound minimum ({count} x CPU-s / {cpus} CPUs)",
                    f"{count * per / cpus:.1f} s",
                )
            )
        if result.phases:
            runs = sorted({p.runs for p in result.phases.values()})
            medians = median_by_name([p.seconds for p in result.phases.values()])
            largest = max(medians, key=lambda name: medians[name])
            print(_row(f"{result.name}: runs per order", " or ".join(map(str, runs))))
            print(_row(f"{result.name}: largest phase (median)", f"{largest} {medians[largest]:.2f} s"))
    for name, done in floors.items():
        if done:
            print(_row(f"floor {name}: median run", f"{statistics.median(done):.2f} s"))
    if floor_cpu is not None:
        print(_row("floor (a): CPU per no-op run", f"{floor_cpu:.2f} CPU-s"))
    for name, done in floors.items():
        if done and sequential_median is not None:
            print(
                _row(
                    f"one at a time median / floor {name[:3]}",
                    f"{sequential_median / statistics.median(done):.1f} x",
                )
            )


def main(argv: list[str] | None = None) -> int:
    # Progress shows line by line also when the output goes to a file.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(prog="bench/order_latency.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sequential", type=int, default=5, metavar="K", help="orders one at a time (default 5; 0: skip)"
    )
    parser.add_argument(
        "--bursts",
        type=parse_bursts,
        default=None,
        metavar="N,N",
        help='orders submitted at once, per burst (default "20,50"; "": none)',
    )
    parser.add_argument(
        "--orders", type=int, default=None, metavar="N", help="one burst of N orders (same as --bursts N)"
    )
    parser.add_argument(
        "--redeliver",
        type=int,
        default=20,
        metavar="R",
        help="delivered orders re-delivered at once (default 20; 0: skip)",
    )
    parser.add_argument(
        "--edp-latency",
        type=float,
        default=None,
        metavar="S",
        help="EDP stand-in: seconds queued and again seconds running (default: cfg.defaults.yml)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="idle CPU sample after startup (default 10; 0: skip)",
    )
    parser.add_argument(
        "--floor-runs", type=int, default=5, help="no-op runs per floor measurement (0: skip)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds to wait for the emails of each order / burst / re-delivery (default 900)",
    )
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        help="keep all state and logs in DIR (default: a temp dir, removed)",
    )
    args = parser.parse_args(argv)
    if args.orders is not None and args.bursts is not None:
        parser.error("--orders N is --bursts N: give one of them")
    bursts: list[int] = (
        [args.orders] if args.orders is not None else (args.bursts if args.bursts is not None else [20, 50])
    )
    if any(size < 1 for size in bursts) or args.sequential < 0 or args.redeliver < 0:
        parser.error("counts of orders are 0 or more (--orders at least 1)")

    work_dir = args.keep_dir.resolve() if args.keep_dir else Path(tempfile.mkdtemp(prefix="order-latency-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    # The API refuses re-deliveries past api.max_redeliveries_per_order(_per_day); lifted here so
    # the re-delivery phase measures the pipeline, not the limit.
    overrides: dict[str, Any] = {"api": dict.fromkeys(REDELIVERY_LIMIT_KEYS, REDELIVERY_LIMIT)}
    if args.edp_latency is not None:
        overrides["standins"] = {
            "edp": {"queued_seconds": args.edp_latency, "running_seconds": args.edp_latency}
        }
    revision = commit()
    examples = {target: json.loads((EXAMPLES / f"order-{target}.json").read_text()) for target in TARGETS}
    results: list[PhaseResult] = []
    floors: dict[str, list[float]] = {}
    floor_cpu: float | None = None
    idle: CpuDelta | None = None
    try:
        stack = IsolatedStack(work_dir / "stack", overrides=overrides)
        began = time.monotonic()
        with stack:
            settings = stack.settings
            assert settings is not None
            edp = settings.standins.edp
            interval = settings.pipeline.sensor_interval_seconds
            print(
                f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min) at start, "
                f"python {sys.version.split()[0]}; commit {revision}; state in {work_dir}"
            )
            print(
                f"stack up in {time.monotonic() - began:.1f} s: "
                + ", ".join(f"{k} {v}" for k, v in stack.urls.items())
            )
            print(
                f"EDP stand-in: queued {edp.queued_seconds:g} s + running {edp.running_seconds:g} s; "
                f"sensor interval {interval} s; re-delivery limits overridden: "
                + ", ".join(f"api.{key} = {REDELIVERY_LIMIT}" for key in REDELIVERY_LIMIT_KEYS)
            )
            apk = stack.publish_apk("1.0.0")
            print(f"published {apk} before the first order")
            edp_state_dir = Path(edp.state_dir) if edp.state_dir is not None else stack.state_dir / "edp"
            bench = Bench(
                stack=stack,
                statuses=OrderStatuses(settings.platform_db.url),
                dagster_url=stack.urls.get("dagster")
                or f"http://{settings.dagster.host}:{settings.dagster.port}",
                edp_state_dir=edp_state_dir if edp_state_dir.is_absolute() else PROJECT_ROOT / edp_state_dir,
                timeout=args.timeout,
                examples=examples,
            )
            try:
                if args.idle_seconds > 0:
                    idle = measure_idle(bench.root_pid, args.idle_seconds)
                    print(
                        f"\nidle: {idle.per_second():.3f} CPU-s per s over {idle.wall:.1f} s "
                        f"(by part, per s: {stack_cpu.by_part(idle, per=idle.wall, digits=3)})"
                    )
                idle_rate = None if idle is None else idle.per_second()
                print()
                print_legend()

                def phase(title: str, name: str, work: Callable[[], list[OrderTiming]]) -> PhaseResult | None:
                    # Other work on the machine shows in every figure: the load says how much there was.
                    print(f"\n== {title} (load average {os.getloadavg()[0]:.2f}) ==")
                    try:
                        result = bench.measured(name, work)
                        trace_phases(bench, result)
                    except (StackError, GraphQLError, requests.RequestException, OSError) as exc:
                        # The phases before and after still give their figures.
                        print(f"  {name} aborted: {type(exc).__name__}: {exc}")
                        return None
                    results.append(result)
                    return result

                if args.sequential > 0:
                    result = phase(
                        f"one at a time: {args.sequential} order(s), each submitted once the previous one was emailed",
                        "one at a time",
                        lambda: sequential_orders(bench, args.sequential),
                    )
                    if result is not None:
                        print_delivery(result, idle_rate, per_order=True)
                for size in bursts:
                    result = phase(
                        f"burst {size}: {size} orders submitted back to back",
                        f"burst {size}",
                        functools.partial(burst_orders, bench, size),
                    )
                    if result is not None:
                        print_delivery(result, idle_rate, per_order=False)
                delivered = [t for r in results for t in r.orders if t.emailed is not None]
                if args.redeliver > 0 and delivered:
                    notes: list[str] = []
                    result = phase(
                        f"re-delivery: {args.redeliver} delivered orders re-delivered at once (manifest + email)",
                        f"re-delivery {args.redeliver}",
                        lambda: redeliver_orders(bench, delivered, args.redeliver, notes),
                    )
                    if result is not None:
                        result.notes[:0] = notes
                        print_redelivery(result, idle_rate)
                elif args.redeliver > 0:
                    print("\nre-delivery skipped: no order was delivered")
            finally:
                bench.statuses.close()

        if args.floor_runs > 0:
            print(
                f"\n== floor: no-op partitioned asset (bench/noop_definitions.py) in a second `dagster dev`, instance "
                f"settings of the stack (local_stack/dagster.local.yaml), after the stack stopped; {args.floor_runs} "
                "runs one after the other =="
            )
            try:
                with noop_dagster(work_dir / "noop", interval, timeout=240) as (url, triggers, noop_pid):
                    before = stack_cpu.snapshot(noop_pid)
                    floors["(a) launched over GraphQL"] = print_floor(
                        "(a) launched over GraphQL, launch -> RUN_SUCCESS:",
                        floor_via_graphql(url, args.floor_runs, 120),
                    )
                    # What Dagster alone spends on a run (all processes of that dagster dev, its
                    # idle sensor ticks included): the floor of the CPU per order.
                    floor_cpu = stack_cpu.delta(before, stack_cpu.snapshot(noop_pid)).total / args.floor_runs
                    print(f"  CPU of that dagster dev per no-op run: {floor_cpu:.2f} CPU-s")
                    floors["(b) requested by a sensor"] = print_floor(
                        f"(b) requested by a sensor ticking every {interval} s, trigger -> RUN_SUCCESS:",
                        floor_via_sensor(url, triggers, args.floor_runs, 120),
                    )
            except (StackError, GraphQLError, requests.RequestException, OSError) as exc:
                print(f"  floor aborted: {type(exc).__name__}: {exc}")
        print_summary(revision, idle, results, floors, floor_cpu)
    finally:
        if args.keep_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    failed = [t for r in results for t in r.failed]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
