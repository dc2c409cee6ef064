"""Every state-changing operator call takes an Idempotency-Key, and acts once per key.

428 without one on every such route; a repeated key with the same request answers the first answer
and acts no more (no second rotation, no second email); the key of another call or another body is
a 409 naming the call it was used for.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from starlette.routing import Route
from starlette.testclient import TestClient

from api.operator_calls import request_sha256
from api.orders import PortalTokenRotation
from delivery.portal_links import PortalTokens
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.operator_calls import OperatorCallRepository
from platform_db.schema import operator_calls

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# The website's one call, which may carry a key and need not.
WEBSITE_CALLS = {"submit"}


def _order(settings: Settings, cfg_id: str) -> Any:
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        return orders.get(cfg_id)
    finally:
        orders.dispose()


def test_every_state_changing_operator_route_answers_428_without_a_key(
    client: TestClient, settings: Settings, cloud_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
    calls = [
        (method, route)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.name not in WEBSITE_CALLS
        for method in sorted((route.methods or set()) & STATE_CHANGING)
    ]
    # The calls the key matters most for are among them: none may slip out of this test.
    assert {route.name for _, route in calls} >= {
        "rotate_portal_token",
        "rotate_commissioning_token",
        "yank_portal_version",
        "unyank_portal_version",
        "revoke_signing_key",
        "redeliver",
        "retry_order",
        "resolve_email",
    }

    for method, route in calls:
        target = route.path_format.format(cfg_id=cfg_id, version=1, key_id="0123456789abcdef")
        answer = client.request(method, target)
        assert answer.status_code == 428, (method, target, answer.text)
        assert "Idempotency-Key" in answer.json()["detail"], (method, target)

    order = _order(settings, cfg_id)
    assert (order.portal_token_generation, order.commissioning_token_generation) == (0, 0)


def test_a_repeated_key_rotates_the_portal_link_once_and_answers_the_same_link(
    client: TestClient, settings: Settings, cloud_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
    rotate = f"/orders/{cfg_id}/portal-token"

    first = client.post(rotate, headers={"Idempotency-Key": "rotate-1"})
    # A double click: the same key, with the body that means the same (notify_customer false).
    again = client.post(rotate, json={"notify_customer": False}, headers={"Idempotency-Key": "rotate-1"})

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _order(settings, cfg_id).portal_token_generation == 1
    tokens = PortalTokens(settings.portal_token_key())
    assert first.json()["portal_url"].endswith(f"/portal/{tokens.token(cfg_id, 1)}")

    rotated_again = client.post(rotate, headers={"Idempotency-Key": "rotate-2"})
    assert rotated_again.json()["portal_url"] != first.json()["portal_url"]
    assert _order(settings, cfg_id).portal_token_generation == 2
    # The first key still answers its own link, which is dead by now: what that call did.
    assert client.post(rotate, headers={"Idempotency-Key": "rotate-1"}).json() == first.json()

    # platform_db keeps what made the link, never the link: it carries the customer's token.
    calls = OperatorCallRepository.from_url(settings.platform_db_url())
    try:
        stored = calls.by_key("rotate-1")
    finally:
        calls.dispose()
    assert stored is not None and stored.answer is not None
    assert tokens.token(cfg_id, 1) not in json.dumps(stored.answer)


def test_a_key_used_for_another_call_or_body_is_a_409_naming_it_and_nothing_acts(
    client: TestClient, settings: Settings, cloud_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
    other = client.post("/submit", json={**cloud_order, "site": {"name": "B", "timezone": "UTC"}}).json()[
        "cfg_id"
    ]
    key = {"Idempotency-Key": "used-once"}
    assert client.post(f"/orders/{cfg_id}/portal-token", headers=key).status_code == 200

    other_body = client.post(f"/orders/{cfg_id}/portal-token", json={"notify_customer": True}, headers=key)
    other_call = client.post(f"/orders/{cfg_id}/commissioning-token", headers=key)
    other_order = client.post(f"/orders/{other}/portal-token", headers=key)

    assert other_body.status_code == 409 and "another request body" in other_body.json()["detail"]
    for answer in (other_call, other_order):
        assert answer.status_code == 409
        assert f"POST /orders/{cfg_id}/portal-token" in answer.json()["detail"]
    order = _order(settings, cfg_id)
    assert (order.portal_token_generation, order.commissioning_token_generation) == (1, 0)
    assert _order(settings, other).portal_token_generation == 0


def test_a_call_whose_process_died_mid_call_is_not_redone_under_its_key(
    client: TestClient, settings: Settings, cloud_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
    rotate = f"/orders/{cfg_id}/portal-token"
    # What an API process leaves behind when it dies between the claim and the answer.
    calls = OperatorCallRepository.from_url(settings.platform_db_url())
    try:
        call, _ = calls.claim("rotate-died", f"POST {rotate}", request_sha256(PortalTokenRotation()))
        with calls._engine.begin() as connection:
            connection.execute(
                update(operator_calls)
                .where(operator_calls.c.id == call.id)
                .values(created_at=datetime.now(UTC) - timedelta(minutes=10))
            )
    finally:
        calls.dispose()

    answer = client.post(rotate, headers={"Idempotency-Key": "rotate-died"})

    assert answer.status_code == 409
    assert "never answered" in answer.json()["detail"] and "new Idempotency-Key" in answer.json()["detail"]
    assert "retry-after" not in answer.headers
    assert _order(settings, cfg_id).portal_token_generation == 0
