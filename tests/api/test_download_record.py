"""The portal's download record: what a customer's clicks leave in it, and what GET /orders shows of them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from starlette.testclient import TestClient

from api.download_record import DownloadRecorder, clean_user_agent, client_network
from contracts.configurator import ConfiguratorPayload
from delivery.artifact_store import ArtifactStore, order_key
from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalLinks, PortalTokens
from delivery.portal_publication import publish_portal_version
from platform_config.settings import Settings
from platform_db.deliveries import DeliveryRepository
from platform_db.downloads import DownloadRepository
from platform_db.schema import portal_downloads
from tests.api.conftest import Submitted

pytestmark = pytest.mark.slow

SIGNER = ManifestSigner.generate()
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CUSTOMER_ADDRESS = "203.0.113.77"
CUSTOMER_NETWORK = "203.0.113.0/24"
FILES = {"dtm.json": b'{"devices": []}', "cfn.yaml": b"Resources: {}\n"}


@dataclass
class Portal:
    """One order with a published portal version, the operator's client and the customer's browser."""

    settings: Settings
    operator: TestClient
    cfg_id: str
    payload: ConfiguratorPayload

    def __post_init__(self) -> None:
        self.state = self.operator.app.state.api  # type: ignore[attr-defined]
        self.downloads: DownloadRepository = self.state.downloads
        token = PortalTokens(self.settings.portal_token_key()).token(self.cfg_id, 0)
        self.token = token
        self.links = PortalLinks(base_url=self.settings.api.public_url, token=token)
        # A browser on a customer's network, through the same app.
        self.customer = TestClient(
            self.operator.app,
            client=(CUSTOMER_ADDRESS, 50123),
            headers={"User-Agent": UA},
            follow_redirects=False,
        )

    def publish(self, run_id: str) -> int:
        s3 = boto3.client(
            "s3",
            endpoint_url=self.settings.aws.endpoint_url,
            region_name=self.settings.aws.region,
            **self.settings.aws_credentials(),
        )
        store = ArtifactStore(s3, self.settings.artifacts.bucket)
        stored = [store.put(order_key(self.cfg_id, "edp", name), data) for name, data in FILES.items()]
        return publish_portal_version(
            cfg_id=self.cfg_id,
            run_id=run_id,
            order=self.payload,
            flags={"commissioning_required": True},
            artifacts=[("edp", obj) for obj in stored],
            store=store,
            deliveries=DeliveryRepository(self.state.orders.engine),
            signer=SIGNER,
        ).version

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.customer.get(url.removeprefix(self.settings.api.public_url), **kwargs)

    def order(self) -> dict[str, Any]:
        answer = self.operator.get(f"/orders/{self.cfg_id}")
        assert answer.status_code == 200
        return dict(answer.json())


@pytest.fixture
def portal_settings(pipeline_settings: Settings, free_port: Callable[[], int]) -> Settings:
    """The pipeline's settings (the embedded S3) with no Dagster webserver behind the GraphQL URL."""
    dagster = pipeline_settings.dagster.model_copy(
        update={"graphql_url": f"http://127.0.0.1:{free_port()}/graphql"}
    )
    return pipeline_settings.model_copy(update={"dagster": dagster})


@pytest.fixture
def portal(portal_settings: Settings, submitted: Submitted, cloud_order: dict[str, Any]) -> Iterator[Portal]:
    with submitted(portal_settings) as (operator, cfg_id):
        yield Portal(portal_settings, operator, cfg_id, ConfiguratorPayload.model_validate(cloud_order))


def _entries(view: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(d["version"], d["file"], d["client"], d["user_agent"]) for d in view["downloads"]]


def test_a_download_is_recorded_with_its_version_file_network_and_user_agent(portal: Portal) -> None:
    version = portal.publish("run-1")

    answer = portal.get(portal.links.artifact(version, "cfn.yaml"))

    assert answer.status_code == 303 and "X-Amz-Signature=" in answer.headers["location"]
    view = portal.order()
    assert _entries(view) == [(version, "cfn.yaml", CUSTOMER_NETWORK, UA)]
    assert abs(datetime.fromisoformat(view["downloads"][0]["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert view["current_version_fetched"] is True
    # Neither the customer's full address nor the link's token is kept.
    [entry] = portal.downloads.recent(portal.cfg_id, 10)
    assert CUSTOMER_ADDRESS not in repr(entry) and portal.token not in repr(entry)


def test_page_views_are_recorded_but_fetch_nothing(portal: Portal) -> None:
    version = portal.publish("run-1")

    assert portal.get(portal.links.portal()).status_code == 200
    assert portal.get(portal.links.version_page(version)).status_code == 200

    view = portal.order()
    assert _entries(view) == [(version, None, CUSTOMER_NETWORK, UA), (None, None, CUSTOMER_NETWORK, UA)]
    assert view["current_version_fetched"] is False

    assert portal.get(portal.links.artifact(version, "manifest.json")).status_code == 200
    view = portal.order()
    assert _entries(view)[0] == (version, "manifest.json", CUSTOMER_NETWORK, UA)
    assert view["current_version_fetched"] is True


def test_links_that_answer_404_are_not_recorded(portal: Portal) -> None:
    version = portal.publish("run-1")
    other_key = PortalTokens(b"another-key-of-32-bytes-length!!").token(portal.cfg_id, 0)
    misses = [
        f"/portal/{other_key}",
        f"/portal/{other_key}/v{version}/cfn.yaml",
        "/portal/not-a-token",
        portal.links.version_page(version + 1),
        portal.links.artifact(version, "nothing.bin"),
        portal.links.artifact(version + 1, "cfn.yaml"),
    ]

    assert {portal.get(miss).status_code for miss in misses} == {404}
    # A HEAD of a good link fetches nothing either.
    assert (
        portal.customer.head(
            portal.links.artifact(version, "cfn.yaml").removeprefix(portal.settings.api.public_url)
        ).status_code
        == 303
    )

    assert portal.order()["downloads"] == []
    assert portal.downloads.orders_recorded_after(0) == {}


def test_the_view_shows_the_latest_entries_and_whether_the_newest_version_was_fetched(portal: Portal) -> None:
    before = portal.order()
    assert (before["downloads"], before["current_version_fetched"]) == ([], None)
    first = portal.publish("run-1")
    portal.get(portal.links.artifact(first, "cfn.yaml"))
    second = portal.publish("run-2")

    # Version 1's files were fetched, the current one's not yet.
    assert portal.order()["current_version_fetched"] is False

    for _ in range(portal.settings.portal.recent_downloads):
        portal.get(portal.links.portal())
    portal.get(portal.links.artifact(second, "dtm.json"))
    view = portal.order()
    assert view["current_version_fetched"] is True
    assert len(view["downloads"]) == portal.settings.portal.recent_downloads
    assert _entries(view)[0] == (second, "dtm.json", CUSTOMER_NETWORK, UA)
    assert (first, "cfn.yaml", CUSTOMER_NETWORK, UA) not in _entries(view)


def test_the_user_agent_is_clipped_and_cleaned_and_an_unknown_address_is_left_out(portal: Portal) -> None:
    version = portal.publish("run-1")
    # The operator's client reports no IP address ("testclient"), as a Unix socket would not.
    answer = portal.operator.get(
        portal.links.artifact(version, "cfn.yaml").removeprefix(portal.settings.api.public_url),
        headers={"User-Agent": "evil\x1b[31m\x7fagent " + "x" * 400},
        follow_redirects=False,
    )

    assert answer.status_code == 303
    [entry] = portal.order()["downloads"]
    assert entry["client"] is None
    assert entry["user_agent"] == ("evil[31magent " + "x" * 400)[:256]


def test_entries_older_than_the_setting_expire_at_most_every_ten_minutes(portal: Portal) -> None:
    version = portal.publish("run-1")
    days = portal.settings.portal.download_record_days
    now = datetime.now(UTC)

    def record_at(at: datetime, file: str) -> None:
        portal.downloads.record(portal.cfg_id, version=version, file=file, user_agent=UA, client=None, at=at)

    record_at(now - timedelta(days=days, hours=1), "expired.bin")
    record_at(now - timedelta(days=days - 1), "kept.bin")

    portal.get(portal.links.artifact(version, "cfn.yaml"))

    files = [d["file"] for d in portal.order()["downloads"]]
    assert files == ["cfn.yaml", "kept.bin"]

    # Expired once by this process: the next old entry waits for the next round.
    record_at(now - timedelta(days=days, hours=1), "expired-later.bin")
    portal.get(portal.links.artifact(version, "dtm.json"))
    assert "expired-later.bin" in [d["file"] for d in portal.order()["downloads"]]


def test_a_failing_record_neither_breaks_a_download_nor_logs_the_token(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    version = portal.publish("run-1")
    portal_downloads.drop(portal.state.orders.engine)

    with caplog.at_level(logging.WARNING, logger="api.download_record"):
        download = portal.get(portal.links.artifact(version, "cfn.yaml"))
        page = portal.get(portal.links.portal())

    assert download.status_code == 303 and "X-Amz-Signature=" in download.headers["location"]
    assert page.status_code == 200
    warnings = [record.getMessage() for record in caplog.records if record.name == "api.download_record"]
    assert any(portal.cfg_id in message and "not written" in message for message in warnings)
    assert portal.token not in caplog.text and CUSTOMER_ADDRESS not in caplog.text
    assert "INSERT" not in caplog.text


# --- what is kept of a request ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("fe80::1%eth0", "fe80::/48"),
        ("testclient", None),
        ("", None),
        (None, None),
    ],
)
def test_only_the_network_of_the_client_is_kept(host: str | None, network: str | None) -> None:
    assert client_network(host) == network


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (UA, UA),
        ("curl/8.5.0\r\n\x00", "curl/8.5.0"),
        ("bidi \u202eevil\u202c agent", "bidi evil agent"),
        ("y" * 1000, "y" * 256),
        ("\t \x01", None),
        (None, None),
    ],
)
def test_the_user_agent_is_kept_without_control_characters_and_clipped(
    sent: str | None, kept: str | None
) -> None:
    assert clean_user_agent(sent) == kept


def test_expiry_runs_once_per_interval_per_process(portal: Portal) -> None:
    clock = [1000.0]
    recorder = DownloadRecorder(
        portal.downloads, timedelta(days=1), expire_every_seconds=600, clock=lambda: clock[0]
    )
    old = datetime.now(UTC) - timedelta(days=2)

    def old_entry() -> None:
        portal.downloads.record(portal.cfg_id, version=None, file=None, user_agent=None, client=None, at=old)

    def recorded() -> int:
        return len(portal.downloads.recent(portal.cfg_id, 100))

    old_entry()
    recorder.record(portal.cfg_id, version=None, file=None, user_agent=UA, client=None)
    assert recorded() == 1

    old_entry()
    clock[0] += 599
    recorder.record(portal.cfg_id, version=None, file=None, user_agent=UA, client=None)
    assert recorded() == 3

    clock[0] += 1
    recorder.record(portal.cfg_id, version=None, file=None, user_agent=UA, client=None)
    assert recorded() == 3
