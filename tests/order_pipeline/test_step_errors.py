"""The cause of a failed step as the order's error shows it: below Dagster's wrappers."""

from __future__ import annotations

from dataclasses import dataclass

from dagster._utils.error import SerializableErrorInfo

from order_pipeline.step_errors import error_cause, failure_cause


def _error(
    message: str, cause: SerializableErrorInfo | None = None, cls_name: str = "Exception"
) -> SerializableErrorInfo:
    return SerializableErrorInfo(message=message, stack=[], cls_name=cls_name, cause=cause)


S3_DOWN = _error(
    'botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:5000/b"\n',
    cls_name="EndpointConnectionError",
)


def test_the_step_wrapper_gives_way_to_the_error_the_code_raised() -> None:
    wrapped = _error(
        'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "order__apk":',
        S3_DOWN,
    )
    assert (
        error_cause(wrapped)
        == 'EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:5000/b"'
    )


def test_retries_used_up_name_the_cause_and_how_many() -> None:
    wrapped = _error(
        "Exceeded max_retries of 6\n", _error('Error occurred while executing op "order__apk":', S3_DOWN)
    )
    assert error_cause(wrapped) == (
        'EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:5000/b" (still failing after 6 retries)'
    )


def test_an_unwrapped_error_is_itself() -> None:
    assert (
        error_cause(_error("ValueError: dtm.json lists no devices"))
        == "ValueError: dtm.json lists no devices"
    )


@dataclass(frozen=True)
class Link:
    """Any error chain: a message and the error it was raised from."""

    message: str
    cause: Link | None = None


def test_any_error_chain_is_read_by_the_same_rule() -> None:
    chain = Link(
        "Exceeded max_retries of 2",
        Link(
            'Error occurred while executing op "order__email":',
            Link("botocore.errorfactory.MessageRejected: Email address is not verified."),
        ),
    )
    assert (
        error_cause(chain)
        == "MessageRejected: Email address is not verified. (still failing after 2 retries)"
    )


def test_a_wrapper_with_nothing_below_is_itself() -> None:
    assert error_cause(Link('Error occurred while executing op "order__apk":')) == (
        'Error occurred while executing op "order__apk":'
    )


def test_a_failures_description_says_why_before_the_error_it_raised() -> None:
    raised = _error("dagster._core.definitions.events.Failure: dtm.json is missing\n")
    assert failure_cause("  dtm.json is missing from the EDP artifacts\n", raised) == (
        "dtm.json is missing from the EDP artifacts"
    )
    assert (
        failure_cause(None, S3_DOWN)
        == 'EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:5000/b"'
    )
    assert failure_cause("", Link("ValueError: no devices")) == "ValueError: no devices"
    assert failure_cause(None, None) == "the step failed"
