import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.downloads import DownloadRepository
from tests.api.conftest import OPERATOR, WEBSITE, build_client, token_required


def test_submit_stores_the_order_and_answers_as_the_website_expects(
    client: TestClient, cloud_order: dict[str, Any]
) -> None:
    answer = client.post("/submit", json=cloud_order)
    assert answer.status_code == 200
    body = answer.json()
    assert body["message"] == "form submitted"
    assert str(uuid.UUID(body["cfg_id"])) == body["cfg_id"]

    stored = client.get(f"/orders/{body['cfg_id']}")
    assert stored.status_code == 200
    assert stored.json()["status"] == "received"
    assert stored.json()["target"] == "cloud"
    assert stored.json()["order"]["customer"]["email"] == "ada@example.com"


def test_the_order_is_committed_before_the_answer(
    settings: Settings, client: TestClient, onprem_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=onprem_order).json()["cfg_id"]
    # A second, independent connection (as after a restart) sees it at once.
    fresh = OrderRepository.from_url(settings.platform_db_url())
    try:
        order = fresh.get(cfg_id)
        assert order is not None and order.target == "onprem"
    finally:
        fresh.dispose()


def test_same_idempotency_key_gives_the_same_cfg_id_and_one_order(
    settings: Settings, client: TestClient, cloud_order: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": "website-form-42"}
    first = client.post("/submit", json=cloud_order, headers=headers).json()["cfg_id"]
    second = client.post("/submit", json=cloud_order, headers=headers).json()["cfg_id"]
    other = client.post("/submit", json=cloud_order).json()["cfg_id"]
    assert first == second
    assert other != first
    repository = OrderRepository.from_url(settings.platform_db_url())
    try:
        assert len(repository.orders_after(0)) == 2
    finally:
        repository.dispose()


def test_reusing_an_idempotency_key_for_another_order_is_a_conflict(
    client: TestClient, cloud_order: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    client.post("/submit", json=cloud_order, headers=headers)
    changed = copy.deepcopy(cloud_order)
    changed["site"]["name"] = "Another plant"
    answer = client.post("/submit", json=changed, headers=headers)
    assert answer.status_code == 409
    assert "Idempotency-Key" in answer.json()["detail"]


def test_invalid_idempotency_key_is_rejected(client: TestClient, cloud_order: dict[str, Any]) -> None:
    answer = client.post("/submit", json=cloud_order, headers={"Idempotency-Key": "has space"})
    assert answer.status_code == 400


def test_every_invalid_field_is_named(client: TestClient, cloud_order: dict[str, Any]) -> None:
    bad = copy.deepcopy(cloud_order)
    bad["customer"]["email"] = "not-an-address"
    bad["customer"]["phone"] = "+49 1"
    bad["deployment"]["region"] = "moon-1"
    bad["site"]["timezone"] = "Europe/Atlantis"
    bad["devices"][1]["connection"]["port"] = 70000
    bad["devices"][2]["type"] = "toaster"
    del bad["site"]["name"]
    answer = client.post("/submit", json=bad)
    assert answer.status_code == 422
    fields = {error["field"]: error["message"] for error in answer.json()["errors"]}
    assert set(fields) == {
        "customer.email",
        "customer.phone",
        "deployment.region",
        "site.timezone",
        "site.name",
        "devices[1].connection.port",
        "devices[2].type",
    }
    assert fields["customer.phone"] == "unknown field"
    assert fields["site.name"] == "Field required"


def test_unknown_target_and_schema_version_are_named(client: TestClient, cloud_order: dict[str, Any]) -> None:
    bad = copy.deepcopy(cloud_order)
    bad["deployment"] = {"target": "mainframe"}
    bad["schema_version"] = 2
    fields = {error["field"] for error in client.post("/submit", json=bad).json()["errors"]}
    assert fields == {"deployment", "schema_version"}


def test_duplicate_device_ids_are_rejected(client: TestClient, cloud_order: dict[str, Any]) -> None:
    bad = copy.deepcopy(cloud_order)
    bad["devices"][1]["id"] = bad["devices"][0]["id"]
    answer = client.post("/submit", json=bad)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "devices", "message": "Value error, duplicate device id 'meter-main'"}
    ]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "says"),
    [
        (b'{"schema_version": 1,', "application/json", 400, "not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"schema_version=1", "application/x-www-form-urlencoded", 415, "application/json"),
        (b"{}", "", 415, "missing"),
        (b"[1, 2]", "application/json", 422, "invalid field"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(
    client: TestClient, content: bytes, content_type: str, status: int, says: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post("/submit", content=content, headers=headers)
    assert answer.status_code == status
    assert says in answer.json()["detail"]


def test_body_over_the_size_limit_is_refused(
    settings: Settings, make_client: Callable[[Settings], TestClient], cloud_order: dict[str, Any]
) -> None:
    small = settings.model_copy(update={"api": settings.api.model_copy(update={"max_body_bytes": 2048})})
    with make_client(small) as client:
        huge = copy.deepcopy(cloud_order)
        huge["options"] = {"note": "x" * 4096}
        answer = client.post("/submit", json=huge)
        assert answer.status_code == 413
        assert "2048 bytes" in answer.json()["detail"]

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1024

        # Without Content-Length the limit still holds while reading.
        streamed = client.post("/submit", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert client.post("/submit", json=cloud_order).status_code == 200


def test_unknown_order_is_404(client: TestClient) -> None:
    assert client.get(f"/orders/{uuid.uuid4()}").status_code == 404
    assert client.get("/orders/not-a-uuid").status_code == 404


def _shipped_and_fetched(settings: Settings, cfg_id: str) -> None:
    """Portal version 1 of the order published and emailed, and one download of it recorded."""
    deliveries = DeliveryRepository.from_url(settings.platform_db_url())
    downloads = DownloadRepository.from_url(settings.platform_db_url())
    try:
        deliveries.claim_portal_version(cfg_id, "run-1")
        deliveries.record_publication(
            cfg_id, 1, manifest_key=f"portal/{cfg_id}/v1/manifest.json", artifact_count=2
        )
        assert deliveries.claim_email(cfg_id, 1)
        deliveries.record_email_sent(cfg_id, 1, "msg-1")
        downloads.record(cfg_id, version=1, file="cfn.yaml", user_agent="curl/8", client="203.0.113.0/24")
    finally:
        deliveries.dispose()
        downloads.dispose()


def test_the_website_reads_an_orders_status_and_nothing_that_reaches_its_delivery(
    settings: Settings, cloud_order: dict[str, Any]
) -> None:
    scoped = token_required(settings)
    with build_client(scoped) as client:
        submitted = client.post("/submit", json=cloud_order, headers=WEBSITE)
        assert submitted.status_code == 200
        cfg_id = submitted.json()["cfg_id"]
        _shipped_and_fetched(scoped, cfg_id)

        website = client.get(f"/orders/{cfg_id}", headers=WEBSITE)
        operator = client.get(f"/orders/{cfg_id}", headers=OPERATOR)

    assert website.status_code == operator.status_code == 200
    status = website.json()
    assert (status["cfg_id"], status["status"], status["target"]) == (cfg_id, "received", "cloud")
    assert (status["portal_versions"], status["current_version"]) == ([1], 1)
    for field in ("portal_url", "downloads", "order", "current_version_fetched", "assets", "edp_job_id"):
        assert field not in status
    full = operator.json()
    # Not under any other name either: the link is the customer's credential.
    token = full["portal_url"].rstrip("/").rsplit("/", 1)[-1]
    assert token and token not in website.text
    assert full["downloads"] and full["portal_versions"][0]["email"]["state"] == "sent"
    for private in (cloud_order["customer"]["email"], cloud_order["customer"]["name"], "msg-1", "curl/8"):
        assert private in operator.text and private not in website.text


def test_healthz_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    document = client.get("/openapi.json").json()
    assert set(document["paths"]) >= {"/submit", "/orders/{cfg_id}", "/healthz"}
    schema = document["components"]["schemas"]["ConfiguratorPayload"]
    assert schema["additionalProperties"] is False
    assert {"customer", "deployment", "site"} <= set(schema["required"])
    _assert_refs_resolve(document, document)


def _assert_refs_resolve(node: Any, document: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/components/schemas/")
            assert name in document["components"]["schemas"], f"dangling $ref {ref}"
        for value in node.values():
            _assert_refs_resolve(value, document)
    elif isinstance(node, list):
        for value in node:
            _assert_refs_resolve(value, document)
