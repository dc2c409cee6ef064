"""The email that tells a customer a portal version was yanked: at most one per version.

The version's row is claimed before SES is called (``yank_notice_at``); a request SES certainly
did not take gives the claim back, so the operator may ask again. One whose answer was lost keeps
the claim: the customer is told once, never twice.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Protocol

from contracts.configurator import ConfiguratorPayload
from contracts.records import PortalVersion
from delivery.email import write_to_outbox
from delivery.email_dispatch import send_failure_verdict
from delivery.portal import template_environment
from service_kit.timestamps import as_utc


class YankNoticeClaims(Protocol):
    def claim_yank_notice(self, cfg_id: str, version: int) -> bool: ...
    def record_yank_notice(self, cfg_id: str, version: int, message_id: str | None) -> None: ...


class YankNoticeNotSent(Exception):
    """The customer was not told (or it is unknown whether SES took the email); the reason."""


def compose_yank_email(
    *,
    sender: str,
    order: ConfiguratorPayload,
    yanked: PortalVersion,
    current_version: int | None,
    portal_url: str,
) -> EmailMessage:
    if yanked.yanked_at is None or yanked.yank_reason is None:
        raise ValueError(f"portal version {yanked.version} is not yanked")
    message = EmailMessage()
    message["From"] = sender
    domain = message["From"].addresses[0].domain
    message["To"] = Address(
        display_name=" ".join(order.customer.name.split()), addr_spec=order.customer.email
    )
    site = " ".join(order.site.name.split())
    message["Subject"] = f"Version {yanked.version} of your delivery for {site} was withdrawn"
    message["Date"] = format_datetime(as_utc(yanked.yanked_at))
    message["Message-ID"] = make_msgid(idstring=f"{yanked.cfg_id}.v{yanked.version}.yanked", domain=domain)
    message.set_content(
        template_environment()
        .get_template("yank_email.txt.j2")
        .render(
            order=order,
            cfg_id=yanked.cfg_id,
            version=yanked.version,
            reason=yanked.yank_reason,
            current_version=current_version,
            portal_url=portal_url,
        )
    )
    return message


def send_yank_notice_once(
    *,
    message: EmailMessage,
    yanked: PortalVersion,
    recipient: str,
    sender: str,
    ses_client: Any,
    claims: YankNoticeClaims,
    outbox_dir: Path | None,
) -> str | None:
    """Send the yank email unless it was sent before; SES's MessageId, ``None`` when it was sent before."""
    if not claims.claim_yank_notice(yanked.cfg_id, yanked.version):
        return None
    try:
        answer = ses_client.send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": [recipient]},
            Content={"Raw": {"Data": message.as_bytes(policy=SMTP)}},
        )
    except Exception as exc:  # noqa: BLE001 - classified: only a request SES did not take frees the claim
        verdict = send_failure_verdict(exc)
        if verdict.kind != "maybe_sent":
            claims.record_yank_notice(yanked.cfg_id, yanked.version, None)
            raise YankNoticeNotSent(f"{verdict.reason}; ask again to send it") from None
        raise YankNoticeNotSent(f"{verdict.reason}; it is not sent again") from None
    message_id = str(answer.get("MessageId") or "unknown")
    claims.record_yank_notice(yanked.cfg_id, yanked.version, message_id)
    if outbox_dir is not None:
        write_to_outbox(message, outbox_dir, f"{yanked.cfg_id}-v{yanked.version}-yanked")
    return message_id
