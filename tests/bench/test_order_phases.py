"""The phase arithmetic of bench/order_phases.py for both pipeline shapes (one run, two runs)."""

from __future__ import annotations

import pytest

from bench.order_phases import (
    CONFIG,
    EDP_TO_BUILD,
    ORDER_PHASES,
    REDELIVERY_PHASES,
    RUN_IN_QUEUE,
    RUN_START,
    STEPS,
    TO_BACKFILL_RUN,
    TO_CONFIG_STEP,
    TO_FIRST_STEP,
    WAITING_ON_EDP,
    EdpTiming,
    NoRuns,
    OrderTrace,
    RunTiming,
    StepTiming,
    median_by_name,
    order_phases,
    redelivery_phases,
    timeline,
)

T0 = 1_700_000_000.0
BUILD_STEPS = ("order/edp_artifacts", "order/cfn_or_iso", "order/apk", "order/manifest", "order/email")


def step(key: str, start: float, end: float, status: str = "SUCCESS") -> StepTiming:
    return StepTiming(key=key, status=status, start=T0 + start, end=T0 + end)


def chained(start: float, length: float, gap: float, keys: tuple[str, ...]) -> tuple[StepTiming, ...]:
    """Steps one after the other, ``length`` s each with ``gap`` s between."""
    return tuple(
        step(key, start + i * (length + gap), start + i * (length + gap) + length)
        for i, key in enumerate(keys)
    )


def run(
    run_id: str,
    created: float,
    start: float,
    end: float,
    steps: tuple[StepTiming, ...],
    launched: float | None = None,
) -> RunTiming:
    return RunTiming(
        run_id=run_id,
        status="SUCCESS",
        created=T0 + created,
        start=T0 + start,
        end=T0 + end,
        steps=steps,
        launched=None if launched is None else T0 + launched,
    )


def two_runs() -> OrderTrace:
    """Config in the first run; edp_sensor starts the build in a second one."""
    config_run = run("a", created=3, launched=5, start=6, end=12, steps=(step("order/config", 8, 10),))
    # EDP job created at 9 s, complete 3 s later; edp_sensor ticks at 15 s, second run starts at 18 s.
    build_run = run("b", created=15, start=18, end=40, steps=chained(20, 2, 1, BUILD_STEPS))
    return OrderTrace(
        submitted=T0,
        emailed=T0 + 33.5,
        runs=(build_run, config_run),
        edp=EdpTiming(created=T0 + 9, complete=T0 + 12),
    )


def one_run() -> OrderTrace:
    """One run whose edp_artifacts step waits for EDP."""
    # The API queues the run 0.2 s after the answer; edp_artifacts starts at 6 s and waits for EDP
    # (complete at 8 s) inside the run, then the other steps follow.
    steps = (
        step("order/config", 3, 4),
        step("order/edp_artifacts", 6, 10),
        *chained(11, 1, 0.5, BUILD_STEPS[1:]),
    )
    only_run = run("a", created=0.2, start=2, end=18, steps=steps)
    return OrderTrace(
        submitted=T0, emailed=T0 + 16.5, runs=(only_run,), edp=EdpTiming(created=T0 + 3.5, complete=T0 + 8)
    )


@pytest.mark.parametrize(
    ("trace", "seconds", "total", "runs", "waited_in_run"),
    [
        # seconds, in ORDER_PHASES order: to Dagster, in queue, queue and start, to the config step,
        # config, waiting on EDP, EDP to build, build.
        pytest.param(
            two_runs(), (3, 2, 1, 2, 2, 2, 8, 13.5), 33.5, 2, False, id="config-then-sensor-started-build"
        ),
        # No RUN_STARTING event known: the wait in the queue is part of "started".
        pytest.param(
            one_run(), (0.2, 0, 1.8, 1, 1, 4, 0, 8.5), 16.5, 1, True, id="build-step-waits-for-edp-in-the-run"
        ),
    ],
)
def test_the_phases_of_both_pipeline_shapes(
    trace: OrderTrace, seconds: tuple[float, ...], total: float, runs: int, waited_in_run: bool
) -> None:
    phases = order_phases(trace)

    names = [name for name, _ in ORDER_PHASES]
    assert phases.seconds == pytest.approx(dict(zip(names, seconds, strict=True)))
    assert list(phases.seconds) == names
    assert sum(phases.seconds.values()) == pytest.approx(phases.total) == pytest.approx(total)
    assert phases.runs == runs
    assert phases.build_run == runs
    assert phases.build_waited_in_run is waited_in_run


def test_two_runs_time_edp_the_build_steps_and_each_step() -> None:
    phases = order_phases(two_runs())

    assert phases.edp_seconds == pytest.approx(3)
    # Build from 20 s to the email at 33.5 s: steps 20-22, 23-25, 26-28, 29-31, 32-34 (cut at 33.5).
    assert phases.build_in_steps == pytest.approx(2 + 2 + 2 + 2 + 1.5)
    # In the order the steps started, whichever run came first in the data.
    assert list(phases.step_seconds) == ["order/config", *BUILD_STEPS]
    assert phases.step_seconds["order/config"] == pytest.approx(2)
    assert phases.step_seconds["order/email"] == pytest.approx(2)


def test_retried_config_step_ends_with_the_attempt_that_succeeded() -> None:
    failed = run("a", created=1, start=2, end=5, steps=(step("order/config", 3, 4, status="FAILURE"),))
    retry = run("b", created=6, start=7, end=10, steps=(step("order/config", 8, 9),))
    builder = run("c", created=12, start=13, end=20, steps=chained(14, 1, 0, BUILD_STEPS))
    trace = OrderTrace(
        submitted=T0, emailed=T0 + 19, runs=(failed, retry, builder), edp=EdpTiming(T0 + 8.5, T0 + 11)
    )

    phases = order_phases(trace)

    # The config phase spans the first attempt's start to the successful attempt's end.
    assert phases.seconds[TO_CONFIG_STEP] == pytest.approx(1)
    assert phases.seconds[CONFIG] == pytest.approx(6)
    assert phases.runs == 3
    assert phases.build_run == 3


def test_runs_after_the_email_are_left_out() -> None:
    delivery = run(
        "a", created=1, start=2, end=12, steps=(step("order/config", 3, 4), *chained(5, 1, 0, BUILD_STEPS))
    )
    redelivery = run(
        "b", created=50, start=52, end=60, steps=chained(53, 1, 0, ("order/manifest", "order/email"))
    )
    phases = order_phases(OrderTrace(submitted=T0, emailed=T0 + 10, runs=(delivery, redelivery)))

    assert phases.runs == 1
    assert phases.step_seconds["order/email"] == pytest.approx(1)
    # Without EDP times the wait on EDP is not told apart: it is part of the next phase.
    assert phases.edp_seconds is None
    assert phases.seconds[WAITING_ON_EDP] == 0
    assert phases.seconds[EDP_TO_BUILD] == pytest.approx(1)


def test_no_run_before_the_email_is_an_error() -> None:
    with pytest.raises(NoRuns):
        order_phases(OrderTrace(submitted=T0, emailed=T0 + 5, runs=()))


def test_timeline_clamps_missing_and_out_of_order_marks() -> None:
    seconds = timeline(10.0, 20.0, [("a", 12.0), ("b", None), ("c", 11.0), ("d", 25.0)], "e")
    assert seconds == {"a": 2.0, "b": 0.0, "c": 0.0, "d": 8.0, "e": 0.0}


def test_redelivery_phases_take_the_backfill_run_after_the_answer() -> None:
    delivery = run("a", created=1, start=2, end=12, steps=(step("order/config", 3, 4),))
    backfill = run(
        "b",
        created=102,
        launched=104,
        start=105,
        end=112,
        steps=chained(107, 1, 1, ("order/manifest", "order/email")),
    )
    seconds = redelivery_phases(T0 + 100, T0 + 110.5, [delivery, backfill])

    assert seconds == pytest.approx(
        {TO_BACKFILL_RUN: 2, RUN_IN_QUEUE: 2, RUN_START: 1, TO_FIRST_STEP: 2, STEPS: 3.5}
    )
    assert list(seconds) == [name for name, _ in REDELIVERY_PHASES]


def test_median_by_name() -> None:
    rows = [{"a": 1.0, "b": 10.0}, {"a": 3.0, "b": 30.0}, {"a": 2.0, "b": 5.0}]
    assert median_by_name(rows) == {"a": 2.0, "b": 10.0}
    assert median_by_name([]) == {}
