"""Where an order's time went: phases from the step times of its Dagster runs and its EDP job.

Pure functions over plain data, so the phase arithmetic is tested without a stack
(tests/bench/test_order_phases.py); bench/order_latency.py fetches the data and prints the result.

The phases are derived from step start/end times across *all* runs of the order's partition, not
from which run did what, because the pipeline has two shapes:

- two runs: the first run materializes ``order/config`` (which submits the EDP job); ``edp_sensor``
  starts a second run of the other assets once EDP is complete;
- one run: the first run has every asset, and ``order/edp_artifacts`` waits for EDP inside the run.

Both give the same boundaries (submit, first run queued, launched and started, config step started
and done, EDP complete, first build step started, email), so the same phases; only the time
between EDP complete and the build differs (a sensor tick plus a second run's start, or nothing).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONFIG_STEP = "order/config"
SUCCESS = "SUCCESS"

# What a run's way from queued to started waits on, in a first delivery and a re-delivery alike.
_LAUNCHED = "launched (RUN_STARTING): a free slot in the run queue, the daemon's dequeue"
_STARTED = "started (RUN_START): run worker process start, imports, code load"

# Name (a column header) and meaning of each phase of a first delivery, in order; the seconds of
# all sum to the order's submit -> email time.
TO_DAGSTER = "queued"
IN_QUEUE = "in queue"
QUEUE_AND_START = "started"
TO_CONFIG_STEP = "to config"
CONFIG = "config"
WAITING_ON_EDP = "EDP wait"
EDP_TO_BUILD = "to build"
BUILD = "build"
ORDER_PHASES: tuple[tuple[str, str], ...] = (
    (
        TO_DAGSTER,
        "submit answer -> the order's first run is created (queued): a sensor tick or the API's launch",
    ),
    (IN_QUEUE, f"first run queued -> {_LAUNCHED}"),
    (QUEUE_AND_START, f"first run launched -> {_STARTED}"),
    (TO_CONFIG_STEP, "first run started -> step order/config started: execution plan, step process start"),
    (CONFIG, "step order/config: config written to S3, EDP job submitted"),
    (WAITING_ON_EDP, "order/config done -> EDP job complete (what is left of EDP's queued + running time)"),
    (
        EDP_TO_BUILD,
        (
            "EDP complete -> the first build step started (two runs: edp_sensor tick, second run queued and "
            "started; 0 when the build step was already waiting for EDP inside the run)"
        ),
    ),
    (
        BUILD,
        "first build step started -> <cfg_id>-v1.eml in the outbox: edp_artifacts .. email steps and the gaps between",
    ),
)

# The phases of a re-delivery (a backfill of manifest + email launched by the API).
TO_BACKFILL_RUN = "queued"
RUN_IN_QUEUE = "in queue"
RUN_START = "started"
TO_FIRST_STEP = "to step"
STEPS = "steps"
REDELIVERY_PHASES: tuple[tuple[str, str], ...] = (
    (TO_BACKFILL_RUN, "202 answer -> the backfill's run is created: the daemon's backfill loop"),
    (RUN_IN_QUEUE, f"run queued -> {_LAUNCHED}"),
    (RUN_START, f"run launched -> {_STARTED}"),
    (TO_FIRST_STEP, "run started -> its first step started"),
    (STEPS, "first step started -> <cfg_id>-v<N>.eml in the outbox"),
)


@dataclass(frozen=True)
class StepTiming:
    """One step of a run; ``key`` is the asset path (``order/config``), unix times."""

    key: str
    status: str | None
    start: float | None
    end: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start


@dataclass(frozen=True)
class RunTiming:
    """One Dagster run of the order's partition, unix times.

    ``created``: queued (RUN_ENQUEUED); ``launched``: taken off the run queue and handed to the
    run launcher (RUN_STARTING); ``start``: its worker process began executing (RUN_START).
    """

    run_id: str
    status: str
    created: float
    start: float | None
    end: float | None
    steps: tuple[StepTiming, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    launched: float | None = None


@dataclass(frozen=True)
class EdpTiming:
    """The order's EDP job: accepted at ``created``, complete at created + queued + running seconds."""

    created: float
    complete: float


@dataclass(frozen=True)
class OrderTrace:
    """Everything known about one delivery, unix times."""

    submitted: float
    emailed: float
    runs: tuple[RunTiming, ...]
    edp: EdpTiming | None = None


@dataclass(frozen=True)
class OrderPhases:
    """Seconds per phase (``ORDER_PHASES`` order, summing to ``total``) and what else is known."""

    seconds: dict[str, float]
    total: float
    runs: int
    # 1-based, in creation order: the run the first build step ran in (2 for the two-run shape).
    build_run: int | None
    # The first build step started before EDP was complete: it waited for EDP inside the run.
    build_waited_in_run: bool
    edp_seconds: float | None
    # Of the BUILD phase: time covered by at least one step, the rest is between steps (a step
    # process starting, the run worker between steps, the run's own start for a second run).
    build_in_steps: float
    # Seconds per step (asset path), summed over its attempts, in the order the steps started.
    step_seconds: dict[str, float] = field(default_factory=dict)


class NoRuns(ValueError):
    """The order has no run that started before its email: nothing to derive phases from."""


def timeline(
    start: float, end: float, marks: Sequence[tuple[str, float | None]], last: str
) -> dict[str, float]:
    """Seconds of each phase between ``start``, the marks in order, and ``end``.

    ``marks[i]`` is (name of the phase that ends there, when); the phase ending at ``end`` is
    ``last``. A missing mark, or one out of order, is clamped to the one before (its phase is 0 s)
    and everything is clamped into [start, end], so the phases always sum to ``end - start``.
    """
    seconds: dict[str, float] = {}
    previous = start
    for name, when in marks:
        at = previous if when is None else min(max(when, previous), end)
        seconds[name] = at - previous
        previous = at
    seconds[last] = max(end, previous) - previous
    return seconds


def _union_within(intervals: Iterable[tuple[float, float]], low: float, high: float) -> float:
    """Length of the union of ``intervals`` cut to [low, high]."""
    cut = sorted((max(a, low), min(b, high)) for a, b in intervals if min(b, high) > max(a, low))
    covered = 0.0
    reach = low
    for a, b in cut:
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    return covered


def _runs_of_delivery(trace: OrderTrace) -> list[RunTiming]:
    # Runs created after the email (a later re-delivery) have nothing to do with this delivery.
    return sorted((run for run in trace.runs if run.created <= trace.emailed), key=lambda run: run.created)


def order_phases(trace: OrderTrace) -> OrderPhases:
    """The phases of one first delivery, whether it took one run or two (or more, with retries)."""
    runs = _runs_of_delivery(trace)
    if not runs:
        raise NoRuns("no run of the order's partition was created before its email")
    first = runs[0]
    steps = [(index, step) for index, run in enumerate(runs, start=1) for step in run.steps]

    config = [step for _, step in steps if step.key == CONFIG_STEP]
    config_start = min((step.start for step in config if step.start is not None), default=None)
    # A retried config step: the order moves on when the attempt that succeeded ends.
    config_ends = [step.end for step in config if step.end is not None and step.status == SUCCESS]
    config_end = (
        max(config_ends) if config_ends else max((s.end for s in config if s.end is not None), default=None)
    )

    build = [(index, step) for index, step in steps if step.key != CONFIG_STEP and step.start is not None]
    first_build = min(build, key=lambda item: item[1].start or 0.0, default=None)
    build_start = None if first_build is None else first_build[1].start
    edp_complete = None if trace.edp is None else trace.edp.complete

    marks: list[tuple[str, float | None]] = [
        (TO_DAGSTER, first.created),
        (IN_QUEUE, first.launched),
        (QUEUE_AND_START, first.start),
        (TO_CONFIG_STEP, config_start),
        (CONFIG, config_end),
        (WAITING_ON_EDP, edp_complete),
        (EDP_TO_BUILD, build_start),
    ]
    seconds = timeline(trace.submitted, trace.emailed, marks, BUILD)
    build_from = trace.emailed - seconds[BUILD]
    in_steps = _union_within(
        ((step.start, step.end) for _, step in steps if step.start is not None and step.end is not None),
        build_from,
        trace.emailed,
    )
    step_seconds: dict[str, float] = {}
    # In the order the steps started, as they are printed.
    for _, step in sorted(steps, key=lambda item: math.inf if item[1].start is None else item[1].start):
        if step.seconds is not None:
            step_seconds[step.key] = step_seconds.get(step.key, 0.0) + step.seconds
    return OrderPhases(
        seconds=seconds,
        total=trace.emailed - trace.submitted,
        runs=len(runs),
        build_run=None if first_build is None else first_build[0],
        build_waited_in_run=build_start is not None
        and edp_complete is not None
        and build_start < edp_complete,
        edp_seconds=None if trace.edp is None else trace.edp.complete - trace.edp.created,
        build_in_steps=in_steps,
        step_seconds=step_seconds,
    )


def redelivery_phases(answered: float, emailed: float, runs: Sequence[RunTiming]) -> dict[str, float]:
    """The phases of one re-delivery: ``runs`` are the partition's runs; those of the backfill are
    the ones created after the answer (the API answers once the backfill is requested, its run
    comes from the daemon) and before the email."""
    ours = sorted((run for run in runs if answered <= run.created <= emailed), key=lambda run: run.created)
    first = ours[0] if ours else None
    first_step = min(
        (step.start for run in ours for step in run.steps if step.start is not None), default=None
    )
    marks: list[tuple[str, float | None]] = [
        (TO_BACKFILL_RUN, None if first is None else first.created),
        (RUN_IN_QUEUE, None if first is None else first.launched),
        (RUN_START, None if first is None else first.start),
        (TO_FIRST_STEP, first_step),
    ]
    return timeline(answered, emailed, marks, STEPS)


def median_by_name(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median of each phase over orders (the medians need not sum to the median total)."""
    names = [name for name in rows[0]] if rows else []
    return {name: statistics.median(row[name] for row in rows if name in row) for name in names}
