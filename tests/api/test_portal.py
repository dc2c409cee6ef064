import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import boto3
import pytest
import requests
from starlette.testclient import TestClient

from api.app import create_app
from api.portal import prefers_html
from contracts.configurator import ConfiguratorPayload
from delivery.artifact_store import ArtifactStore, order_key
from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalLinks, PortalTokens
from delivery.portal_publication import publish_portal_version
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
SIGNER = ManifestSigner.generate()


class Delivered:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.orders = OrderRepository.from_url(settings.platform_db_url())
        self.deliveries = DeliveryRepository(self.orders.engine)
        client = boto3.client(
            "s3",
            endpoint_url=settings.aws.endpoint_url,
            region_name=settings.aws.region,
            **settings.aws_credentials(),
        )
        self.store = ArtifactStore(client, settings.artifacts.bucket)
        payload = ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text()))
        payload = payload.model_copy(
            update={"site": payload.site.model_copy(update={"name": "<script>alert(1)</script>"})}
        )
        self.payload = payload
        self.cfg_id = self.orders.submit(payload, None)[0].cfg_id
        self.files = {"dtm.json": b'{"devices": []}', "cfn.yaml": b"Resources: {}\n"}

    def links(self) -> PortalLinks:
        order = self.orders.get(self.cfg_id)
        assert order is not None
        token = PortalTokens(self.settings.portal_token_key()).token(
            self.cfg_id, order.portal_token_generation
        )
        return PortalLinks(base_url=self.settings.api.public_url, token=token)

    def publish(self, run_id: str) -> int:
        dtm = self.store.put(order_key(self.cfg_id, "edp", "dtm.json"), self.files["dtm.json"])
        cfn = self.store.put(order_key(self.cfg_id, "cfn", "cfn.yaml"), self.files["cfn.yaml"])
        publication = publish_portal_version(
            cfg_id=self.cfg_id,
            run_id=run_id,
            order=self.payload,
            flags={"commissioning_required": True},
            artifacts=[("edp", dtm), ("cfn", cfn)],
            store=self.store,
            deliveries=self.deliveries,
            signer=SIGNER,
        )
        return publication.version


@pytest.fixture
def delivered(pipeline_settings: Settings) -> Iterator[Delivered]:
    delivered = Delivered(pipeline_settings)
    yield delivered
    delivered.orders.dispose()


@pytest.fixture
def client(delivered: Delivered) -> Iterator[TestClient]:
    with TestClient(create_app(delivered.settings, delivered.orders), follow_redirects=False) as client:
        yield client


def path_of(url: str, settings: Settings) -> str:
    return url.removeprefix(settings.api.public_url)


def test_the_stable_link_shows_the_latest_version_and_history(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    page = client.get(path_of(delivered.links().portal(), delivered.settings))
    assert page.status_code == 200
    assert "version 2" in page.text.lower()
    assert delivered.links().version_page(1) in page.text, "the history links the earlier version"
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    earlier = client.get(path_of(delivered.links().version_page(1), delivered.settings))
    assert earlier.status_code == 200 and delivered.links().artifact(1, "cfn.yaml") in earlier.text


def test_downloads_answer_303_to_a_fresh_presigned_url(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    for name, data in delivered.files.items():
        answer = client.get(path_of(delivered.links().artifact(1, name), delivered.settings))
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith(delivered.settings.aws.public_endpoint_url or "")
        assert "X-Amz-Signature=" in location and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location
        downloaded = requests.get(location, timeout=10)
        assert hashlib.sha256(downloaded.content).hexdigest() == hashlib.sha256(data).hexdigest()
    served = client.get(path_of(delivered.links().artifact(1, "manifest.json"), delivered.settings))
    # The signed bytes as stored: each download link is the artifact's name next to manifest.json.
    assert served.content == delivered.store.get(f"portal/{delivered.cfg_id}/v1/manifest.json")
    manifest_url = delivered.links().artifact(1, "manifest.json")
    assert [urljoin(manifest_url, a["name"]) for a in served.json()["artifacts"]] == [
        delivered.links().artifact(1, n) for n in delivered.files
    ]


def test_every_wrong_link_is_the_same_404(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    links = delivered.links()
    other = PortalTokens(b"another-key-of-32-bytes-length!!").token(delivered.cfg_id, 0)
    stranger = PortalTokens(delivered.settings.portal_token_key()).token(str(uuid.uuid4()), 0)
    misses: list[Any] = [
        client.get(f"/portal/{other}"),
        client.get(f"/portal/{stranger}"),
        client.get("/portal/not-a-token"),
        client.get(path_of(links.version_page(7), delivered.settings)),
        client.get(path_of(links.artifact(1, "nothing.bin"), delivered.settings)),
        client.get(path_of(links.artifact(7, "cfn.yaml"), delivered.settings)),
    ]
    assert {miss.status_code for miss in misses} == {404}
    assert {miss.text for miss in misses} == {misses[0].text}


def test_rotating_the_token_retires_the_old_link(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    old = delivered.links()
    rotated = client.post(f"/orders/{delivered.cfg_id}/portal-token", headers={"Idempotency-Key": "rotate-0"})
    assert rotated.status_code == 200
    new_url = rotated.json()["portal_url"]
    assert new_url != old.portal() and new_url == delivered.links().portal()
    assert client.get(path_of(old.portal(), delivered.settings)).status_code == 404
    assert client.get(path_of(old.artifact(1, "cfn.yaml"), delivered.settings)).status_code == 404
    assert client.get(path_of(new_url, delivered.settings)).status_code == 200
    order = client.get(f"/orders/{delivered.cfg_id}").json()
    assert order["portal_url"] == new_url
    assert [v["version"] for v in order["portal_versions"]] == [1]


def test_an_order_without_a_published_version_has_no_portal(delivered: Delivered, client: TestClient) -> None:
    assert client.get(f"/orders/{delivered.cfg_id}").json()["portal_url"] is None
    assert client.get(path_of(delivered.links().portal(), delivered.settings)).status_code == 404


def _expires_seconds(url: str) -> int:
    from urllib.parse import parse_qs, urlsplit

    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


def test_downloads_are_presigned_for_minutes_not_days(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    answer = client.get(path_of(delivered.links().artifact(1, "cfn.yaml"), delivered.settings))
    assert answer.status_code == 303
    # Each click presigns anew, so the URL only has to outlive the redirect.
    assert delivered.settings.portal.presign_seconds == 300
    assert _expires_seconds(answer.headers["location"]) == 300


EXPECTED_PORTAL_HEADERS = {
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def test_every_portal_answer_carries_the_security_headers(delivered: Delivered, client: TestClient) -> None:
    delivered.publish("run-1")
    links = delivered.links()
    answers = {
        "index": client.get(path_of(links.portal(), delivered.settings)),
        "version": client.get(path_of(links.version_page(1), delivered.settings)),
        "download": client.get(path_of(links.artifact(1, "cfn.yaml"), delivered.settings)),
        "manifest": client.get(path_of(links.artifact(1, "manifest.json"), delivered.settings)),
        "miss": client.get("/portal/not-a-token"),
        "unrouted": client.get(f"/portal/{'a' * 20}/v1/x/y/z"),
    }
    assert [answer.status_code for answer in answers.values()] == [200, 200, 303, 200, 404, 404]
    for name, answer in answers.items():
        assert {key: answer.headers.get(key) for key in EXPECTED_PORTAL_HEADERS} == EXPECTED_PORTAL_HEADERS, (
            name
        )
    # The page needs no more than the CSP allows: one inline <style>, no scripts, images or forms.
    page = answers["index"].text.lower()
    assert "<style>" in page
    for needs_more in ("<script", "<img", "<link", "<form", "<iframe", " style=", "url("):
        assert needs_more not in page, needs_more
    # The API's other answers are not the portal's business.
    assert "content-security-policy" not in client.get("/healthz").headers


def test_the_portal_page_shows_the_commissioning_token_the_bundle_carries(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    tokens = PortalTokens(delivered.settings.portal_token_key())
    token = tokens.commissioning_token(delivered.cfg_id, 0)
    for link in (delivered.links().portal(), delivered.links().version_page(1)):
        page = client.get(path_of(link, delivered.settings))
        assert page.status_code == 200 and token in page.text
        assert "Authorization: Bearer" in page.text
    # The pages stored beside the manifests in the bucket are no place for a credential.
    for key in (f"portal/{delivered.cfg_id}/index.html", f"portal/{delivered.cfg_id}/v1/index.html"):
        assert token.encode() not in delivered.store.get(key)
    # After a rotation the portal shows the token of the order's new generation, and no longer the old.
    delivered.orders.rotate_commissioning_token(delivered.cfg_id)
    page = client.get(path_of(delivered.links().portal(), delivered.settings)).text
    assert tokens.commissioning_token(delivered.cfg_id, 1) in page and token not in page


def test_a_manifest_stored_with_links_by_schema_version_1_is_served_with_the_current_ones(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    key = f"portal/{delivered.cfg_id}/v1/manifest.json"
    stored = json.loads(delivered.store.get(key))
    # As earlier releases wrote it: schema version 1, each artifact's link under the token of then.
    dead = "https://old.example.com/portal/retired-token/v1"
    stored["schema_version"] = 1
    for artifact in stored["artifacts"]:
        artifact["url"] = f"{dead}/{artifact['name']}"
    delivered.store.put(key, json.dumps(stored).encode(), "application/json")
    links = delivered.links()

    manifest = client.get(path_of(links.artifact(1, "manifest.json"), delivered.settings))
    page = client.get(path_of(links.version_page(1), delivered.settings))
    index = client.get(path_of(links.portal(), delivered.settings))

    assert manifest.status_code == 200
    assert manifest.json()["schema_version"] == 3
    assert [a["url"] for a in manifest.json()["artifacts"]] == [links.artifact(1, n) for n in delivered.files]
    for answer in (page, index):
        assert answer.status_code == 200
        assert dead not in answer.text and links.artifact(1, "cfn.yaml") in answer.text
    download = client.get(path_of(links.artifact(1, "cfn.yaml"), delivered.settings))
    assert download.status_code == 303


# What Firefox and Chrome send for a page; a customer who clicks an old email's link sends one of these.
BROWSER_ACCEPTS = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7",
)
API_ACCEPTS = ("", "*/*", "application/json", "application/json, text/html;q=0.5", "text/html;q=0")


@pytest.mark.parametrize(
    ("accept", "html"), [*((a, True) for a in BROWSER_ACCEPTS), *((a, False) for a in API_ACCEPTS)]
)
def test_a_browser_is_told_apart_from_an_api_client_by_its_accept_header(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_a_browser_following_a_dead_link_reads_what_to_do_and_an_api_client_gets_the_problem(
    delivered: Delivered,
) -> None:
    settings = delivered.settings.model_copy(
        update={
            "portal": delivered.settings.portal.model_copy(
                update={"support_contact": "Jane Roe <jr@example.com>"}
            )
        }
    )
    with TestClient(create_app(settings, delivered.orders), follow_redirects=False) as client:
        delivered.publish("run-1")
        old = delivered.links()
        client.post(f"/orders/{delivered.cfg_id}/portal-token", headers={"Idempotency-Key": "rotate-1"})
        assert delivered.links().portal() != old.portal(), "the token was rotated"
        stranger = PortalTokens(delivered.settings.portal_token_key()).token(str(uuid.uuid4()), 0)
        dead = [
            path_of(old.portal(), settings),
            path_of(old.artifact(1, "cfn.yaml"), settings),
            f"/portal/{stranger}",
            "/portal/not-a-token",
            path_of(delivered.links().version_page(7), settings),
            path_of(delivered.links().artifact(1, "nothing.bin"), settings),
            f"/portal/{'a' * 20}/v1/x/y/z",
        ]
        for accept in BROWSER_ACCEPTS:
            pages = [client.get(path, headers={"Accept": accept}) for path in dead]
            assert {page.status_code for page in pages} == {404}
            assert {page.headers["content-type"] for page in pages} == {"text/html; charset=utf-8"}
            # One page for every miss: it never tells which part of a guessed link was wrong.
            assert len({page.text for page in pages}) == 1
            text = pages[0].text
            assert "This download link is not valid any more" in text
            assert "The link in your newest delivery email works" in text
            assert "please ask Jane Roe &lt;jr@example.com&gt;" in text
            for page in pages:
                assert {
                    key: page.headers.get(key) for key in EXPECTED_PORTAL_HEADERS
                } == EXPECTED_PORTAL_HEADERS
        for accept in API_ACCEPTS:
            problems = [client.get(path, headers={"Accept": accept}) for path in dead[:-1]]
            assert {(p.status_code, p.headers["content-type"]) for p in problems} == {
                (404, "application/json")
            }
            assert {p.text for p in problems} == {'{"detail":"not found"}'}


def test_a_browser_downloading_a_withdrawn_version_reads_why_and_where_the_newest_is(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    delivered.publish("run-2")
    delivered.publish("run-3")
    delivered.deliveries.set_yank(delivered.cfg_id, 3, "wrong <b>register</b> map")
    links = delivered.links()
    download = path_of(links.artifact(3, "cfn.yaml"), delivered.settings)

    page = client.get(download, headers={"Accept": BROWSER_ACCEPTS[0]})
    assert page.status_code == 410 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "Version 3 was withdrawn: wrong &lt;b&gt;register&lt;/b&gt; map." in page.text
    assert f'version 2</strong>, at\n  <a href="{links.portal()}">' in page.text
    assert "please ask support@platform.example.com" in page.text.lower()
    assert {key: page.headers.get(key) for key in EXPECTED_PORTAL_HEADERS} == EXPECTED_PORTAL_HEADERS

    problem = client.get(download, headers={"Accept": "application/json"})
    assert problem.status_code == 410
    assert problem.json() == {"detail": "portal version 3 was withdrawn: wrong <b>register</b> map"}

    for version in (1, 2):
        delivered.deliveries.set_yank(delivered.cfg_id, version, "recalled")
    every = client.get(download, headers={"Accept": BROWSER_ACCEPTS[1]})
    assert every.status_code == 410
    assert "Every version of this delivery was withdrawn" in every.text and links.portal() not in every.text
