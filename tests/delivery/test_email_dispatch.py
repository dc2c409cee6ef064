from __future__ import annotations

import email
import json
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from contracts.configurator import ConfiguratorPayload
from delivery.artifact_store import ArtifactStore, order_key
from delivery.email_dispatch import send_delivery_email_once
from delivery.portal_links import PortalLinks
from delivery.portal_publication import PortalPublication, publish_portal_version
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from resources.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"


@dataclass
class Mailing:
    settings: Settings
    order: ConfiguratorPayload
    publication: PortalPublication
    deliveries: DeliveryRepository
    ses: Any
    outbox: Path

    def send(self, sender: str | None = None) -> tuple[str | None, bool]:
        return send_delivery_email_once(
            publication=self.publication,
            order=self.order,
            sender=sender or self.settings.email.sender,
            ses_client=self.ses,
            deliveries=self.deliveries,
            outbox_dir=self.outbox,
        )

    def sent_by_moto(self) -> list[dict[str, Any]]:
        """The raw messages the embedded SES accepted for this order (the server is shared by the session)."""
        data = requests.get(f"{self.settings.aws.endpoint_url}/moto-api/data.json", timeout=10).json()
        return [m for m in data["ses"]["RawMessage"] if self.publication.cfg_id in m["raw_data"]]

    def outbox_files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []


@pytest.fixture
def mailing(pipeline_settings: Settings, tmp_path: Path) -> Iterator[Mailing]:
    settings = pipeline_settings
    client_args = {"endpoint_url": settings.aws.endpoint_url, "region_name": settings.aws.region, **settings.aws_credentials()}
    order = ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    orders = OrderRepository.from_url(settings.platform_db_url())
    cfg_id = orders.submit(order, None)[0].cfg_id
    orders.dispose()
    store = ArtifactStore(boto3.client("s3", **client_args), settings.artifacts.bucket)
    deliveries = DeliveryRepository.from_url(settings.platform_db_url())
    publication = publish_portal_version(
        cfg_id=cfg_id,
        run_id="run-1",
        order=order,
        flags={},
        artifacts=[("edp", store.put(order_key(cfg_id, "edp", "dtm.json"), b"{}", "application/json"))],
        store=store,
        deliveries=deliveries,
        links=PortalLinks(base_url="https://portal.example.com", token="t0ken"),
    )
    yield Mailing(
        settings=settings,
        order=order,
        publication=publication,
        deliveries=deliveries,
        ses=boto3.client("sesv2", **client_args),
        outbox=tmp_path / "outbox-dispatch",
    )
    deliveries.dispose()


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.slow
def test_sends_one_email_through_ses_and_writes_it_to_the_outbox(mailing: Mailing) -> None:
    message_id, sent_now = mailing.send()

    assert sent_now is True
    assert message_id
    sent = mailing.sent_by_moto()
    assert [m["id"] for m in sent] == [message_id]
    assert "ada@example.com" in sent[0]["destinations"]
    assert sent[0]["source"] == mailing.settings.email.sender
    delivered = email.message_from_string(sent[0]["raw_data"], policy=default)
    assert isinstance(delivered, EmailMessage)
    delivered_text = delivered.get_body(("plain",))
    delivered_html = delivered.get_body(("html",))
    assert delivered_text is not None and mailing.publication.portal_url in delivered_text.get_content()
    assert delivered_html is not None and mailing.publication.portal_url in delivered_html.get_content()

    files = mailing.outbox_files()
    assert [f.name for f in files] == [f"{mailing.publication.cfg_id}-v1.eml"]
    written = parse(files[0])
    assert "ada@example.com" in written["To"]
    assert "version 1" in written["Subject"]
    text = written.get_body(("plain",))
    assert text is not None and mailing.publication.portal_url in text.get_content()
    assert mailing.deliveries.email_message_id(mailing.publication.cfg_id, 1) == message_id


@pytest.mark.slow
def test_second_call_for_the_same_version_sends_nothing(mailing: Mailing) -> None:
    message_id, _ = mailing.send()
    eml_before = mailing.outbox_files()[0].read_bytes()

    again_id, sent_now = mailing.send()

    assert sent_now is False
    assert again_id == message_id
    assert len(mailing.sent_by_moto()) == 1
    assert len(mailing.outbox_files()) == 1
    assert mailing.outbox_files()[0].read_bytes() == eml_before


@pytest.mark.slow
def test_refused_send_releases_the_claim_so_a_later_call_sends(mailing: Mailing) -> None:
    with pytest.raises(ClientError) as caught:
        mailing.send(sender="nobody@unverified.example.org")

    assert caught.value.response["Error"]["Code"] == "MessageRejected"
    assert mailing.sent_by_moto() == []
    assert mailing.outbox_files() == []
    assert mailing.deliveries.email_message_id(mailing.publication.cfg_id, 1) is None

    message_id, sent_now = mailing.send()

    assert sent_now is True
    assert [m["id"] for m in mailing.sent_by_moto()] == [message_id]
    assert len(mailing.outbox_files()) == 1

    assert mailing.send() == (message_id, False)
    assert len(mailing.sent_by_moto()) == 1


@pytest.mark.slow
def test_without_outbox_the_email_is_still_sent_once(mailing: Mailing) -> None:
    kwargs = dict(
        publication=mailing.publication,
        order=mailing.order,
        sender=mailing.settings.email.sender,
        ses_client=mailing.ses,
        deliveries=mailing.deliveries,
        outbox_dir=None,
    )

    message_id, sent_now = send_delivery_email_once(**kwargs)  # type: ignore[arg-type]
    assert sent_now is True
    assert send_delivery_email_once(**kwargs) == (message_id, False)  # type: ignore[arg-type]
    assert len(mailing.sent_by_moto()) == 1
    assert mailing.outbox_files() == []
