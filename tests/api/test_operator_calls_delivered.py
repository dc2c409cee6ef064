"""Operator calls on a published order, once per Idempotency-Key, against the embedded S3 and SES.

A portal-link rotation that tells the customer sends the new link once; a repeated yank, un-yank or
revocation answers what the first call did and does not do it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from starlette.testclient import TestClient

from api.app import create_app
from tests.api import test_portal
from tests.api.test_portal import Delivered, path_of

pytestmark = pytest.mark.slow

# The portal tests' published order and its app, against the embedded S3 and SES (moto's server).
delivered = test_portal.delivered
client = test_portal.client


def new_link_emails(delivered: Delivered) -> list[str]:
    """The new-link emails the embedded SES accepted for the order (the server is the session's)."""
    data = requests.get(f"{delivered.settings.aws.endpoint_url}/moto-api/data.json", timeout=10).json()
    return [
        str(message["raw_data"])
        for message in data.get("ses", {}).get("RawMessage", [])
        if delivered.cfg_id in message["raw_data"] and "portal-link" in message["raw_data"]
    ]


def outbox(delivered: Delivered) -> list[str]:
    folder = Path(delivered.settings.email.outbox_dir or "")
    return sorted(path.name for path in folder.glob("*-portal-link-*.eml")) if folder.is_dir() else []


def test_notify_customer_emails_the_new_link_once_for_a_repeated_key(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    old = delivered.links()
    rotate = f"/orders/{delivered.cfg_id}/portal-token"
    body = {"notify_customer": True}

    first = client.post(rotate, json=body, headers={"Idempotency-Key": "rotate-and-tell"})
    again = client.post(rotate, json=body, headers={"Idempotency-Key": "rotate-and-tell"})

    assert first.status_code == again.status_code == 200, first.text
    assert first.json()["customer_notified"] is True and first.json()["notice_error"] is None
    assert again.json() == first.json()
    new_link = first.json()["portal_url"]
    assert new_link == delivered.links().portal() != old.portal()
    [sent] = new_link_emails(delivered)
    # Quoted-printable may fold the link's line; unfolded, it is there, and the dead one is not.
    unfolded = sent.replace("=\r\n", "").replace("=\n", "")
    assert new_link in unfolded and old.token not in unfolded
    assert outbox(delivered) == [f"{delivered.cfg_id}-portal-link-1.eml"]
    assert client.get(path_of(new_link, delivered.settings)).status_code == 200
    assert client.get(path_of(old.portal(), delivered.settings)).status_code == 404


def test_without_notify_customer_nobody_is_emailed(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")

    answer = client.post(f"/orders/{delivered.cfg_id}/portal-token", headers={"Idempotency-Key": "quiet"})

    assert answer.status_code == 200 and answer.json()["customer_notified"] is False
    assert new_link_emails(delivered) == [] and outbox(delivered) == []


def test_a_new_link_ses_refuses_leaves_the_rotation_and_says_why(delivered: Delivered) -> None:
    email = delivered.settings.email.model_copy(update={"sender": "nobody@unverified.example.org"})
    settings = delivered.settings.model_copy(update={"email": email})
    with TestClient(create_app(settings, delivered.orders)) as client:
        delivered.publish("run-1")
        answer = client.post(
            f"/orders/{delivered.cfg_id}/portal-token",
            json={"notify_customer": True},
            headers={"Idempotency-Key": "tell-1"},
        )

    assert answer.status_code == 200
    assert answer.json()["customer_notified"] is False
    assert answer.json()["notice_error"].startswith("SES refused the email")
    assert "rotate again" in answer.json()["notice_error"]
    # The link rotated all the same; the answer names the one that works now.
    assert answer.json()["portal_url"] == delivered.links().portal()
    assert new_link_emails(delivered) == [] and outbox(delivered) == []


def test_a_repeated_yank_key_answers_the_first_yank_and_does_not_yank_again(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    yank = f"/orders/{delivered.cfg_id}/portal-versions/2/yank"
    body = {"reason": "wrong register map", "notify_customer": True}

    first = client.post(yank, json=body, headers={"Idempotency-Key": "yank-2"})
    restored = client.delete(yank, headers={"Idempotency-Key": "unyank-2"})
    # The yank's retry arrives after the un-yank (a client retrying a lost answer late).
    late_retry = client.post(yank, json=body, headers={"Idempotency-Key": "yank-2"})

    assert first.status_code == restored.status_code == late_retry.status_code == 200
    assert late_retry.json() == first.json() and late_retry.headers["Idempotent-Replayed"] == "true"
    [version_2] = [v for v in delivered.deliveries.portal_versions(delivered.cfg_id) if v.version == 2]
    assert version_2.yanked_at is None, "the retry did not yank the version again"
    folder = Path(delivered.settings.email.outbox_dir or "")
    assert len(list(folder.glob("*-yanked.eml"))) == 1
    assert client.delete(yank, headers={"Idempotency-Key": "unyank-2"}).json() == restored.json()


def test_a_repeated_revocation_key_answers_the_first_moment(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    revoke = f"/signing-keys/{test_portal.SIGNER.key_id}/revoke"

    first = client.post(revoke, json={"reason": "laptop stolen"}, headers={"Idempotency-Key": "revoke-1"})
    again = client.post(revoke, json={"reason": "laptop stolen"}, headers={"Idempotency-Key": "revoke-1"})
    other = client.post(revoke, json={"reason": "another reason"}, headers={"Idempotency-Key": "revoke-1"})

    assert first.status_code == again.status_code == 200
    # Revoked "now" once: the retry answers that moment, not a later one.
    assert again.json()["revoked_at"] == first.json()["revoked_at"]
    assert other.status_code == 409 and "another request body" in other.json()["detail"]
    (listed,) = client.get("/signing-keys").json()["keys"]
    assert (listed["revoked_at"], listed["revocation_reason"]) == (
        first.json()["revoked_at"],
        "laptop stolen",
    )
