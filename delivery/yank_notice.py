"""The email that tells a customer a portal version was yanked: at most one per version.

The version's row is claimed before SES is called (``yank_notice_at``); a request SES certainly
did not take gives the claim back, so the operator may ask again. One whose answer was lost keeps
the claim: the customer is told once, never twice.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from contracts.configurator import ConfiguratorPayload
from contracts.records import PortalVersion
from delivery.notice_email import NoticeNotSent, compose_notice, send_notice, site_name
from delivery.portal import template_environment


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
    return compose_notice(
        sender=sender,
        order=order,
        subject=f"Version {yanked.version} of your delivery for {site_name(order)} was withdrawn",
        at=yanked.yanked_at,
        message_tag=f"{yanked.cfg_id}.v{yanked.version}.yanked",
        body=template_environment()
        .get_template("yank_email.txt.j2")
        .render(
            order=order,
            cfg_id=yanked.cfg_id,
            version=yanked.version,
            reason=yanked.yank_reason,
            current_version=current_version,
            portal_url=portal_url,
        ),
    )


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
        message_id = send_notice(
            message=message,
            recipient=recipient,
            sender=sender,
            ses_client=ses_client,
            outbox_dir=outbox_dir,
            outbox_name=f"{yanked.cfg_id}-v{yanked.version}-yanked",
        )
    except NoticeNotSent as exc:
        # Only a request SES did not take frees the claim.
        if not exc.maybe_sent:
            claims.record_yank_notice(yanked.cfg_id, yanked.version, None)
            raise YankNoticeNotSent(f"{exc}; ask again to send it") from None
        raise YankNoticeNotSent(f"{exc}; it is not sent again") from None
    claims.record_yank_notice(yanked.cfg_id, yanked.version, message_id)
    return message_id
