"""The GraphQL client that launches backfills, against a stand-in of the Dagster webserver over HTTP."""

from __future__ import annotations

import socket

import pytest
from graphql import parse, validate

from api.dagster_graphql import (
    LAUNCH_PARTITION_BACKFILL,
    DagsterGraphQL,
    DagsterRejected,
    DagsterUnreachable,
)

CFG_ID = "0b5c3e43-5a53-4a1c-9f3e-1f3cbd6f2d9a"
ASSETS = [["order", "manifest"], ["order", "email"]]


def test_the_mutation_is_valid_against_the_installed_dagster_graphql_schema() -> None:
    from dagster_graphql.schema import create_schema

    schema = create_schema().graphql_schema
    assert validate(schema, parse(LAUNCH_PARTITION_BACKFILL)) == []


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
