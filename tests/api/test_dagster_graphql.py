"""The GraphQL client of the Dagster webserver: launches against a stand-in over HTTP, and how the
answers of the asset status queries are read (the real webserver answers them in test_asset_status.py).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from dagster._utils.error import SerializableErrorInfo
from graphql import parse, validate

from api.dagster_graphql import (
    ADD_DYNAMIC_PARTITION,
    LAUNCH_PARTITION_BACKFILL,
    LAUNCH_RUN,
    REPOSITORIES,
    RUN_LOG,
    DagsterGraphQL,
    DagsterRejected,
    DagsterUnreachable,
    PythonError,
    order_records_query,
)
from order_pipeline.step_errors import error_cause

CFG_ID = "0b5c3e43-5a53-4a1c-9f3e-1f3cbd6f2d9a"
ASSETS = [["order", "manifest"], ["order", "email"]]


@pytest.mark.parametrize(
    "document",
    [
        LAUNCH_PARTITION_BACKFILL,
        ADD_DYNAMIC_PARTITION,
        LAUNCH_RUN,
        REPOSITORIES,
        RUN_LOG,
        order_records_query(6),
        order_records_query(1),
    ],
)
def test_each_document_is_valid_against_the_installed_dagster_graphql_schema(document: str) -> None:
    from dagster_graphql.schema import create_schema

    schema = create_schema().graphql_schema
    assert validate(schema, parse(document)) == []


def test_a_launched_backfill_answers_its_id_and_asks_for_exactly_the_partition_and_assets(
    stub_dagster,
) -> None:
    client = DagsterGraphQL(stub_dagster.url)

    launched = client.launch([CFG_ID], ASSETS, tags={"platform/redelivery": "api"}, description="again")

    assert launched.backfill_id == "stub-backfill-1"
    [body] = stub_dagster.received
    assert "launchPartitionBackfill" in body["query"]
    assert body["variables"]["backfillParams"] == {
        "partitionNames": [CFG_ID],
        "assetSelection": [{"path": ["order", "manifest"]}, {"path": ["order", "email"]}],
        "tags": [{"key": "platform/redelivery", "value": "api"}],
        "description": "again",
    }


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("error_result", "(PartitionKeysNotFoundError): Partition keys `['nope']` could not be found."),
        ("python_error", "(PythonError): DagsterInvariantViolationError: no asset order/manifest"),
        ("graphql_error", 'Dagster rejected the backfill: Variable "$backfillParams" got invalid value'),
    ],
)
def test_an_error_answer_is_a_rejection_with_dagsters_message(stub_dagster, mode: str, says: str) -> None:
    stub_dagster.mode = mode

    with pytest.raises(DagsterRejected) as raised:
        DagsterGraphQL(stub_dagster.url).launch([CFG_ID], ASSETS)

    assert says in str(raised.value)


def test_an_answer_that_is_no_graphql_result_means_dagster_is_unreachable(stub_dagster) -> None:
    stub_dagster.mode = "bad_gateway"

    with pytest.raises(DagsterUnreachable, match="answered HTTP 502 without a GraphQL result"):
        DagsterGraphQL(stub_dagster.url).launch([CFG_ID], ASSETS)


def test_a_webserver_that_does_not_listen_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/graphql"

    with pytest.raises(DagsterUnreachable, match=f"the Dagster webserver at {url} is unreachable"):
        DagsterGraphQL(url, connect_timeout=1).launch([CFG_ID], ASSETS)


def test_a_webserver_that_does_not_answer_in_time_is_unreachable(stub_dagster) -> None:
    stub_dagster.mode = "slow"
    stub_dagster.delay_seconds = 2.0

    with pytest.raises(DagsterUnreachable, match="did not answer in time"):
        DagsterGraphQL(stub_dagster.url, read_timeout=0.3).launch([CFG_ID], ASSETS)


def test_a_backfill_needs_a_partition_and_an_asset() -> None:
    client = DagsterGraphQL("http://127.0.0.1:1/graphql")
    with pytest.raises(ValueError):
        client.launch([], ASSETS)
    with pytest.raises(ValueError):
        client.launch([CFG_ID], [])


# --- reading the answers of the asset status queries ------------------------------------------


class _Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status_code = 200
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class _Answers:
    """A session whose posts get the given answers in turn; it keeps what was posted."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self._bodies = list(bodies)
        self.posted: list[dict[str, Any]] = []

    def post(self, url: str, *, json: dict[str, Any], timeout: Any) -> _Answer:
        self.posted.append(json)
        return _Answer(self._bodies.pop(0))


def _client(*bodies: dict[str, Any]) -> tuple[DagsterGraphQL, _Answers]:
    session = _Answers(*bodies)
    return DagsterGraphQL("http://dagster.invalid/graphql", session=session), session  # type: ignore[arg-type]


CONFIG_PATH = ("order", "config")
EMAIL_PATH = ("order", "email")


def test_order_records_read_the_runs_newest_first_and_each_assets_newest_materialization() -> None:
    client, session = _client(
        {
            "data": {
                "runsOrError": {
                    "__typename": "Runs",
                    "results": [
                        {
                            "runId": "run-2",
                            "status": "STARTED",
                            "creationTime": 1733000100.25,
                            "assetSelection": [{"path": ["order", "email"]}],
                        },
                        {
                            "runId": "run-1",
                            "status": "SUCCESS",
                            "creationTime": 1733000000.0,
                            "assetSelection": None,
                        },
                    ],
                },
                "asset0": {
                    "__typename": "Asset",
                    "assetMaterializations": [{"runId": "run-1", "timestamp": "1733000050123"}],
                },
                "asset1": {"__typename": "Asset", "assetMaterializations": []},
            }
        }
    )

    records = client.order_records(CFG_ID, [CONFIG_PATH, EMAIL_PATH], recent_runs=20)

    [body] = session.posted
    assert body["variables"] == {
        "tags": [{"key": "dagster/partition", "value": CFG_ID}],
        "partition": CFG_ID,
        "limit": 20,
        "asset0": ["order", "config"],
        "asset1": ["order", "email"],
    }
    assert [(run.run_id, run.status, run.creation_time) for run in records.runs] == [
        ("run-2", "STARTED", 1733000100.25),
        ("run-1", "SUCCESS", 1733000000.0),
    ]
    assert records.runs[0].asset_selection == [EMAIL_PATH]
    assert records.runs[1].asset_selection is None
    latest = records.latest[CONFIG_PATH]
    assert latest is not None and latest.run_id == "run-1"
    assert latest.at == datetime(2024, 11, 30, 20, 54, 10, 123000, tzinfo=UTC)
    assert records.latest[EMAIL_PATH] is None


def test_runs_dagster_cannot_list_are_a_rejection() -> None:
    client, _ = _client(
        {
            "data": {
                "runsOrError": {"__typename": "PythonError", "message": "DagsterError: storage is down"},
                "asset0": {"__typename": "Asset", "assetMaterializations": []},
            }
        }
    )

    with pytest.raises(
        DagsterRejected, match=r"did not list the runs \(PythonError\): DagsterError: storage"
    ):
        client.order_records(CFG_ID, [CONFIG_PATH], recent_runs=20)


def _page(events: list[dict[str, Any]], *, cursor: str, more: bool) -> dict[str, Any]:
    return {
        "data": {
            "runOrError": {
                "__typename": "Run",
                "eventConnection": {"events": events, "cursor": cursor, "hasMore": more},
            }
        }
    }


WRAPPED = {
    "message": 'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "order__apk":\n',
    "causes": [{"message": "botocore.exceptions.EndpointConnectionError: Could not connect\n"}],
}


def test_a_run_log_is_read_page_by_page_into_failures_and_planned_assets() -> None:
    client, session = _client(
        _page(
            [
                {"__typename": "AssetMaterializationPlannedEvent", "assetKey": {"path": ["order", "apk"]}},
                {"__typename": "RunStartEvent"},
                {
                    "__typename": "ExecutionStepFailureEvent",
                    "stepKey": "order__apk",
                    "message": 'Execution of step "order__apk" failed.',
                    "error": WRAPPED,
                    "failureMetadata": None,
                },
            ],
            cursor="c1",
            more=True,
        ),
        _page(
            [
                {
                    "__typename": "ExecutionStepFailureEvent",
                    "stepKey": "order__manifest",
                    "message": "failed",
                    "error": {"message": "dagster._core.definitions.events.Failure: x\n", "causes": []},
                    "failureMetadata": {"description": "dtm.json is missing"},
                },
                {"__typename": "RunFailureEvent", "message": "Execution of run failed.", "error": None},
            ],
            cursor="c2",
            more=False,
        ),
    )

    log = client.run_log("run-1")

    assert [body["variables"]["cursor"] for body in session.posted] == [None, "c1"]
    assert all(body["variables"]["runId"] == "run-1" for body in session.posted)
    assert log.planned == frozenset({("order", "apk")})
    first, second = log.step_failures
    assert first.step_key == "order__apk" and first.description is None
    assert (
        first.error is not None and error_cause(first.error) == "EndpointConnectionError: Could not connect"
    )
    assert second.step_key == "order__manifest" and second.description == "dtm.json is missing"
    [run_failure] = log.run_failures
    assert run_failure.message == "Execution of run failed." and run_failure.error is None


def test_a_run_dagster_does_not_know_is_a_rejection() -> None:
    client, _ = _client(
        {
            "data": {
                "runOrError": {"__typename": "RunNotFoundError", "message": "Run run-9 could not be found."}
            }
        }
    )

    with pytest.raises(DagsterRejected, match=r"did not read run run-9 \(RunNotFoundError\)"):
        client.run_log("run-9")


def _serializable(message: str, *causes: str) -> SerializableErrorInfo:
    cause = None
    for text in reversed(causes):
        cause = SerializableErrorInfo(message=text, stack=[], cls_name=None, cause=cause)
    return SerializableErrorInfo(message=message, stack=[], cls_name=None, cause=cause)


@pytest.mark.parametrize(
    "chain",
    [
        [
            'Error occurred while executing op "order__email":',
            "botocore.errorfactory.MessageRejected: bad address",
        ],
        [
            "Exceeded max_retries of 6\n",
            'dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while executing op "order__email":',
            "botocore.errorfactory.MessageRejected: bad address",
        ],
        ["ValueError: dtm.json lists no devices"],
    ],
)
def test_graphqls_error_chain_reads_as_dagsters_own(chain: list[str]) -> None:
    """The step's cause in GET /orders is the one the run failure sensor records on the order."""
    graphql = PythonError.model_validate(
        {"message": chain[0], "causes": [{"message": text} for text in chain[1:]]}
    )

    assert error_cause(graphql) == error_cause(_serializable(*chain))
