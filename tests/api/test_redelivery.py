"""POST /orders/{cfg_id}/redeliver against a stand-in of the Dagster webserver's GraphQL API."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from platform_config.settings import Settings
from platform_db.redeliveries import RedeliveryRepository
from tests.api.conftest import (
    WEBSITE,
    StubDagster,
    Submitted,
    assert_only_the_token_is_let_through,
    new_key,
    record_delivered_version,
)


@pytest.fixture
def delivered(api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any]) -> Callable[[], str]:
    def make() -> str:
        cfg_id = str(api.post("/submit", json=cloud_order).json()["cfg_id"])
        record_delivered_version(stub_settings, cfg_id)
        return cfg_id

    return make


def test_redeliver_launches_a_backfill_of_manifest_and_email(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster
) -> None:
    cfg_id = delivered()

    answer = api.post(f"/orders/{cfg_id}/redeliver", headers=new_key())

    assert answer.status_code == 202
    assert answer.json() == {
        "cfg_id": cfg_id,
        "backfill_id": "stub-backfill-1",
        "assets": ["order/manifest", "order/email"],
        "apk": False,
    }
    [params] = stub_dagster.backfill_params()
    assert params["partitionNames"] == [cfg_id]
    assert params["assetSelection"] == [{"path": ["order", "manifest"]}, {"path": ["order", "email"]}]


def test_with_apk_the_backfill_starts_at_the_apk(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster
) -> None:
    cfg_id = delivered()

    answer = api.post(f"/orders/{cfg_id}/redeliver", json={"apk": True}, headers=new_key())

    assert answer.status_code == 202
    assert answer.json()["assets"] == ["order/apk", "order/manifest", "order/email"]
    assert answer.json()["apk"] is True
    [params] = stub_dagster.backfill_params()
    assert params["assetSelection"] == [{"path": ["order", key]} for key in ("apk", "manifest", "email")]


def test_a_retried_request_answers_the_same_backfill_and_launches_nothing_new(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster, stub_settings: Settings
) -> None:
    cfg_id = delivered()
    headers = {"Idempotency-Key": "redeliver-42"}

    first = api.post(f"/orders/{cfg_id}/redeliver", json={"apk": True}, headers=headers)
    again = api.post(f"/orders/{cfg_id}/redeliver", json={"apk": True}, headers=headers)
    other = api.post(
        f"/orders/{cfg_id}/redeliver", json={"apk": True}, headers={"Idempotency-Key": "redeliver-43"}
    )

    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json() == first.json()
    assert other.json()["backfill_id"] != first.json()["backfill_id"]
    assert len(stub_dagster.received) == 2
    stored = RedeliveryRepository.from_url(stub_settings.platform_db_url())
    try:
        rows = stored.for_order(cfg_id)
    finally:
        stored.dispose()
    assert [(row.idempotency_key, row.backfill_id, row.apk) for row in rows] == [
        ("redeliver-42", first.json()["backfill_id"], True),
        ("redeliver-43", other.json()["backfill_id"], True),
    ]


def test_the_same_key_for_another_order_or_apk_value_is_a_conflict(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster
) -> None:
    cfg_id, other_order = delivered(), delivered()
    headers = {"Idempotency-Key": "redeliver-7"}
    assert api.post(f"/orders/{cfg_id}/redeliver", headers=headers).status_code == 202

    for answer in (
        api.post(f"/orders/{other_order}/redeliver", headers=headers),
        api.post(f"/orders/{cfg_id}/redeliver", json={"apk": True}, headers=headers),
    ):
        assert answer.status_code == 409
        assert "Idempotency-Key" in answer.json()["detail"]
    assert len(stub_dagster.received) == 1


def test_an_order_that_was_never_delivered_is_a_conflict(
    api: TestClient, cloud_order: dict[str, Any], stub_dagster: StubDagster
) -> None:
    cfg_id = api.post("/submit", json=cloud_order).json()["cfg_id"]

    answer = api.post(f"/orders/{cfg_id}/redeliver", headers={"Idempotency-Key": "early"})

    assert answer.status_code == 409
    assert "never delivered" in answer.json()["detail"]
    assert stub_dagster.received == []


@pytest.mark.parametrize("cfg_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_unknown_order_is_404(api: TestClient, stub_dagster: StubDagster, cfg_id: str) -> None:
    answer = api.post(f"/orders/{cfg_id}/redeliver", headers=new_key())

    assert answer.status_code == 404
    assert stub_dagster.received == []


@pytest.mark.parametrize("mode", ["graphql_error", "python_error", "bad_gateway"])
def test_a_dagster_error_is_a_503_and_the_key_stays_free_for_the_retry(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster, mode: str
) -> None:
    cfg_id = delivered()
    headers = {"Idempotency-Key": f"retry-{mode}"}
    stub_dagster.mode = mode

    failed = api.post(f"/orders/{cfg_id}/redeliver", headers=headers)

    stub_dagster.assert_refused(failed, "re-delivery")
    assert "Dagster" in failed.json()["detail"]

    stub_dagster.assert_the_key_launches_once_back(api, f"/orders/{cfg_id}/redeliver", headers)


def test_an_unreachable_dagster_is_a_503(settings: Settings, submitted: Submitted) -> None:
    # The settings fixture points the GraphQL URL at a port nothing listens on.
    with submitted(settings) as (client, cfg_id):
        record_delivered_version(settings, cfg_id)

        answer = client.post(f"/orders/{cfg_id}/redeliver", headers=new_key())

    assert answer.status_code == 503
    assert "is unreachable" in answer.json()["detail"]


def test_beta_requires_the_bearer_token(
    token_api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any], stub_dagster: StubDagster
) -> None:
    cfg_id = token_api.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"]
    record_delivered_version(stub_settings, cfg_id)

    assert_only_the_token_is_let_through(token_api, f"/orders/{cfg_id}/redeliver", stub_dagster)


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b'{"apk": "yes"}', JSON, 422),
        (b'{"apk": true, "force": 1}', JSON, 422),
        (b'{"apk": ', JSON, 400),
        (b"apk=true", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (None, {"Idempotency-Key": "has space"}, 400),
    ],
)
def test_a_bad_body_or_idempotency_key_is_a_clear_4xx(
    api: TestClient,
    delivered: Callable[[], str],
    stub_dagster: StubDagster,
    content: bytes | None,
    headers: dict[str, str],
    status: int,
) -> None:
    cfg_id = delivered()

    answer = api.post(f"/orders/{cfg_id}/redeliver", content=content, headers={**new_key(), **headers})

    assert answer.status_code == status
    assert answer.json()["detail"]
    assert stub_dagster.received == []


def test_the_openapi_document_describes_the_endpoint(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    post = document["paths"]["/orders/{cfg_id}/redeliver"]["post"]
    assert set(post["responses"]) >= {"202", "401", "404", "409", "429", "503"}
    schemas = document["components"]["schemas"]
    assert set(schemas["RedeliveryAccepted"]["properties"]) == {"cfg_id", "backfill_id", "assets", "apk"}
    assert schemas["RedeliveryRequest"]["additionalProperties"] is False
    assert "assets" in schemas["OrderView"]["properties"]


Bounded = Callable[..., AbstractContextManager[tuple[TestClient, str]]]


@pytest.fixture
def bounded(stub_settings: Settings, submitted: Submitted) -> Bounded:
    """``with bounded(total=..., per_day=...) as (client, cfg_id)``: the app with re-deliveries per order
    bounded so, and an order delivered once."""

    @contextmanager
    def serve(*, total: int, per_day: int) -> Iterator[tuple[TestClient, str]]:
        api = stub_settings.api.model_copy(
            update={"max_redeliveries_per_order": total, "max_redeliveries_per_order_per_day": per_day}
        )
        with submitted(stub_settings.model_copy(update={"api": api})) as (client, cfg_id):
            record_delivered_version(stub_settings, cfg_id)
            yield client, cfg_id

    return serve


def test_redeliveries_per_order_are_bounded(
    stub_settings: Settings, bounded: Bounded, cloud_order: dict[str, Any], stub_dagster: StubDagster
) -> None:
    with bounded(total=3, per_day=100) as (client, cfg_id):
        other = client.post(
            "/submit", json={**cloud_order, "site": {"name": "Other", "timezone": "UTC"}}
        ).json()["cfg_id"]
        record_delivered_version(stub_settings, other)
        accepted = [
            client.post(f"/orders/{cfg_id}/redeliver", headers={"Idempotency-Key": f"k-{n}"})
            for n in range(3)
        ]
        refused = client.post(f"/orders/{cfg_id}/redeliver", headers={"Idempotency-Key": "k-3"})
        retried = client.post(f"/orders/{cfg_id}/redeliver", headers={"Idempotency-Key": "k-1"})
        elsewhere = client.post(f"/orders/{other}/redeliver", headers=new_key())

    assert [answer.status_code for answer in accepted] == [202, 202, 202]
    assert refused.status_code == 429
    assert "api.max_redeliveries_per_order = 3" in refused.json()["detail"]
    assert "already re-delivered 3 time(s)" in refused.json()["detail"]
    # A retry of an accepted key still answers its backfill; other orders have their own count.
    assert retried.status_code == 202 and retried.json() == accepted[1].json()
    assert elsewhere.status_code == 202
    assert stub_dagster.launched == 4
    stored = RedeliveryRepository.from_url(stub_settings.platform_db_url())
    try:
        # The refused claim was given back: the key k-3 is not spent.
        assert [row.idempotency_key for row in stored.for_order(cfg_id)] == ["k-0", "k-1", "k-2"]
    finally:
        stored.dispose()


def test_redeliveries_per_day_are_bounded_with_a_retry_after(
    stub_settings: Settings, bounded: Bounded, stub_dagster: StubDagster
) -> None:
    from sqlalchemy import update

    from platform_db.repository import create_platform_db_engine
    from platform_db.schema import redeliveries

    with bounded(total=20, per_day=2) as (client, cfg_id):
        assert [
            client.post(f"/orders/{cfg_id}/redeliver", headers=new_key()).status_code for _ in range(2)
        ] == [202, 202]
        refused = client.post(f"/orders/{cfg_id}/redeliver", headers=new_key())

        assert refused.status_code == 429
        assert "api.max_redeliveries_per_order_per_day = 2" in refused.json()["detail"]
        assert 23 * 3600 < int(refused.headers["retry-after"]) <= 24 * 3600 + 1

        # A day later the window has room again.
        engine = create_platform_db_engine(stub_settings.platform_db_url())
        try:
            with engine.begin() as connection:
                connection.execute(
                    update(redeliveries).values(created_at=datetime.now(UTC) - timedelta(hours=25))
                )
        finally:
            engine.dispose()
        assert client.post(f"/orders/{cfg_id}/redeliver", headers=new_key()).status_code == 202
    assert stub_dagster.launched == 3


def test_concurrent_redeliveries_at_the_limit_launch_one(
    bounded: Bounded,
    stub_dagster: StubDagster,
    race_launches: Callable[[int, Callable[[int], object]], list[int]],
) -> None:
    from api.redelivery import _redeliver

    with bounded(total=1, per_day=1) as (client, cfg_id):
        state = client.app.state.api  # type: ignore[attr-defined]

        outcomes = race_launches(4, lambda index: _redeliver(state, cfg_id, False, f"racing-{index}"))

    assert sorted(outcomes) == [202, 429, 429, 429]
    assert stub_dagster.launched == 1
