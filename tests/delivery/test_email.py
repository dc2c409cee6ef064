import email
import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.email import compose_delivery_email, write_to_outbox
from tests.delivery.conftest import customer_named, make_order, site_named

CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"
SENDER = "Platform Delivery <delivery@platform.example.com>"
PAGE_URL = "https://api.example.com/portal/tok-123?lang=en&v=2"


def make_manifest(version: int = 2) -> Manifest:
    return Manifest(
        cfg_id=CFG_ID,
        version=version,
        created_at=datetime(2025, 3, 1, 14, 5, 9, tzinfo=UTC),
        deployment_target="onprem",
        flags={},
        artifacts=[
            {
                "kind": "edp",
                "name": "dtm.json",
                "key": f"orders/{CFG_ID}/edp/dtm.json",
                "size": 1536,
                "sha256": "a" * 64,
                "url": "https://api.example.com/portal/tok-123/v2/dtm.json",
            },
            {
                "kind": "iso",
                "name": "iso.img",
                "key": f"orders/{CFG_ID}/iso/iso.img",
                "size": 3 * 1024 * 1024,
                "sha256": "d" * 64,
                "url": "https://api.example.com/portal/tok-123/v2/iso.img",
            },
        ],
    )


def compose(order: ConfiguratorPayload | None = None, manifest: Manifest | None = None) -> EmailMessage:
    return compose_delivery_email(
        sender=SENDER, order=order or make_order(), manifest=manifest or make_manifest(), page_url=PAGE_URL
    )


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert text is not None and rich is not None
    return text.get_content(), rich.get_content()


def reparse(message: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_message_has_exactly_a_text_and_an_html_alternative() -> None:
    message = reparse(compose())

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_both_parts_link_the_portal_and_list_every_artifact() -> None:
    text, rich = bodies(reparse(compose()))

    assert PAGE_URL in text
    assert f'href="{html.escape(PAGE_URL)}"' in rich
    for body in (text, rich):
        assert "Ada Lovelace" in body
        assert "Plant Nord" in body
        for name, kind, digest in (("dtm.json", "EDP", "a" * 64), ("iso.img", "ISO", "d" * 64)):
            assert name in body and kind in body and digest in body
        assert "1.5 KiB" in body and "3.0 MiB" in body
        assert "Earlier versions of your delivery stay available via the same link" in body


def test_headers_address_the_customer_and_name_site_and_version() -> None:
    message = reparse(compose())

    assert message["Subject"] == "Your delivery for Plant Nord is ready (version 2)"
    assert message["To"].addresses[0].display_name == "Ada Lovelace"
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    assert message["From"].addresses[0].addr_spec == "delivery@platform.example.com"
    assert parsedate_to_datetime(message["Date"]) == make_manifest().created_at
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@platform.example.com>")
    assert f"{CFG_ID}.v2" in message["Message-ID"]


def test_composing_twice_gives_the_same_date_and_content_but_a_fresh_message_id() -> None:
    first, second = compose(), compose()

    assert first["Date"] == second["Date"]
    assert bodies(first) == bodies(second)
    assert first["Message-ID"] != second["Message-ID"]


def test_line_breaks_in_customer_text_do_not_inject_headers() -> None:
    order = make_order(
        customer=customer_named("Ada\r\nBcc: spy@evil.example"),
        site=site_named("Plant\r\nBcc: victim@evil.example\nX-Injected: 1"),
    )

    header_block = compose(order=order).as_bytes(policy=SMTP).split(b"\r\n\r\n", 1)[0]
    message = reparse(compose(order=order))

    assert b"\r\nBcc:" not in header_block and b"\r\nX-Injected:" not in header_block
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert (
        message["Subject"]
        == "Your delivery for Plant Bcc: victim@evil.example X-Injected: 1 is ready (version 2)"
    )
    assert [address.addr_spec for address in message["To"].addresses] == ["ada@example.com"]


def test_html_part_escapes_customer_text_and_text_part_keeps_it_verbatim() -> None:
    order = make_order(
        customer=customer_named("<script>alert(1)</script>", company="Müller & Söhne"),
        site=site_named("<b>Plant</b>"),
    )

    text, rich = bodies(reparse(compose(order=order)))

    assert "<script" not in rich and "<b>Plant</b>" not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rich
    assert "Müller &amp; Söhne" in rich
    assert "Hello <script>alert(1)</script>," in text
    assert "Müller & Söhne" in text


def test_non_ascii_display_name_survives_the_wire() -> None:
    order = make_order(customer={"name": "Zoë Müller", "company": "Ökostrom eG", "email": "zoe@example.com"})

    message = reparse(compose(order=order))

    assert message["To"].addresses[0].display_name == "Zoë Müller"


def test_sender_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="sender"):
        compose_delivery_email(
            sender="not an address", order=make_order(), manifest=make_manifest(), page_url=PAGE_URL
        )


def test_outbox_file_parses_back_to_the_same_message(tmp_path: Path) -> None:
    message = compose()
    outbox = tmp_path / "outbox"

    path = write_to_outbox(message, outbox, f"{CFG_ID}.v2")

    assert path == outbox / f"{CFG_ID}.v2.eml"
    data = path.read_bytes()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(data, policy=default)
    assert parsed["Subject"] == message["Subject"]
    assert parsed["Message-ID"] == message["Message-ID"]
    assert [p.name for p in outbox.iterdir()] == [path.name]  # no temporary files left behind


def test_outbox_write_replaces_an_earlier_file_of_the_same_name(tmp_path: Path) -> None:
    write_to_outbox(compose(manifest=make_manifest(version=1)), tmp_path, "order")

    path = write_to_outbox(compose(manifest=make_manifest(version=2)), tmp_path, "order")

    assert "(version 2)" in email.message_from_bytes(path.read_bytes(), policy=default)["Subject"]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "with space", "..", "x" * 201, "semi;colon"])
def test_outbox_name_is_validated(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="outbox name"):
        write_to_outbox(compose(), tmp_path, name)
    assert list(tmp_path.iterdir()) == []
