"""The order assets run in-process against real servers: moto (S3, SES), the EDP stand-in, the API."""

from __future__ import annotations

import email
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import uvicorn
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, instance_for_test, materialize

from api.app import create_app
from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from contracts.orders import OrderStatus
from contracts.records import Order
from delivery.artifact_store import portal_key
from delivery.portal_links import PortalLinks, PortalTokens
from platform_assets.definitions import order_assets
from platform_config.settings import Settings
from platform_db import OrderRepository
from resources.edp import EdpClient
from resources.pipeline import build_resources
from tests.pipeline_fixtures import s3_client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EDP_DONE_TIMEOUT = 20.0


@dataclass
class ApiServer:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def _start_api(settings: Settings, orders: OrderRepository, sock: socket.socket) -> ApiServer:
    config = uvicorn.Config(
        create_app(settings, orders), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    return ApiServer(server=server, thread=thread)


@dataclass
class OrderFlow:
    """One stage's pipeline as the operator and the customer see it."""

    settings: Settings
    instance: DagsterInstance
    orders: OrderRepository

    # --- orders and runs ----------------------------------------------------------------------

    def submit(self, target: str) -> str:
        payload = ConfiguratorPayload.model_validate(
            json.loads((EXAMPLES / f"order-{target}.json").read_text(encoding="utf-8"))
        )
        order, _ = self.orders.submit(payload, None)
        # What order_sensor's add request does in the daemon.
        self.instance.add_dynamic_partitions("orders", [order.cfg_id])
        return order.cfg_id

    def materialize(
        self,
        cfg_id: str,
        selection: Sequence[AssetKey],
        *,
        raise_on_error: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> ExecuteInProcessResult:
        """One run over ``selection`` of the order, with the stage's resources (a fresh set per run, as in a run worker)."""
        return materialize(
            order_assets(self.settings),
            selection=list(selection),
            partition_key=cfg_id,
            resources=build_resources(self.settings),
            instance=self.instance,
            raise_on_error=raise_on_error,
            tags=tags,
        )

    def order(self, cfg_id: str) -> Order:
        order = self.orders.get(cfg_id)
        assert order is not None
        return order

    def status(self, cfg_id: str) -> OrderStatus:
        return self.order(cfg_id).status

    def wait_for_edp(self, cfg_id: str, ends: str = "complete") -> None:
        job_id = self.order(cfg_id).edp_job_id
        assert job_id is not None, "the config step recorded no EDP job"
        client = EdpClient(self.settings.edp.base_url, 2, 0)
        deadline = time.monotonic() + EDP_DONE_TIMEOUT
        while (status := client.get_job(job_id).status) != ends:
            assert status in ("queued", "running"), f"EDP job {job_id} ended {status}"
            assert time.monotonic() < deadline, f"EDP job {job_id} still {status}"
            time.sleep(0.05)

    # --- the artifact bucket ------------------------------------------------------------------

    def s3(self) -> Any:
        return s3_client(self.settings)

    def keys(self, prefix: str) -> list[str]:
        pages = (
            self.s3()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.settings.artifacts.bucket, Prefix=prefix)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.s3().get_object(Bucket=self.settings.artifacts.bucket, Key=key)["Body"].read()

    def manifest(self, cfg_id: str, version: int) -> Manifest:
        return Manifest.model_validate(json.loads(self.read(portal_key(cfg_id, version, "manifest.json"))))

    # --- what the customer gets ---------------------------------------------------------------

    def emails_sent_by_ses(self, cfg_id: str) -> list[dict[str, Any]]:
        """Raw messages the embedded SES accepted for this order (the server is shared by the session)."""
        data = requests.get(f"{self.settings.aws.endpoint_url}/moto-api/data.json", timeout=10).json()
        return [
            message for message in data.get("ses", {}).get("RawMessage", []) if cfg_id in message["raw_data"]
        ]

    def outbox(self, cfg_id: str) -> list[EmailMessage]:
        outbox = Path(self.settings.email.outbox_dir or "")
        files = sorted(outbox.glob(f"{cfg_id}*.eml")) if outbox.is_dir() else []
        return [
            cast(EmailMessage, email.message_from_bytes(path.read_bytes(), policy=default_policy))
            for path in files
        ]

    def portal_links(self, cfg_id: str) -> PortalLinks:
        """The order's portal links under its current token."""
        token = PortalTokens(self.settings.portal_token_key()).token(
            cfg_id, self.order(cfg_id).portal_token_generation
        )
        return PortalLinks(base_url=self.settings.api.public_url, token=token)

    def portal_link_in(self, mail: EmailMessage) -> str:
        """The portal link the email's text carries."""
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        prefix = f"{self.settings.api.public_url}/portal/"
        return next(word for word in body.get_content().split() if word.startswith(prefix))

    def assert_downloads_match(self, manifest: Manifest) -> None:
        """The portal serves the stored (signed) manifest, and each artifact's name beside it
        downloads exactly the bytes it promises."""
        links = self.portal_links(manifest.cfg_id)
        answer = requests.get(links.artifact(manifest.version, "manifest.json"), timeout=10)
        assert answer.status_code == 200
        served = Manifest.model_validate(answer.json())
        assert served == manifest
        for artifact in served.artifacts:
            response = requests.get(
                links.artifact(manifest.version, artifact.name), allow_redirects=True, timeout=30
            )
            assert response.status_code == 200, f"{artifact.name}: HTTP {response.status_code}"
            assert len(response.content) == artifact.size, artifact.name
            assert hashlib.sha256(response.content).hexdigest() == artifact.sha256, artifact.name


@pytest.fixture
def flow(pipeline_settings: Settings) -> Iterator[OrderFlow]:
    """Pipeline settings whose portal links point at a running API, and a real Dagster instance."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = pipeline_settings.model_copy(
        update={"api": pipeline_settings.api.model_copy(update={"public_url": public_url})}
    )
    orders = OrderRepository.from_url(settings.platform_db_url())
    api = _start_api(settings, OrderRepository.from_url(settings.platform_db_url()), sock)
    try:
        with instance_for_test() as instance:
            yield OrderFlow(settings=settings, instance=instance, orders=orders)
    finally:
        api.stop()
        orders.dispose()
