"""Waiting for an EDP job inside the order's run: bounded, and an outage still reaches the retry policy."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contracts.edp import EdpJob
from delivery.edp_wait import failed_job_reason, wait_for_edp_job


class Down(Exception):
    pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def answers(*replies: EdpJob | Exception) -> tuple[Callable[[str], EdpJob], list[str]]:
    asked: list[str] = []
    queue = list(replies)

    def get_job(job_id: str) -> EdpJob:
        asked.append(job_id)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return get_job, asked


def _wait(get_job: Callable[[str], EdpJob], clock: FakeClock, wait_seconds: float) -> EdpJob | None:
    return wait_for_edp_job(
        get_job,
        "job-1",
        wait_seconds=wait_seconds,
        transient=(Down,),
        poll_seconds=0.5,
        clock=clock,
        sleep=clock.sleep,
    )


def test_the_job_is_handed_on_as_soon_as_it_is_complete() -> None:
    clock = FakeClock()
    get_job, asked = answers(EdpJob(status="queued"), EdpJob(status="running"), EdpJob(status="complete"))

    job = _wait(get_job, clock, wait_seconds=60)

    assert job is not None and job.status == "complete"
    assert len(asked) == 3
    assert clock.now == 1.0


def test_a_failed_job_ends_the_wait_too() -> None:
    get_job, _ = answers(EdpJob(status="failed", error="no devices"))

    job = _wait(get_job, FakeClock(), wait_seconds=60)

    assert job is not None and job.status == "failed"


def test_a_job_still_running_after_the_wait_is_left_to_the_sensor() -> None:
    clock = FakeClock()
    get_job, asked = answers(EdpJob(status="running"))

    assert _wait(get_job, clock, wait_seconds=3) is None
    assert clock.now <= 3
    assert len(asked) == 7


def test_no_wait_asks_once() -> None:
    get_job, asked = answers(EdpJob(status="running"))

    assert _wait(get_job, FakeClock(), wait_seconds=0) is None
    assert len(asked) == 1


def test_edp_down_for_a_moment_is_waited_out() -> None:
    get_job, _ = answers(Down("HTTP 500"), Down("HTTP 500"), EdpJob(status="complete"))

    job = _wait(get_job, FakeClock(), wait_seconds=60)

    assert job is not None and job.status == "complete"


def test_edp_down_for_the_whole_wait_raises_for_the_retry_policy() -> None:
    get_job, _ = answers(Down("HTTP 500"))

    with pytest.raises(Down, match="HTTP 500"):
        _wait(get_job, FakeClock(), wait_seconds=5)


def test_an_error_that_is_not_transient_is_not_waited_out() -> None:
    get_job, asked = answers(ValueError("a bug"))

    with pytest.raises(ValueError):
        _wait(get_job, FakeClock(), wait_seconds=60)
    assert len(asked) == 1


def test_the_failed_reason_is_edps_own_without_presigned_queries() -> None:
    job = EdpJob(status="failed", error="see https://edp.example/x?X-Amz-Signature=secret")

    reason = failed_job_reason("job-1", job)

    assert reason.startswith("EDP job job-1 failed: see https://edp.example/x")
    assert "secret" not in reason
