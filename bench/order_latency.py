"""Order latency of the local stack: from the answer of POST /submit to the delivery email.

    .venv/bin/python bench/order_latency.py [--orders 20] [--edp-latency S] [--keep-dir DIR]

1. Starts the whole local stack (``python -m local_stack``) on free ports with its state in one
   directory, publishes the sample APK, then submits N orders (the cloud and on-prem examples in
   turn, each with its own Idempotency-Key) one right after the other.
2. Per order: seconds from the submit answer until ``<cfg_id>-v1.eml`` shows up in the outbox
   (polled every 0.1 s); then median, p95 and max.
3. The floor, once the stack has stopped: a no-op partitioned asset (bench/noop_definitions.py) in
   a second ``dagster dev`` with the stack's instance settings, run K times one after the other,
   (a) launched through the Dagster GraphQL API: launch -> RUN_SUCCESS;
   (b) requested by a sensor, as the order sensors do: trigger file written -> RUN_SUCCESS.

See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import requests  # noqa: E402
from dagster_graphql import DagsterGraphQLClient  # noqa: E402

from local_stack.isolated import IsolatedStack, StackError, free_loopback_ports  # noqa: E402

EXAMPLES = PROJECT_ROOT / "examples"
TARGETS = ("cloud", "onprem")
INSTANCE_TEMPLATE = PROJECT_ROOT / "local_stack" / "dagster.local.yaml"
NOOP_DEFINITIONS = PROJECT_ROOT / "bench" / "noop_definitions.py"
NOOP_JOB = "noop_job"
NOOP_PARTITIONS = "noop"
OUTBOX_POLL_SECONDS = 0.1
STATUS_POLL_SECONDS = 2.0
RUN_POLL_SECONDS = 0.1
DONE_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class OrderTiming:
    index: int
    target: str
    cfg_id: str
    submitted_at: float
    emailed_after: float | None = None
    status: str = "submitted"
    error: str | None = None


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


# -- the orders -------------------------------------------------------------------------------


def run_orders(stack: IsolatedStack, count: int, timeout: float) -> list[OrderTiming]:
    examples = {target: json.loads((EXAMPLES / f"order-{target}.json").read_text()) for target in TARGETS}
    batch = uuid.uuid4().hex[:8]
    outbox = stack.outbox_dir
    timings: list[OrderTiming] = []
    for index in range(count):
        target = TARGETS[index % len(TARGETS)]
        cfg_id = stack.submit(examples[target], idempotency_key=f"bench-{batch}-{index}")
        timings.append(OrderTiming(index=index, target=target, cfg_id=cfg_id, submitted_at=time.monotonic()))

    deadline = time.monotonic() + timeout
    next_status_poll = time.monotonic() + STATUS_POLL_SECONDS
    while True:
        now = time.monotonic()
        pending = [t for t in timings if t.emailed_after is None and t.status != "failed"]
        for timing in pending:
            if (outbox / f"{timing.cfg_id}-v1.eml").exists():
                timing.emailed_after = now - timing.submitted_at
                timing.status = "emailed"
        pending = [t for t in pending if t.emailed_after is None]
        if not pending:
            break
        if now > deadline:
            for timing in pending:
                timing.status = f"timeout ({stack.order(timing.cfg_id)['status']})"
            break
        if now >= next_status_poll:
            # Only to notice failed orders, which never get an email.
            for timing in pending:
                order = stack.order(timing.cfg_id)
                if order["status"] == "failed":
                    timing.status, timing.error = "failed", order.get("error")
            next_status_poll = now + STATUS_POLL_SECONDS
        time.sleep(OUTBOX_POLL_SECONDS)
    return timings


def print_orders(timings: list[OrderTiming]) -> None:
    print(f"{'#':>3}  {'target':<7} {'cfg_id':<36}  {'submit->email':>13}  status")
    for t in timings:
        took = f"{t.emailed_after:10.2f} s" if t.emailed_after is not None else f"{'-':>12}"
        print(f"{t.index:>3}  {t.target:<7} {t.cfg_id:<36}  {took:>13}  {t.status}{': ' + t.error if t.error else ''}")
    done = [t.emailed_after for t in timings if t.emailed_after is not None]
    print(f"submit -> email: {summary(done)}")
    if done:
        first = min(t.submitted_at for t in timings)
        last = max(t.submitted_at + t.emailed_after for t in timings if t.emailed_after is not None)
        print(f"all {len(done)} emailed {last - first:.2f} s after the first submit answer")


# -- the floor --------------------------------------------------------------------------------


@contextlib.contextmanager
def noop_dagster(work_dir: Path, sensor_interval: int, timeout: float) -> Iterator[tuple[str, Path]]:
    """``dagster dev`` over bench/noop_definitions.py with the stack's instance settings; (url, trigger dir)."""
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
            sys.executable, "-m", "dagster", "dev",
            "-f", str(NOOP_DEFINITIONS), "-d", str(PROJECT_ROOT),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
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
                raise StackError(f"dagster dev for the no-op asset did not come up; see {work_dir / 'dagster-noop.log'}")
            time.sleep(0.5)
        yield url, triggers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.close()


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    if body.get("errors"):
        raise StackError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


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
        entries = _graphql(url, WORKSPACE_QUERY)["workspaceOrError"].get("locationEntries", [])
        data = _graphql(url, REPOSITORIES_QUERY)
    except (requests.RequestException, StackError, ValueError):
        return False
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if entry["loadStatus"] == "LOADED" and loaded.get("__typename") == "PythonError":
            raise StackError(f"code location {entry['name']} did not load: {loaded.get('message')}")
    nodes = data["repositoriesOrError"].get("nodes", [])
    return any(NOOP_JOB in {job["name"] for job in node["jobs"]} for node in nodes)


def _repository(url: str) -> tuple[str, str]:
    nodes = _graphql(url, REPOSITORIES_QUERY)["repositoriesOrError"]["nodes"]
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
        added = _graphql(url, ADD_PARTITION_MUTATION, {"selector": selector, "name": NOOP_PARTITIONS, "key": key})
        if added["addDynamicPartition"]["__typename"] != "AddDynamicPartitionSuccess":
            raise StackError(f"could not add partition {key}: {added}")
        started = time.monotonic()
        run_id = client.submit_job_execution(
            NOOP_JOB, repository_location_name=location, repository_name=repository, tags={"dagster/partition": key}
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
            found = _graphql(url, RUNS_BY_PARTITION_QUERY, {"key": key})["runsOrError"].get("results", [])
            if found:
                status = _wait_for_run(client, found[0]["runId"], deadline - time.monotonic())
                break
            time.sleep(RUN_POLL_SECONDS)
        results.append((time.monotonic() - started, status))
    return results


def print_floor(title: str, results: list[tuple[float, str]]) -> None:
    print(title)
    for index, (took, status) in enumerate(results):
        print(f"  run {index}: {took:6.2f} s  {status}")
    print(f"  {summary([took for took, status in results if status == 'SUCCESS'])}")


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/order_latency.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20, help="orders to submit (default 20)")
    parser.add_argument(
        "--edp-latency",
        type=float,
        default=None,
        metavar="S",
        help="EDP stand-in: seconds queued and again seconds running (default: cfg.defaults.yml)",
    )
    parser.add_argument("--floor-runs", type=int, default=5, help="no-op runs per floor measurement (0: skip)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all emails (default 900)")
    parser.add_argument("--keep-dir", type=Path, default=None, help="keep all state and logs in DIR (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")

    work_dir = args.keep_dir.resolve() if args.keep_dir else Path(tempfile.mkdtemp(prefix="order-latency-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {}
    if args.edp_latency is not None:
        overrides = {"standins": {"edp": {"queued_seconds": args.edp_latency, "running_seconds": args.edp_latency}}}
    try:
        stack = IsolatedStack(work_dir / "stack", overrides=overrides)
        began = time.monotonic()
        with stack:
            settings = stack.settings
            assert settings is not None
            edp = settings.standins.edp
            interval = settings.pipeline.sensor_interval_seconds
            print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; state in {work_dir}")
            print(f"stack up in {time.monotonic() - began:.1f} s: " + ", ".join(f"{k} {v}" for k, v in stack.urls.items()))
            print(
                f"EDP stand-in: queued {edp.queued_seconds:g} s + running {edp.running_seconds:g} s; "
                f"sensor interval {settings.pipeline.sensor_interval_seconds} s"
            )
            apk = stack.publish_apk("1.0.0")
            print(f"published {apk} before the first order")
            print(f"\n{args.orders} orders, submitted back to back; submit answer -> <cfg_id>-v1.eml in the outbox:")
            timings = run_orders(stack, args.orders, args.timeout)
        print_orders(timings)

        if args.floor_runs > 0:
            print(
                f"\nfloor: no-op partitioned asset (bench/noop_definitions.py) in a second `dagster dev`, instance "
                f"settings of the stack (local_stack/dagster.local.yaml), after the stack stopped; {args.floor_runs} "
                "runs one after the other"
            )
            with noop_dagster(work_dir / "noop", interval, timeout=240) as (url, triggers):
                print_floor("(a) launched over GraphQL, launch -> RUN_SUCCESS:", floor_via_graphql(url, args.floor_runs, 120))
                print_floor(
                    f"(b) requested by a sensor ticking every {interval} s, trigger -> RUN_SUCCESS:",
                    floor_via_sensor(url, triggers, args.floor_runs, 120),
                )
    finally:
        if args.keep_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    failed = [t for t in timings if t.emailed_after is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
