"""Sending the delivery email of a portal version, at most once."""

from __future__ import annotations

from email.policy import SMTP
from pathlib import Path
from typing import Any

from contracts.configurator import ConfiguratorPayload
from delivery.email import compose_delivery_email, write_to_outbox
from delivery.portal_publication import PortalPublication
from platform_db.deliveries import DeliveryRepository


def send_delivery_email_once(
    *,
    publication: PortalPublication,
    order: ConfiguratorPayload,
    sender: str,
    ses_client: Any,
    deliveries: DeliveryRepository,
    outbox_dir: Path | None,
) -> tuple[str | None, bool]:
    """``(message_id, sent_now)``; a version already mailed (a retried step) sends nothing."""
    cfg_id, version = publication.cfg_id, publication.version
    if not deliveries.claim_email(cfg_id, version):
        return deliveries.email_message_id(cfg_id, version), False
    message = compose_delivery_email(
        sender=sender, order=order, manifest=publication.manifest, page_url=publication.portal_url
    )
    try:
        # Raw MIME keeps both parts: SES's simple form would keep only the HTML one.
        answer = ses_client.send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": [str(order.customer.email)]},
            Content={"Raw": {"Data": message.as_bytes(policy=SMTP)}},
        )
    except Exception:
        deliveries.release_email_claim(cfg_id, version)
        raise
    message_id = str(answer["MessageId"])
    deliveries.record_email_sent(cfg_id, version, message_id)
    if outbox_dir is not None:
        write_to_outbox(message, outbox_dir, f"{cfg_id}-v{version}")
    return message_id, True
