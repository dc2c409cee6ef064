"""The cause of a failed step as the order's error shows it: below Dagster's wrappers."""

from __future__ import annotations

from dagster._utils.error import SerializableErrorInfo

from order_pipeline.step_errors import error_cause


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
