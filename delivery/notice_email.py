"""Emails the API sends a customer beside a delivery: a yanked version's notice, a new portal link.

Each is one SES request (the API's SES client makes one attempt). Whoever sends one keeps it to
once: a claim in platform_db before the request (``delivery.yank_notice``), or the operator call's
Idempotency-Key (a portal-link rotation). A request SES certainly did not take may be asked again;
one whose answer was lost may have been sent, and is never repeated on its own.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from contracts.configurator import ConfiguratorPayload
from delivery.email import write_to_outbox
from delivery.email_dispatch import send_failure_verdict
from delivery.portal import template_environment
from service_kit.timestamps import as_utc


class NoticeNotSent(Exception):
    """SES did not take the email (``maybe_sent`` False), or whether it did is unknown (True)."""

    def __init__(self, reason: str, *, maybe_sent: bool) -> None:
        super().__init__(reason)
        self.maybe_sent = maybe_sent


def send_notice(
    *,
    message: EmailMessage,
    recipient: str,
    sender: str,
    ses_client: Any,
    outbox_dir: Path | None,
    outbox_name: str,
) -> str:
    """Send ``message`` with one SES request; SES's MessageId. Also written to the outbox (local,
    demo) as ``<outbox_name>.eml`` once SES took it. Raises :class:`NoticeNotSent`."""
    try:
        answer = ses_client.send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": [recipient]},
            Content={"Raw": {"Data": message.as_bytes(policy=SMTP)}},
        )
    except Exception as exc:  # noqa: BLE001 - classified: the caller frees its claim only for what SES did not take
        verdict = send_failure_verdict(exc)
        raise NoticeNotSent(verdict.reason, maybe_sent=verdict.kind == "maybe_sent") from None
    message_id = str(answer.get("MessageId") or "unknown")
    if outbox_dir is not None:
        write_to_outbox(message, outbox_dir, outbox_name)
    return message_id


def site_name(order: ConfiguratorPayload) -> str:
    """The order's site as a subject line names it: on one line."""
    return " ".join(order.site.name.split())


def compose_notice(
    *, sender: str, order: ConfiguratorPayload, subject: str, at: datetime, message_tag: str, body: str
) -> EmailMessage:
    """A notice to the order's customer; ``message_tag`` makes its Message-ID (one per notice)."""
    message = EmailMessage()
    message["From"] = sender
    domain = message["From"].addresses[0].domain
    message["To"] = Address(
        display_name=" ".join(order.customer.name.split()), addr_spec=order.customer.email
    )
    message["Subject"] = subject
    message["Date"] = format_datetime(as_utc(at))
    message["Message-ID"] = make_msgid(idstring=message_tag, domain=domain)
    message.set_content(body)
    return message


def compose_portal_link_email(
    *, sender: str, order: ConfiguratorPayload, cfg_id: str, generation: int, portal_url: str, at: datetime
) -> EmailMessage:
    """The email with an order's new portal link, after a rotation retired the one before."""
    return compose_notice(
        sender=sender,
        order=order,
        subject=f"New link to the download portal of your delivery for {site_name(order)}",
        at=at,
        message_tag=f"{cfg_id}.portal-link-{int(generation)}",
        body=template_environment()
        .get_template("portal_link_email.txt.j2")
        .render(order=order, cfg_id=cfg_id, portal_url=portal_url),
    )


def portal_link_outbox_name(cfg_id: str, generation: int) -> str:
    """The outbox file (without ``.eml``) of the email announcing the link of ``generation``."""
    return f"{cfg_id}-portal-link-{int(generation)}"
