"""Waiting for an EDP job inside the order's run, so a job that takes seconds costs no second run.

The wait is bounded: a job still pending at the end is left to ``edp_sensor``, which polls every
order waiting on EDP and starts the build when the job is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from contracts.edp import EdpJob
from delivery.edp_artifact_policy import readable_reason

# Short against the stand-in's seconds-long jobs, long against one GET of a job.
POLL_SECONDS = 0.5


def wait_for_edp_job(
    get_job: Callable[[str], EdpJob],
    job_id: str,
    *,
    wait_seconds: float,
    transient: tuple[type[Exception], ...],
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> EdpJob | None:
    """The job once it is ``complete`` or ``failed``; ``None`` if it is still pending after ``wait_seconds``.

    The job is asked for at least once. A ``transient`` error asking (EDP down or answering 5xx) is
    retried until the wait is over and then raised, so the step's retry policy sees an EDP outage
    as it would without the wait.
    """
    deadline = clock() + wait_seconds
    while True:
        try:
            job = get_job(job_id)
        except transient:
            if clock() + poll_seconds > deadline:
                raise
        else:
            if job.status in ("complete", "failed"):
                return job
            if clock() + poll_seconds > deadline:
                return None
        sleep(poll_seconds)


def failed_job_reason(job_id: str, job: EdpJob) -> str:
    """The order's ``last_error`` for a job EDP failed: EDP's own reason, without URLs' queries
    (presigned credentials) or control characters, and capped, since ``GET /orders`` returns it."""
    return readable_reason(f"EDP job {job_id} failed: {job.error or 'no reason given'}")
