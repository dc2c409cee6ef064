"""POST /submit queues the order's first run itself, over Dagster's GraphQL API, after the answer.

Against a stand-in of the Dagster webserver (tests/api/conftest.py); the real webserver is in the
local-stack tests, where every order is started this way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from order_pipeline.keys import first_run_selection
from platform_config.settings import Settings
from platform_db import OrderRepository
from tests.api.conftest import StubDagster


def _starting(settings: Settings, graphql_url: str) -> Settings:
    return settings.model_copy(
        update={
            "dagster": settings.dagster.model_copy(update={"graphql_url": graphql_url}),
            "pipeline": settings.pipeline.model_copy(update={"api_starts_first_run": True}),
        }
    )


@pytest.fixture
def orders(settings: Settings) -> Iterator[OrderRepository]:
    repository = OrderRepository.from_url(settings.platform_db_url())
    yield repository
    repository.dispose()


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """The launches run on the API's own threads, after the answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the API did not launch in time"
        time.sleep(0.05)


def test_a_submitted_order_gets_its_partition_and_one_run(
    settings: Settings,
    stub_dagster: StubDagster,
    make_client: Callable[[Settings], TestClient],
    orders: OrderRepository,
    cloud_order: dict[str, Any],
) -> None:
    starting = _starting(settings, stub_dagster.url)
    with make_client(starting) as client:
        cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
        # The same order submitted again (same Idempotency-Key) starts nothing more.
        client.post("/submit", json=cloud_order, headers={"Idempotency-Key": "k-1"})
        client.post("/submit", json=cloud_order, headers={"Idempotency-Key": "k-1"})
        _eventually(lambda: stub_dagster.launched == 2)
        # A replay finds the order claimed: nothing more is launched.
        time.sleep(0.5)

    added = [
        body["variables"]["key"] for body in stub_dagster.received if "addDynamicPartition" in body["query"]
    ]
    assert added[0] == cfg_id and len(added) == 2
    launches = [
        body["variables"]["executionParams"] for body in stub_dagster.received if "launchRun" in body["query"]
    ]
    assert len(launches) == 2
    first = launches[0]
    expected = [list(key.path) for key in first_run_selection(starting.pipeline.edp_wait_in_run_seconds)]
    assert [selection["path"] for selection in first["selector"]["assetSelection"]] == expected
    tags = {tag["key"]: tag["value"] for tag in first["executionMetadata"]["tags"]}
    assert tags["dagster/partition"] == cfg_id
    assert tags["platform/edp"] == "submit"
    order = orders.get(cfg_id)
    assert order is not None
    # Claimed: order_sensor leaves it alone.
    assert cfg_id not in [waiting.cfg_id for waiting in orders.orders_without_first_run()]


def test_an_order_dagster_cannot_take_is_left_to_order_sensor(
    settings: Settings,
    make_client: Callable[[Settings], TestClient],
    orders: OrderRepository,
    cloud_order: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # settings' GraphQL URL is a closed port: Dagster is down.
    with make_client(_starting(settings, settings.dagster.webserver_graphql_url())) as client:
        answer = client.post("/submit", json=cloud_order)
        _eventually(lambda: "order_sensor starts it" in caplog.text)

    assert answer.status_code == 200
    cfg_id = answer.json()["cfg_id"]
    assert [waiting.cfg_id for waiting in orders.orders_without_first_run()] == [cfg_id]
    assert f"order {cfg_id}: first run not started" in caplog.text
    assert "order_sensor starts it" in caplog.text
