"""POST /orders/{cfg_id}/retry: a failed order back on its way, from where its assets stopped.

The app runs inline against a stand-in of the Dagster webserver's GraphQL API (the launches) and a
fake of the order's asset statuses in Dagster (where the order stopped).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.asset_status import AssetStatusView
from api.order_retry import restart_plan
from contracts.orders import OrderStatus
from contracts.records import Order
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.order_retries import OrderRetryRepository
from tests.api.conftest import (
    WEBSITE,
    StubDagster,
    Submitted,
    assert_only_the_token_is_let_through,
    new_key,
)

ASSETS = ("config", "edp_artifacts", "cfn_or_iso", "apk", "manifest", "email")
BUILD = ["order/cfn_or_iso", "order/apk", "order/manifest", "order/email"]
EDP_FAILED = "EDP job job-1 failed: topology has no devices"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def views(*materialized: str, **others: str) -> dict[str, AssetStatusView]:
    """Asset statuses: ``materialized`` ones one minute apart in lineage order; ``others`` by name."""
    found: dict[str, AssetStatusView] = {}
    for index, name in enumerate(ASSETS):
        if name in materialized:
            found[f"order/{name}"] = AssetStatusView(
                status="materialized",
                last_materialized_at=T0 + timedelta(minutes=index),
                run_id=f"run-{index}",
            )
        else:
            found[f"order/{name}"] = AssetStatusView(status=others.get(name, "not_started"))  # type: ignore[arg-type]
    return found


class FakeAssetStatus:
    """What AssetStatusReader.statuses answers: the same statuses for every order, or None."""

    def __init__(self) -> None:
        self.answer: dict[str, AssetStatusView] | None = None
        self.asked: list[str] = []

    def statuses(self, cfg_id: str) -> dict[str, AssetStatusView] | None:
        self.asked.append(cfg_id)
        return self.answer

    def close(self) -> None:
        pass


@pytest.fixture
def assets() -> FakeAssetStatus:
    return FakeAssetStatus()


def _with_assets(client: TestClient, assets: FakeAssetStatus) -> None:
    app: Any = client.app
    app.state.api = dataclasses.replace(app.state.api, asset_status=assets)


@pytest.fixture
def api(api: TestClient, assets: FakeAssetStatus) -> TestClient:
    """The app against ``stub_dagster``, reading asset statuses from ``assets``."""
    _with_assets(api, assets)
    return api


@pytest.fixture
def orders(api: TestClient, stub_settings: Settings) -> Iterator[OrderRepository]:
    repository = OrderRepository.from_url(stub_settings.platform_db_url())
    yield repository
    repository.dispose()


@pytest.fixture
def order_in(
    api: TestClient, orders: OrderRepository, cloud_order: dict[str, Any]
) -> Callable[[OrderStatus], str]:
    """A new order moved along the lifecycle to ``status``; a failed one failed at EDP."""

    def make(status: OrderStatus) -> str:
        cfg_id = str(api.post("/submit", json=cloud_order).json()["cfg_id"])
        path = {
            OrderStatus.EDP_PENDING: [],
            OrderStatus.BUILDING: [OrderStatus.BUILDING],
            OrderStatus.DELIVERED: [OrderStatus.BUILDING, OrderStatus.DELIVERED],
            OrderStatus.FAILED: [],
        }[status]
        assert orders.record_edp_job(cfg_id, "job-1")
        for step in path:
            assert orders.move(cfg_id, step)
        if status is OrderStatus.FAILED:
            assert orders.fail(cfg_id, EDP_FAILED) is OrderStatus.FAILED
        return cfg_id

    return make


@pytest.fixture
def failed(order_in: Callable[[OrderStatus], str]) -> Callable[[], str]:
    return lambda: order_in(OrderStatus.FAILED)


Retry = Callable[..., tuple[str, Any]]


@pytest.fixture
def retry_failed(api: TestClient, failed: Callable[[], str], assets: FakeAssetStatus) -> Retry:
    """``retry_failed(statuses, headers=None)``: a new failed order whose assets stand at ``statuses``,
    and the answer to its retry (under a new Idempotency-Key unless ``headers`` holds one)."""

    def retry(statuses: dict[str, AssetStatusView], headers: dict[str, str] | None = None) -> tuple[str, Any]:
        cfg_id = failed()
        assets.answer = statuses
        return cfg_id, api.post(f"/orders/{cfg_id}/retry", headers=headers or new_key())

    return retry


def _fail_at_edp(settings: Settings, cfg_id: str) -> None:
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        orders.record_edp_job(cfg_id, "job-1")
        orders.fail(cfg_id, EDP_FAILED)
    finally:
        orders.dispose()


def _order(settings: Settings, cfg_id: str) -> Order | None:
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        return orders.get(cfg_id)
    finally:
        orders.dispose()


def _retries(settings: Settings, cfg_id: str) -> list[Any]:
    stored = OrderRetryRepository.from_url(settings.platform_db_url())
    try:
        return stored.for_order(cfg_id)
    finally:
        stored.dispose()


# --- where it restarts --------------------------------------------------------------------------


def test_after_a_failed_edp_job_it_restarts_at_config_with_a_new_edp_job(
    retry_failed: Retry, stub_dagster: StubDagster, orders: OrderRepository
) -> None:
    cfg_id, answer = retry_failed(views("config"), {"Idempotency-Key": "retry-1"})

    assert answer.status_code == 202
    assert answer.json() == {
        "cfg_id": cfg_id,
        "backfill_id": "stub-backfill-1",
        "assets": ["order/config"],
        "new_edp_job": True,
    }
    [params] = stub_dagster.backfill_params()
    assert params["partitionNames"] == [cfg_id]
    assert params["assetSelection"] == [{"path": ["order", "config"]}]
    # The run queue's EDP limit applies to it, as to order_sensor's config runs.
    assert {"key": "platform/edp", "value": "submit"} in params["tags"]
    order = orders.get(cfg_id)
    assert order is not None
    assert (order.status, order.edp_attempt, order.edp_job_id, order.last_error) == (
        OrderStatus.RECEIVED,
        1,
        None,
        None,
    )


def test_after_a_failed_cfn_or_iso_it_rebuilds_from_there(
    retry_failed: Retry, stub_dagster: StubDagster, orders: OrderRepository
) -> None:
    cfg_id, answer = retry_failed(views("config", "edp_artifacts", "apk", cfn_or_iso="failed"))

    assert answer.status_code == 202
    assert answer.json()["assets"] == BUILD
    assert answer.json()["new_edp_job"] is False
    [params] = stub_dagster.backfill_params()
    assert params["assetSelection"] == [
        {"path": ["order", name]} for name in ("cfn_or_iso", "apk", "manifest", "email")
    ]
    assert all(tag["key"] != "platform/edp" for tag in params["tags"])
    order = orders.get(cfg_id)
    assert order is not None
    assert (order.status, order.edp_attempt, order.edp_job_id) == (OrderStatus.BUILDING, 0, "job-1")


def test_with_only_the_email_missing_it_sends_the_email(
    retry_failed: Retry, stub_dagster: StubDagster
) -> None:
    _, answer = retry_failed(
        views("config", "edp_artifacts", "cfn_or_iso", "apk", "manifest", email="failed")
    )

    assert answer.status_code == 202
    assert answer.json()["assets"] == ["order/email"]
    [params] = stub_dagster.backfill_params()
    assert params["assetSelection"] == [{"path": ["order", "email"]}]


@pytest.mark.parametrize(
    ("statuses", "expected", "new_edp_job", "status"),
    [
        (views(), ["order/config"], True, OrderStatus.RECEIVED),
        (views(config="failed"), ["order/config"], True, OrderStatus.RECEIVED),
        (views("config", edp_artifacts="failed"), ["order/config"], True, OrderStatus.RECEIVED),
        (views("config", "edp_artifacts"), BUILD, False, OrderStatus.BUILDING),
        (
            views("config", "edp_artifacts", "cfn_or_iso", apk="failed"),
            BUILD[1:],
            False,
            OrderStatus.BUILDING,
        ),
        (
            views("config", "edp_artifacts", "cfn_or_iso", "apk", manifest="failed"),
            BUILD[2:],
            False,
            OrderStatus.BUILDING,
        ),
        (
            views("config", "edp_artifacts", "cfn_or_iso", "apk", "manifest"),
            BUILD[3:],
            False,
            OrderStatus.BUILDING,
        ),
        # Everything materialized, yet the order failed (a failed asset check, say): from the manifest.
        (views(*ASSETS), BUILD[2:], False, OrderStatus.BUILDING),
    ],
)
def test_the_restart_plan(
    statuses: dict[str, AssetStatusView], expected: list[str], new_edp_job: bool, status: OrderStatus
) -> None:
    plan = restart_plan(statuses)
    assert (plan.asset_names, plan.new_edp_job, plan.status) == (expected, new_edp_job, status)


def test_an_asset_older_than_what_it_is_built_from_counts_as_missing() -> None:
    # A retry's config submitted a new EDP job, which failed: the artifacts are the old job's.
    statuses = views("config", "edp_artifacts", "cfn_or_iso", "apk", "manifest", "email")
    statuses["order/config"] = AssetStatusView(
        status="materialized", last_materialized_at=T0 + timedelta(hours=1)
    )
    assert restart_plan(statuses).asset_names == ["order/config"]
    # A cfn_or_iso rebuilt after the last portal version: the manifest is stale.
    statuses = views("config", "edp_artifacts", "cfn_or_iso", "apk", "manifest", "email")
    statuses["order/cfn_or_iso"] = AssetStatusView(
        status="materialized", last_materialized_at=T0 + timedelta(hours=1)
    )
    assert restart_plan(statuses).asset_names == BUILD[2:]


# --- what is refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (OrderStatus.DELIVERED, "/redeliver"),
        (OrderStatus.BUILDING, "still on its way"),
        (OrderStatus.EDP_PENDING, "still on its way"),
    ],
)
def test_an_order_that_did_not_fail_is_a_conflict(
    api: TestClient,
    order_in: Callable[[OrderStatus], str],
    assets: FakeAssetStatus,
    stub_dagster: StubDagster,
    status: OrderStatus,
    hint: str,
    stub_settings: Settings,
) -> None:
    cfg_id = order_in(status)
    assets.answer = views("config")

    answer = api.post(f"/orders/{cfg_id}/retry", headers={"Idempotency-Key": "not-failed"})

    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert f"this order is {status.value}, not failed; only failed orders are retried" in detail
    assert hint in detail
    assert stub_dagster.received == []
    assert _retries(stub_settings, cfg_id) == []


@pytest.mark.parametrize("cfg_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_unknown_order_is_404(api: TestClient, stub_dagster: StubDagster, cfg_id: str) -> None:
    answer = api.post(f"/orders/{cfg_id}/retry", headers=new_key())

    assert answer.status_code == 404
    assert stub_dagster.received == []


def test_a_run_still_in_progress_is_a_conflict(
    retry_failed: Retry, stub_dagster: StubDagster, orders: OrderRepository
) -> None:
    cfg_id, answer = retry_failed(views("config", "edp_artifacts", cfn_or_iso="running"))

    assert answer.status_code == 409
    assert "order/cfn_or_iso" in answer.json()["detail"]
    assert stub_dagster.received == []
    order = orders.get(cfg_id)
    assert order is not None and order.status is OrderStatus.FAILED


# --- idempotency -----------------------------------------------------------------------------------


def test_a_retried_request_answers_the_same_backfill_and_launches_nothing_new(
    api: TestClient,
    failed: Callable[[], str],
    assets: FakeAssetStatus,
    stub_dagster: StubDagster,
    stub_settings: Settings,
    orders: OrderRepository,
) -> None:
    cfg_id, other = failed(), failed()
    assets.answer = views("config")
    headers = {"Idempotency-Key": "retry-42"}

    first = api.post(f"/orders/{cfg_id}/retry", headers=headers)
    # The order is received now (not failed), and Dagster moved on: the key still answers the same.
    assets.answer = views("config", "edp_artifacts", cfn_or_iso="failed")
    again = api.post(f"/orders/{cfg_id}/retry", headers=headers)
    elsewhere = api.post(f"/orders/{other}/retry", headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert elsewhere.status_code == 409
    assert "Idempotency-Key" in elsewhere.json()["detail"]
    assert stub_dagster.launched == 1
    order = orders.get(cfg_id)
    assert order is not None and order.edp_attempt == 1
    [row] = _retries(stub_settings, cfg_id)
    assert (row.idempotency_key, row.backfill_id, row.assets, row.new_edp_job) == (
        "retry-42",
        "stub-backfill-1",
        ("order/config",),
        True,
    )


def test_concurrent_retries_of_one_order_launch_one(
    api: TestClient,
    failed: Callable[[], str],
    assets: FakeAssetStatus,
    stub_dagster: StubDagster,
    race_launches: Callable[[int, Callable[[int], object]], list[int]],
) -> None:
    from api.order_retry import _retry

    cfg_id = failed()
    assets.answer = views("config", "edp_artifacts", cfn_or_iso="failed")
    state = api.app.state.api  # type: ignore[attr-defined]

    outcomes = race_launches(4, lambda index: _retry(state, cfg_id, f"racing-{index}"))

    assert sorted(outcomes) == [202, 409, 409, 409]
    assert stub_dagster.launched == 1


# --- Dagster away ----------------------------------------------------------------------------------


def test_an_unreadable_dagster_instance_is_a_503_and_nothing_moves(
    stub_settings: Settings, submitted: Submitted, stub_dagster: StubDagster
) -> None:
    # The real reader: the settings' Dagster home does not exist.
    with submitted(stub_settings) as (client, cfg_id):
        _fail_at_edp(stub_settings, cfg_id)

        answer = client.post(f"/orders/{cfg_id}/retry", headers={"Idempotency-Key": "dagster-away"})

        order = _order(stub_settings, cfg_id)

    assert answer.status_code == 503
    assert "Dagster webserver cannot be reached or read" in answer.json()["detail"]
    assert answer.headers["retry-after"]
    assert order is not None
    assert (order.status, order.last_error, order.edp_attempt) == (OrderStatus.FAILED, EDP_FAILED, 0)
    assert stub_dagster.received == []
    assert _retries(stub_settings, cfg_id) == []


@pytest.mark.parametrize("mode", ["bad_gateway", "python_error"])
def test_a_launch_dagster_refuses_is_a_503_the_order_stays_failed_and_the_key_is_free(
    api: TestClient,
    retry_failed: Retry,
    stub_dagster: StubDagster,
    orders: OrderRepository,
    stub_settings: Settings,
    mode: str,
) -> None:
    headers = {"Idempotency-Key": f"retry-{mode}"}
    stub_dagster.mode = mode

    cfg_id, refused = retry_failed(views("config", "edp_artifacts", cfn_or_iso="failed"), headers)

    stub_dagster.assert_refused(refused, "retry")
    order = orders.get(cfg_id)
    assert order is not None
    assert (order.status, order.last_error) == (OrderStatus.FAILED, EDP_FAILED)
    assert _retries(stub_settings, cfg_id) == []

    stub_dagster.assert_the_key_launches_once_back(api, f"/orders/{cfg_id}/retry", headers)


def test_an_unreachable_dagster_webserver_is_a_503(settings: Settings, submitted: Submitted) -> None:
    # The settings fixture points the GraphQL URL at a port nothing listens on.
    with submitted(settings) as (client, cfg_id):
        fake = FakeAssetStatus()
        fake.answer = views("config")
        _with_assets(client, fake)
        _fail_at_edp(settings, cfg_id)

        answer = client.post(f"/orders/{cfg_id}/retry", headers=new_key())

        order = _order(settings, cfg_id)

    assert answer.status_code == 503
    assert "is unreachable" in answer.json()["detail"]
    assert order is not None and (order.status, order.last_error) == (OrderStatus.FAILED, EDP_FAILED)


# --- the rest of the API's rules -------------------------------------------------------------------


def test_the_bearer_token_is_required_where_tokens_are(
    token_api: TestClient,
    stub_settings: Settings,
    cloud_order: dict[str, Any],
    assets: FakeAssetStatus,
    stub_dagster: StubDagster,
) -> None:
    assets.answer = views("config")
    _with_assets(token_api, assets)
    cfg_id = token_api.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"]
    _fail_at_edp(stub_settings, cfg_id)

    assert_only_the_token_is_let_through(token_api, f"/orders/{cfg_id}/retry", stub_dagster)
    # Only the request with the token read the asset statuses.
    assert assets.asked == [cfg_id]


def test_an_invalid_idempotency_key_is_400(api: TestClient, failed: Callable[[], str]) -> None:
    answer = api.post(f"/orders/{failed()}/retry", headers={"Idempotency-Key": "has space"})
    assert answer.status_code == 400


def test_the_openapi_document_describes_the_endpoint(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    post = document["paths"]["/orders/{cfg_id}/retry"]["post"]
    assert set(post["responses"]) >= {"202", "401", "404", "409", "503"}
    assert post["security"] == [{"operator": []}]
    schemas = document["components"]["schemas"]
    assert set(schemas["OrderRetryAccepted"]["properties"]) == {
        "cfg_id",
        "backfill_id",
        "assets",
        "new_edp_job",
    }
