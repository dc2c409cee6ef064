"""POST /orders/{cfg_id}/commissioning-token against a stand-in of the Dagster webserver's GraphQL API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.commissioning import _rotate_once
from delivery.portal_links import PortalTokens
from platform_config.settings import Settings
from platform_db import OrderRepository
from tests.api.conftest import (
    WEBSITE,
    RaceLaunches,
    StubDagster,
    assert_only_the_token_is_let_through,
    new_key,
    record_delivered_version,
)


def _generation(settings: Settings, cfg_id: str) -> int:
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        order = orders.get(cfg_id)
    finally:
        orders.dispose()
    assert order is not None
    return order.commissioning_token_generation


@pytest.fixture
def delivered(api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any]) -> Callable[[], str]:
    def make() -> str:
        cfg_id = str(api.post("/submit", json=cloud_order).json()["cfg_id"])
        record_delivered_version(stub_settings, cfg_id)
        return cfg_id

    return make


def path(cfg_id: str) -> str:
    return f"/orders/{cfg_id}/commissioning-token"


def test_a_rotation_bumps_the_generation_and_rebuilds_publishes_and_emails_the_bundle(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster, stub_settings: Settings
) -> None:
    cfg_id = delivered()
    tokens = PortalTokens(stub_settings.portal_token_key())
    before = tokens.commissioning_token(cfg_id, 0)

    answer = api.post(path(cfg_id), headers=new_key())

    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "cfg_id": cfg_id,
        "commissioning_token_generation": 1,
        "backfill_id": "stub-backfill-1",
        "assets": ["order/cfn_or_iso", "order/manifest", "order/email"],
    }
    # The token itself is on the portal page only, never in an API answer.
    assert before not in answer.text and tokens.commissioning_token(cfg_id, 1) not in answer.text
    assert _generation(stub_settings, cfg_id) == 1
    [params] = stub_dagster.backfill_params()
    assert params["partitionNames"] == [cfg_id]
    # The bundle (secrets.env) is built by order/cfn_or_iso; a plain re-delivery would ship the old one.
    assert params["assetSelection"] == [
        {"path": ["order", "cfn_or_iso"]},
        {"path": ["order", "manifest"]},
        {"path": ["order", "email"]},
    ]
    assert {"key": "platform/redelivery", "value": "commissioning-token"} in params["tags"]


def test_a_repeated_key_answers_the_same_rotation_and_launches_nothing_new(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster, stub_settings: Settings
) -> None:
    cfg_id = delivered()
    headers = {"Idempotency-Key": "rotate-commissioning-1"}

    first = api.post(path(cfg_id), headers=headers)
    again = api.post(path(cfg_id), headers=headers)
    other = api.post(path(cfg_id), headers=new_key())

    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert other.json()["commissioning_token_generation"] == 2
    assert stub_dagster.launched == 2
    assert _generation(stub_settings, cfg_id) == 2


def test_concurrent_requests_with_one_key_rotate_once(
    api: TestClient,
    delivered: Callable[[], str],
    stub_dagster: StubDagster,
    stub_settings: Settings,
    race_launches: RaceLaunches,
) -> None:
    cfg_id = delivered()
    state = api.app.state.api  # type: ignore[attr-defined]

    outcomes = race_launches(6, lambda index: _rotate_once(state, "double-click", cfg_id))

    # The one that claimed the key acts; the others are told it is under way, or get its answer.
    assert outcomes.count(202) >= 1 and set(outcomes) <= {202, 409}
    assert stub_dagster.launched == 1
    assert _generation(stub_settings, cfg_id) == 1


def test_an_order_never_delivered_is_a_409_and_the_key_stays_free(
    api: TestClient, cloud_order: dict[str, Any], stub_dagster: StubDagster, stub_settings: Settings
) -> None:
    cfg_id = api.post("/submit", json=cloud_order).json()["cfg_id"]
    headers = {"Idempotency-Key": "too-early"}

    answer = api.post(path(cfg_id), headers=headers)

    assert answer.status_code == 409
    assert "never delivered" in answer.json()["detail"]
    assert stub_dagster.received == [] and _generation(stub_settings, cfg_id) == 0
    record_delivered_version(stub_settings, cfg_id)
    assert api.post(path(cfg_id), headers=headers).status_code == 202


def test_a_launch_dagster_refuses_keeps_the_token_and_frees_the_key(
    api: TestClient, delivered: Callable[[], str], stub_dagster: StubDagster, stub_settings: Settings
) -> None:
    cfg_id = delivered()
    headers = {"Idempotency-Key": "rotate-while-dagster-is-down"}
    stub_dagster.mode = "bad_gateway"

    failed = api.post(path(cfg_id), headers=headers)

    stub_dagster.assert_refused(failed, "re-delivery")
    # Nothing will build the new generation, so the portal keeps showing the token the site has.
    assert _generation(stub_settings, cfg_id) == 0
    stub_dagster.assert_the_key_launches_once_back(api, path(cfg_id), headers)
    assert _generation(stub_settings, cfg_id) == 1


def test_over_a_redelivery_limit_it_is_429_and_nothing_changes(
    stub_settings: Settings,
    make_client: Callable[[Settings], TestClient],
    cloud_order: dict[str, Any],
    stub_dagster: StubDagster,
) -> None:
    bounded = stub_settings.model_copy(
        update={"api": stub_settings.api.model_copy(update={"max_redeliveries_per_order": 1})}
    )
    with make_client(bounded) as client:
        cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
        record_delivered_version(stub_settings, cfg_id, 1)
        record_delivered_version(stub_settings, cfg_id, 2)

        answer = client.post(path(cfg_id), headers=new_key())

    assert answer.status_code == 429
    assert "api.max_redeliveries_per_order = 1" in answer.json()["detail"]
    assert stub_dagster.received == [] and _generation(stub_settings, cfg_id) == 0


@pytest.mark.parametrize("cfg_id", [str(uuid.uuid4()), "not-a-uuid", "%00"])
def test_an_unknown_order_is_404_and_claims_no_key(
    api: TestClient, stub_dagster: StubDagster, cfg_id: str
) -> None:
    headers = {"Idempotency-Key": "for-nothing"}

    answer = api.post(path(cfg_id), headers=headers)

    assert answer.status_code == 404
    assert stub_dagster.received == []
    assert api.app.state.api.operator_calls.by_key("for-nothing") is None  # type: ignore[attr-defined]


def test_beta_lets_only_an_operator_with_a_key_rotate(
    token_api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any], stub_dagster: StubDagster
) -> None:
    cfg_id = token_api.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"]
    record_delivered_version(stub_settings, cfg_id)

    assert_only_the_token_is_let_through(token_api, path(cfg_id), stub_dagster)
