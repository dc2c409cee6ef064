"""POST /orders/{cfg_id}/email (an operator resolves an unknown email) and the emails in GET /orders."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from contracts.orders import EmailState, OrderStatus
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from tests.api.conftest import WEBSITE, StubDagster, assert_only_the_token_is_let_through, new_key

LOST = "SES may have sent the email, but its answer was lost: ConnectionClosedError: Connection was closed"


@pytest.fixture
def deliveries(api: TestClient, stub_settings: Settings) -> Iterator[DeliveryRepository]:
    repository = DeliveryRepository.from_url(stub_settings.platform_db_url())
    yield repository
    repository.dispose()


def _shipped(settings: Settings, cfg_id: str, emails: list[str]) -> None:
    """Publish a portal version per entry of ``emails`` and record its email: "sent", "unknown" or "none".

    The order ends where the email step leaves it: email_unknown when the last email is unknown.
    """
    deliveries = DeliveryRepository.from_url(settings.platform_db_url())
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        for status in (OrderStatus.EDP_PENDING, OrderStatus.BUILDING):
            orders.move(cfg_id, status)
        for version, outcome in enumerate(emails, start=1):
            deliveries.claim_portal_version(cfg_id, f"run-{version}")
            deliveries.record_publication(
                cfg_id, version, manifest_key=f"portal/{cfg_id}/v{version}/manifest.json", artifact_count=3
            )
            if outcome != "none":
                assert deliveries.claim_email(cfg_id, version)
            if outcome == "sent":
                deliveries.record_email_sent(cfg_id, version, f"msg-{version}")
                orders.move(cfg_id, OrderStatus.DELIVERED)
            elif outcome == "unknown":
                deliveries.mark_unknown(cfg_id, version, LOST)
                orders.move(
                    cfg_id, OrderStatus.EMAIL_UNKNOWN, error=f"the email of portal version {version}: {LOST}"
                )
    finally:
        deliveries.dispose()
        orders.dispose()


@pytest.fixture
def shipped(api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any]) -> Callable[..., str]:
    def make(*emails: str) -> str:
        cfg_id = str(api.post("/submit", json=cloud_order).json()["cfg_id"])
        _shipped(stub_settings, cfg_id, list(emails or ["unknown"]))
        return cfg_id

    return make


def _status(api: TestClient, cfg_id: str) -> str:
    return str(api.get(f"/orders/{cfg_id}").json()["status"])


# --- mark_sent ---------------------------------------------------------------------------------


def test_mark_sent_moves_the_order_from_email_unknown_to_delivered(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster
) -> None:
    cfg_id = shipped("unknown")
    assert _status(api, cfg_id) == "email_unknown"

    answer = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key()
    )

    assert answer.status_code == 200
    body = answer.json()
    assert (body["cfg_id"], body["version"], body["action"], body["backfill_id"]) == (
        cfg_id,
        1,
        "mark_sent",
        None,
    )
    assert body["order_status"] == "delivered"
    assert body["email"]["state"] == "marked_sent"
    assert body["email"]["resolution"] == "mark_sent" and body["email"]["resolved_at"]
    assert _status(api, cfg_id) == "delivered"
    assert stub_dagster.received == []


def test_the_order_stays_email_unknown_while_another_version_is_unknown(
    api: TestClient, shipped: Callable[..., str]
) -> None:
    cfg_id = shipped("unknown", "unknown")

    first = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key())
    assert first.status_code == 200 and first.json()["order_status"] == "email_unknown"

    second = api.post(
        f"/orders/{cfg_id}/email", json={"version": 2, "action": "mark_sent"}, headers=new_key()
    )
    assert second.status_code == 200 and second.json()["order_status"] == "delivered"


def test_a_repeated_mark_sent_with_the_same_key_answers_the_same(
    api: TestClient, shipped: Callable[..., str], deliveries: DeliveryRepository
) -> None:
    cfg_id = shipped("unknown")
    headers = {"Idempotency-Key": "mark-1"}

    first = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=headers)
    again = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=headers)
    another_key = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key()
    )

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert another_key.status_code == 409 and "already marked sent" in another_key.json()["detail"]
    assert len(deliveries.resolutions(cfg_id)) == 1


# --- resend ------------------------------------------------------------------------------------


def test_resend_releases_the_claim_and_launches_a_backfill_of_the_email(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster, deliveries: DeliveryRepository
) -> None:
    cfg_id = shipped("unknown")

    answer = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=new_key())

    assert answer.status_code == 202
    body = answer.json()
    assert (body["action"], body["backfill_id"], body["order_status"]) == (
        "resend",
        "stub-backfill-1",
        "email_unknown",
    )
    assert body["email"]["state"] == "resend_requested"
    [params] = stub_dagster.backfill_params()
    assert params["partitionNames"] == [cfg_id]
    assert params["assetSelection"] == [{"path": ["order", "email"]}]
    assert {"key": "platform/email-resend", "value": "api"} in params["tags"]
    # The backfill's email step may claim it (once).
    assert deliveries.claim_email(cfg_id, 1) is True
    assert deliveries.claim_email(cfg_id, 1) is False


def test_a_repeated_resend_with_the_same_key_launches_nothing_new(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster, deliveries: DeliveryRepository
) -> None:
    cfg_id = shipped("unknown")
    headers = {"Idempotency-Key": "resend-1"}

    first = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=headers)
    # The backfill's step has sent it in the meantime.
    assert deliveries.claim_email(cfg_id, 1)
    deliveries.record_email_sent(cfg_id, 1, "msg-resent")
    again = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json()["backfill_id"] == first.json()["backfill_id"] == "stub-backfill-1"
    assert again.json()["email"]["state"] == "sent" and again.json()["email"]["message_id"] == "msg-resent"
    assert stub_dagster.launched == 1


def test_the_same_key_for_another_resolution_is_a_conflict(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster
) -> None:
    cfg_id, other = shipped("unknown"), shipped("unknown")
    headers = {"Idempotency-Key": "op-7"}
    assert (
        api.post(
            f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=headers
        ).status_code
        == 202
    )

    for path, body in (
        (f"/orders/{cfg_id}/email", {"version": 1, "action": "mark_sent"}),
        (f"/orders/{other}/email", {"version": 1, "action": "resend"}),
    ):
        answer = api.post(path, json=body, headers=headers)
        assert answer.status_code == 409
        assert "Idempotency-Key" in answer.json()["detail"]
    assert stub_dagster.launched == 1


def test_a_second_resend_right_after_the_first_is_a_conflict_mark_sent_cancels_it(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster, deliveries: DeliveryRepository
) -> None:
    cfg_id = shipped("unknown")
    assert (
        api.post(
            f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=new_key()
        ).status_code
        == 202
    )

    again = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=new_key())

    assert again.status_code == 409
    assert "was requested (backfill stub-backfill-1)" in again.json()["detail"]
    assert stub_dagster.launched == 1
    cancelled = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key()
    )
    assert cancelled.status_code == 200 and cancelled.json()["order_status"] == "delivered"
    assert deliveries.claim_email(cfg_id, 1) is False  # the pending backfill sends nothing


def test_only_the_newest_version_can_be_resent(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster
) -> None:
    cfg_id = shipped("unknown", "sent")

    answer = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=new_key())

    assert answer.status_code == 409
    assert "only the newest portal version (2)" in answer.json()["detail"]
    assert stub_dagster.received == []
    # It may still be marked sent; the order is delivered already (version 2 was sent).
    marked = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key()
    )
    assert marked.status_code == 200 and marked.json()["order_status"] == "delivered"


@pytest.mark.parametrize("mode", ["graphql_error", "bad_gateway"])
def test_a_dagster_error_is_a_503_and_the_email_unknown_again(
    api: TestClient,
    shipped: Callable[..., str],
    stub_dagster: StubDagster,
    deliveries: DeliveryRepository,
    mode: str,
) -> None:
    cfg_id = shipped("unknown")
    headers = {"Idempotency-Key": f"resend-{mode}"}
    stub_dagster.mode = mode

    failed = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=headers)

    assert failed.status_code == 503
    assert failed.json()["detail"].startswith("the resend was not launched: ")
    assert failed.headers["retry-after"]
    email = deliveries.email_of(cfg_id, 1)
    assert email is not None and email.state is EmailState.UNKNOWN
    assert deliveries.claim_email(cfg_id, 1) is False

    stub_dagster.mode = "success"
    retried = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=headers)
    assert retried.status_code == 202 and retried.json()["backfill_id"] == "stub-backfill-1"


# --- what cannot be resolved ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("emails", "version", "detail"),
    [
        (["sent"], 1, "was sent (SES message id msg-1)"),
        (["none"], 1, "was never claimed"),
        (["unknown"], 2, "has no portal version 2 (published: 1)"),
    ],
)
@pytest.mark.parametrize("action", ["mark_sent", "resend"])
def test_an_email_that_is_not_unknown_is_a_conflict(
    api: TestClient,
    shipped: Callable[..., str],
    stub_dagster: StubDagster,
    emails: list[str],
    version: int,
    detail: str,
    action: str,
) -> None:
    cfg_id = shipped(*emails)
    before = _status(api, cfg_id)

    answer = api.post(
        f"/orders/{cfg_id}/email",
        json={"version": version, "action": action},
        headers={"Idempotency-Key": "k"},
    )

    assert answer.status_code == 409
    assert detail in answer.json()["detail"]
    assert stub_dagster.received == []
    assert _status(api, cfg_id) == before


def test_an_order_without_portal_versions_is_a_conflict(api: TestClient, cloud_order: dict[str, Any]) -> None:
    cfg_id = api.post("/submit", json=cloud_order).json()["cfg_id"]

    answer = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "mark_sent"}, headers=new_key()
    )

    assert answer.status_code == 409
    assert "no portal version 1 (published: none yet)" in answer.json()["detail"]


@pytest.mark.parametrize("cfg_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_unknown_order_is_404(api: TestClient, stub_dagster: StubDagster, cfg_id: str) -> None:
    answer = api.post(f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers=new_key())

    assert answer.status_code == 404
    assert stub_dagster.received == []


@pytest.mark.parametrize(
    "body",
    [
        {"version": 1},
        {"version": 1, "action": "send_twice"},
        {"version": 0, "action": "resend"},
        {"version": "1", "action": "resend"},
        {"version": 1, "action": "resend", "force": True},
    ],
)
def test_a_bad_body_is_422(
    api: TestClient, shipped: Callable[..., str], stub_dagster: StubDagster, body: dict[str, Any]
) -> None:
    answer = api.post(f"/orders/{shipped('unknown')}/email", json=body, headers=new_key())

    assert answer.status_code == 422
    assert answer.json()["detail"]
    assert stub_dagster.received == []


def test_an_empty_body_or_a_bad_key_is_400(api: TestClient, shipped: Callable[..., str]) -> None:
    cfg_id = shipped("unknown")

    empty = api.post(
        f"/orders/{cfg_id}/email", content=b"", headers={"Content-Type": "application/json", **new_key()}
    )
    bad_key = api.post(
        f"/orders/{cfg_id}/email", json={"version": 1, "action": "resend"}, headers={"Idempotency-Key": "a b"}
    )

    assert empty.status_code in (400, 422)
    assert bad_key.status_code == 400


def test_beta_requires_the_bearer_token(
    token_api: TestClient, stub_settings: Settings, cloud_order: dict[str, Any], stub_dagster: StubDagster
) -> None:
    cfg_id = token_api.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"]
    _shipped(stub_settings, cfg_id, ["unknown"])

    assert_only_the_token_is_let_through(
        token_api, f"/orders/{cfg_id}/email", stub_dagster, json={"version": 1, "action": "resend"}
    )


# --- GET /orders/{cfg_id} ------------------------------------------------------------------------


def test_each_portal_version_shows_its_email(api: TestClient, shipped: Callable[..., str]) -> None:
    cfg_id = shipped("sent", "none", "unknown")

    order = api.get(f"/orders/{cfg_id}").json()

    assert order["status"] == "email_unknown"
    assert LOST in order["error"]
    sent, never, unknown = order["portal_versions"]
    assert [v["version"] for v in (sent, never, unknown)] == [1, 2, 3]
    assert sent["url"].endswith("/v1") and sent["created_at"]
    assert sent["email"]["state"] == "sent"
    assert sent["email"]["message_id"] == "msg-1" and sent["email"]["sent_at"]
    assert sent["email"]["reason"] is None
    assert never["email"] is None
    assert unknown["email"]["state"] == "unknown"
    assert (unknown["email"]["message_id"], unknown["email"]["sent_at"]) == (None, None)
    assert unknown["email"]["reason"] == LOST


def test_the_openapi_document_describes_the_endpoint(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    post = document["paths"]["/orders/{cfg_id}/email"]["post"]
    assert set(post["responses"]) >= {"200", "202", "401", "404", "409", "422", "503"}
    assert post["security"] == [{"operator": []}]
    schemas = document["components"]["schemas"]
    assert set(schemas["EmailResolutionRequest"]["properties"]) == {"version", "action"}
    assert schemas["EmailResolutionRequest"]["additionalProperties"] is False
    assert {"email", "backfill_id", "order_status"} <= set(schemas["EmailResolutionAnswer"]["properties"])
    assert "email" in schemas["PortalVersionView"]["properties"]
