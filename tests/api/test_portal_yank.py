"""Yanked portal versions: struck through with the reason, 410 downloads, the current version, one email."""

from __future__ import annotations

import email
import email.policy
import uuid
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.api import test_portal
from tests.api.conftest import new_key
from tests.api.test_portal import Delivered, path_of

pytestmark = pytest.mark.slow

# The portal tests' published order and its app.
delivered = test_portal.delivered
client = test_portal.client


def yank_path(delivered: Delivered, version: int) -> str:
    return f"/orders/{delivered.cfg_id}/portal-versions/{version}/yank"


def outbox(delivered: Delivered) -> list[Path]:
    folder = Path(delivered.settings.email.outbox_dir or "")
    return sorted(folder.glob("*-yanked.eml")) if folder.is_dir() else []


def test_a_yanked_version_is_struck_through_and_its_downloads_answer_410(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    links = delivered.links()
    answer = client.post(
        yank_path(delivered, 2), json={"reason": "wrong Modbus register map for meter-2"}, headers=new_key()
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["yanked"] is True and body["current_version"] == 1 and body["customer_notified"] is False

    page = client.get(path_of(links.version_page(2), delivered.settings)).text
    assert "<del>delivery version 2</del> (withdrawn)" in page
    assert "wrong Modbus register map for meter-2" in page
    assert links.artifact(2, "cfn.yaml") not in page, "a yanked version offers no download"
    for name in ("cfn.yaml", "manifest.json"):
        gone = client.get(path_of(links.artifact(2, name), delivered.settings))
        assert gone.status_code == 410
        assert "wrong Modbus register map for meter-2" in gone.json()["detail"]

    index = client.get(path_of(links.portal(), delivered.settings)).text
    assert "The current version is <strong>version 1</strong>" in index
    assert 'class="yanked"' in index and "withdrawn: wrong Modbus register map for meter-2" in index
    assert client.get(path_of(links.artifact(1, "cfn.yaml"), delivered.settings)).status_code == 303

    order = client.get(f"/orders/{delivered.cfg_id}").json()
    assert order["current_version"] == 1
    assert [(v["version"], v["yank_reason"]) for v in order["portal_versions"]] == [
        (1, None),
        (2, "wrong Modbus register map for meter-2"),
    ]

    stored = delivered.store.get(f"portal/{delivered.cfg_id}/index.html").decode()
    assert "The current version is <strong>version 1</strong>" in stored, "the stored index is rendered again"
    stored_page = delivered.store.get(f"portal/{delivered.cfg_id}/v2/index.html").decode()
    assert "wrong Modbus register map for meter-2" in stored_page


def test_un_yank_makes_the_version_current_and_downloadable_again(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    client.post(yank_path(delivered, 2), json={"reason": "bad build"}, headers=new_key())
    restored = client.delete(yank_path(delivered, 2), headers=new_key())
    assert restored.status_code == 200
    assert restored.json() | {"yanked_at": None} == restored.json() | {
        "yanked": False,
        "reason": None,
        "current_version": 2,
        "yanked_at": None,
    }
    links = delivered.links()
    assert client.get(path_of(links.artifact(2, "cfn.yaml"), delivered.settings)).status_code == 303
    assert (
        "The current version is <strong>version 2</strong>"
        in client.get(path_of(links.portal(), delivered.settings)).text
    )


def test_every_version_yanked_leaves_no_current_one(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    answer = client.post(yank_path(delivered, 1), json={"reason": "recalled"}, headers=new_key())
    assert answer.json()["current_version"] is None
    index = client.get(path_of(delivered.links().portal(), delivered.settings))
    assert index.status_code == 200 and "Every version of this delivery was withdrawn" in index.text


def test_the_customer_is_told_once(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    first = client.post(
        yank_path(delivered, 2), json={"reason": "bad build", "notify_customer": True}, headers=new_key()
    )
    assert first.status_code == 200 and first.json()["customer_notified"] is True, first.text
    again = client.post(
        yank_path(delivered, 2),
        json={"reason": "bad build (meter map)", "notify_customer": True},
        headers=new_key(),
    )
    assert again.json()["customer_notified"] is True and again.json()["reason"] == "bad build (meter map)"
    sent = outbox(delivered)
    assert len(sent) == 1, "a second request sends nothing"
    message = email.message_from_bytes(sent[0].read_bytes(), policy=email.policy.default)
    assert " ".join(str(message["Subject"]).split()).startswith("Version 2 of your delivery")
    text = message.get_content()
    assert "bad build" in text and "Version 1 is the current one" in text
    assert delivered.links().portal() in text


def test_bad_yank_requests_name_what_is_wrong(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    blank = client.post(yank_path(delivered, 1), json={"reason": "   "}, headers=new_key())
    assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "reason"
    missing = client.post(yank_path(delivered, 9), json={"reason": "x"}, headers=new_key())
    assert missing.status_code == 404 and "no published portal version 9" in missing.json()["detail"]
    assert client.post(yank_path(delivered, 1), json={}, headers=new_key()).status_code == 422


@pytest.mark.parametrize("cfg_id", ["%00", "a%00b", "not-a-uuid", "{cfg_id}%00"])
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_malformed_cfg_id_is_the_404_of_every_order_route_and_never_reaches_platform_db(
    delivered: Delivered, client: TestClient, monkeypatch: pytest.MonkeyPatch, method: str, cfg_id: str
) -> None:
    delivered.publish("run-1")
    path_id = cfg_id.format(cfg_id=delivered.cfg_id)
    expected = client.get(f"/orders/{path_id}")
    assert expected.status_code == 404
    asked: list[str] = []
    orders = client.app.state.api.orders  # type: ignore[attr-defined]
    lookup = orders.get
    # PostgreSQL answers a NUL byte in a query with an error (a 500 here), so the lookup must not happen.
    monkeypatch.setattr(orders, "get", lambda cfg: asked.append(cfg) or lookup(cfg))

    answer = client.request(
        method,
        f"/orders/{path_id}/portal-versions/1/yank",
        json={"reason": "bad build"} if method == "POST" else None,
        headers={"Idempotency-Key": f"yank-{method}-{uuid.uuid4().hex}"},
    )

    assert (answer.status_code, answer.json()) == (expected.status_code, expected.json())
    assert asked == []
    assert delivered.deliveries.portal_versions(delivered.cfg_id)[0].yanked_at is None
