"""The cause of a failed step in words a person can act on, for the order's ``error`` and the API.

Dagster wraps what a step's code raised ("Error occurred while executing op ..."); the cause is
below the wrapper: SES's, S3's or EDP's own reason, or the platform's ``Failure`` description.

One rule for every form the chain comes in: Dagster's ``SerializableErrorInfo`` (the sensors read
the instance) and the webserver's GraphQL ``PythonError`` (the API reads its answers). Nothing here
imports Dagster at run time, so the API can share the rule without reaching the instance.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dagster import DagsterEvent

# Dagster's wrappers around the error a step's code raised: the step's own, and the retry
# policy's when the last retry failed too.
_WRAPPER = re.compile(r"^(?:[\w.]+: )?Error occurred while")
_RETRIES_USED_UP = re.compile(r"^Exceeded max_retries of (\d+)")
# "botocore.exceptions.EndpointConnectionError: ..." -> "EndpointConnectionError: ..."
_QUALIFIED_CLASS = re.compile(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)(?=: )")


class ErrorChain(Protocol):
    """An error and the error it was raised from, as far down as the chain goes."""

    @property
    def message(self) -> str: ...

    @property
    def cause(self) -> ErrorChain | None: ...


def error_cause(error: ErrorChain) -> str:
    """The innermost error below Dagster's wrappers, as ``Class: message`` (and the retries it took)."""
    retries = _RETRIES_USED_UP.match(error.message.strip())
    while error.cause is not None and (
        _WRAPPER.match(error.message.strip()) or _RETRIES_USED_UP.match(error.message.strip())
    ):
        error = error.cause
    cause = _QUALIFIED_CLASS.sub(r"\1", error.message.strip())
    return f"{cause} (still failing after {retries.group(1)} retries)" if retries else cause


def failure_cause(description: str | None, error: ErrorChain | None) -> str:
    """Why a step failed: the description of the ``Failure`` it raised, else the error it raised."""
    if description:
        return description.strip()
    if error is None:
        return "the step failed"
    return error_cause(error)


def step_failure_cause(event: DagsterEvent) -> str:
    """Why a STEP_FAILURE event's step failed: a ``Failure``'s description, else the raised error."""
    data = event.step_failure_data
    user_failure = data.user_failure_data
    return failure_cause(user_failure.description if user_failure is not None else None, data.error)
