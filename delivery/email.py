"""The delivery email: one per portal version, telling the customer where to download it."""

from __future__ import annotations

import os
import re
import tempfile
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.portal import template_environment
from service_kit.timestamps import as_utc

OUTBOX_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Only ids of this shape go into the Message-ID; anything else would make the header invalid.
MSGID_SAFE_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


def compose_delivery_email(
    *, sender: str, order: ConfiguratorPayload, manifest: Manifest, page_url: str
) -> EmailMessage:
    """A multipart/alternative message (text and HTML) announcing one portal version."""
    message = EmailMessage()
    message["From"] = sender
    sender_addresses = message["From"].addresses
    if len(sender_addresses) != 1 or not sender_addresses[0].domain:
        raise ValueError(f"sender must be exactly one email address, got {sender!r}")
    message["To"] = Address(display_name=_single_line(order.customer.name), addr_spec=order.customer.email)
    message["Subject"] = (
        f"Your delivery for {_single_line(order.site.name)} is ready (version {manifest.version})"
    )
    # The date of the portal version, not of sending: a re-run renders the identical message.
    message["Date"] = format_datetime(as_utc(manifest.created_at))
    idstring = f"v{manifest.version}"
    if MSGID_SAFE_RE.fullmatch(manifest.cfg_id):
        idstring = f"{manifest.cfg_id}.{idstring}"
    # The sender's domain instead of the local hostname: it names us, not the machine that ran the job.
    message["Message-ID"] = make_msgid(idstring=idstring, domain=sender_addresses[0].domain)

    environment = template_environment()
    context = {"order": order, "manifest": manifest, "page_url": page_url}
    message.set_content(environment.get_template("email.txt.j2").render(context))
    message.add_alternative(environment.get_template("email.html.j2").render(context), subtype="html")
    return message


def write_to_outbox(message: EmailMessage, outbox_dir: Path, name: str) -> Path:
    """Write ``<outbox_dir>/<name>.eml`` in SMTP wire format (CRLF line endings)."""
    if not OUTBOX_NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise ValueError(f"outbox name must match [A-Za-z0-9._-]{{1,200}}, got {name!r}")
    target = outbox_dir / f"{name}.eml"
    # Whoever watches the outbox never picks up a half-written message.
    write_atomically(target, message.as_bytes(policy=SMTP))
    return target


def write_atomically(path: Path, data: bytes) -> None:
    """Write then rename: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _single_line(text: str) -> str:
    # Customer text may contain CR/LF (or other line breaks); in a header that would start a new
    # header (Bcc: ...), so every run of whitespace becomes one space.
    return " ".join(text.split())
