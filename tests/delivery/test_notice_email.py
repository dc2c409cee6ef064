"""The emails the API sends a customer beside a delivery: one SES request each, the outcome classified."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from contracts.configurator import ConfiguratorPayload
from delivery.notice_email import (
    NoticeNotSent,
    compose_portal_link_email,
    portal_link_outbox_name,
    send_notice,
)
from tests.delivery.test_email_dispatch import ScriptedSes, ses_error

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
CFG_ID = "3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70"
PORTAL_URL = f"https://portal.example.com/portal/new-t0ken-of-{CFG_ID[:8]}"


def order(site_name: str | None = None) -> ConfiguratorPayload:
    payload = ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    if site_name is None:
        return payload
    return payload.model_copy(update={"site": payload.site.model_copy(update={"name": site_name})})


def new_link_email(payload: ConfiguratorPayload) -> EmailMessage:
    return compose_portal_link_email(
        sender="Platform <delivery@example.com>",
        order=payload,
        cfg_id=CFG_ID,
        generation=3,
        portal_url=PORTAL_URL,
        at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_the_new_link_email_carries_the_link_to_the_customer() -> None:
    payload = order()
    message = new_link_email(payload)

    assert [address.addr_spec for address in message["To"].addresses] == [payload.customer.email]
    assert (
        str(message["Subject"]) == f"New link to the download portal of your delivery for {payload.site.name}"
    )
    text = message.get_content()
    assert PORTAL_URL in text and "no longer works" in text and CFG_ID in text
    assert f"{CFG_ID}.portal-link-3" in str(message["Message-ID"])


def test_a_site_name_with_line_breaks_stays_in_its_header() -> None:
    message = new_link_email(order("Plant\r\nBcc: attacker@example.com"))

    assert message["Bcc"] is None
    assert "\r\nBcc:" not in message.as_string()


def test_a_taken_notice_is_in_the_outbox_and_answers_sess_message_id(tmp_path: Path) -> None:
    ses = ScriptedSes({"MessageId": "msg-42"})
    message = new_link_email(order())

    message_id = send_notice(
        message=message,
        recipient="ada@example.com",
        sender="delivery@example.com",
        ses_client=ses,
        outbox_dir=tmp_path,
        outbox_name=portal_link_outbox_name(CFG_ID, 3),
    )

    assert message_id == "msg-42"
    assert len(ses.requests) == 1
    assert ses.requests[0]["Destination"] == {"ToAddresses": ["ada@example.com"]}
    written = email.message_from_bytes(
        (tmp_path / f"{CFG_ID}-portal-link-3.eml").read_bytes(), policy=default
    )
    assert written["Message-ID"] == message["Message-ID"]


@pytest.mark.parametrize(
    ("failure", "maybe_sent"),
    [
        (ses_error("MessageRejected", "Email address is not verified."), False),
        (ses_error("InternalFailure", "oops", status=500), True),
    ],
)
def test_a_notice_ses_did_not_take_says_whether_it_may_have_been_sent(
    tmp_path: Path, failure: Exception, maybe_sent: bool
) -> None:
    ses = ScriptedSes(failure)

    with pytest.raises(NoticeNotSent) as caught:
        send_notice(
            message=new_link_email(order()),
            recipient="ada@example.com",
            sender="delivery@example.com",
            ses_client=ses,
            outbox_dir=tmp_path,
            outbox_name=portal_link_outbox_name(CFG_ID, 3),
        )

    assert caught.value.maybe_sent is maybe_sent
    assert len(ses.requests) == 1, "one request: never a second email on its own"
    assert list(tmp_path.iterdir()) == [], "only what SES took goes to the outbox"
