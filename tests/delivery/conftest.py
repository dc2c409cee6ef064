"""Fixtures of the delivery tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import pytest
from moto import mock_aws

from contracts.configurator import ConfiguratorPayload
from delivery.artifact_store import ArtifactStore
from delivery.edp_artifact_policy import EdpArtifactPolicy
from platform_config.settings import Settings
from tests.conftest import LoopbackHTTPServer, QuietHandler
from tests.pipeline_fixtures import s3_client


@pytest.fixture
def store(pipeline_settings: Settings) -> ArtifactStore:
    """The test's own bucket on the embedded S3 (moto's server)."""
    return ArtifactStore(s3_client(pipeline_settings), pipeline_settings.artifacts.bucket)


# What a presigned URL carries: no refusal, no order error may repeat any of it.
QUERY = "?X-Amz-Credential=AKIDSECRETCREDENTIAL&X-Amz-Signature=deadbeefsignature"
QUERY_SECRETS = ("AKIDSECRETCREDENTIAL", "deadbeefsignature", "X-Amz", "?")

Route = Callable[[BaseHTTPRequestHandler], None]


class ArtifactServer(LoopbackHTTPServer):
    """A tiny HTTP server on 127.0.0.1 whose answers the test writes; it remembers every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.bytes_sent = 0
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except OSError:
                    pass  # the client hung up, as a refusing downloader does

        super().__init__(Handler)

    def __enter__(self) -> ArtifactServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}{QUERY}"

    # --- answers ----------------------------------------------------------------------------

    def body(
        self, path: str, data: bytes, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            for name, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = answer

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.body(path, b"", status=status, headers={"Location": location})

    def stream(
        self,
        path: str,
        total: int,
        *,
        announce: int | None = None,
        chunked: bool = False,
        chunk: int = 64 * 1024,
    ) -> None:
        """``total`` bytes: with Content-Length ``announce``, chunked, or ending when the connection does."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            if announce is not None:
                handler.send_header("Content-Length", str(announce))
            elif chunked:
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                handler.send_header("Connection", "close")
            handler.end_headers()
            sent = 0
            while sent < total:
                piece = b"\0" * min(chunk, total - sent)
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
                self.bytes_sent += len(piece)
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
            handler.close_connection = True

        self.routes[path] = answer

    def drip(self, path: str, total: int, interval: float, *, headers_too: bool = False) -> None:
        """One byte every ``interval`` s: each read is quick, the whole never ends in time."""

        def answer(handler: BaseHTTPRequestHandler) -> None:
            wfile = handler.wfile
            if headers_too:
                wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(total):
                    wfile.write(b"X")
                    wfile.flush()
                    time.sleep(interval)
                return
            handler.send_response(200)
            handler.send_header("Content-Length", str(total))
            handler.end_headers()
            for _ in range(total):
                wfile.write(b"x")
                wfile.flush()
                time.sleep(interval)

        self.routes[path] = answer

    def late(self, path: str, delay: float, data: bytes) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            time.sleep(delay)
            self.body(path, data)
            self.routes[path](handler)

        self.routes[path] = answer


@pytest.fixture
def edp_host() -> Iterator[ArtifactServer]:
    """EDP's artifact host, as far as the test needs one."""
    with ArtifactServer() as running:
        yield running


@pytest.fixture
def internal_service() -> Iterator[ArtifactServer]:
    """Another loopback service: what an artifact URL must not reach (moto, the API, Dagster...)."""
    with ArtifactServer() as running:
        running.body("/secret", b"internal data")
        yield running


def artifact_policy(edp_base_url: str, **overrides: Any) -> EdpArtifactPolicy:
    """As in local/demo (the server is on 127.0.0.1), with small caps and a 1 s deadline."""
    values: dict[str, Any] = {
        "edp_base_url": edp_base_url,
        "allow_private_hosts": True,
        "max_artifacts": 4,
        "max_artifact_bytes": 1000,
        "max_dtm_bytes": 500,
        "max_job_bytes": 1500,
        "max_redirects": 2,
        "download_deadline_seconds": 1.0,
        "timeout_seconds": 2.0,
        "retries": 0,
    }
    return EdpArtifactPolicy(**{**values, **overrides})


def customer_named(name: str, company: str = "Analytical Engines GmbH") -> dict[str, str]:
    """The ``customer`` part of an order; the email goes to Ada Lovelace's address."""
    return {"name": name, "company": company, "email": "ada@example.com"}


def site_named(name: str) -> dict[str, str]:
    """The ``site`` part of an order, in Berlin's time zone."""
    return {"name": name, "timezone": "Europe/Berlin"}


def order_data(**parts: Any) -> dict[str, Any]:
    """Ada Lovelace's order of an on-prem appliance for Plant Nord with one power meter, as the
    configurator sends it; ``parts`` replace whole top-level parts."""
    return {
        "schema_version": 1,
        "customer": customer_named("Ada Lovelace"),
        "deployment": {"target": "onprem"},
        "site": site_named("Plant Nord"),
        "devices": [{"id": "meter-main", "type": "power_meter", "model": "PM5560"}],
        **parts,
    }


def make_order(**parts: Any) -> ConfiguratorPayload:
    """:func:`order_data`, validated as the API validates a submitted order."""
    return ConfiguratorPayload.model_validate(order_data(**parts))


MOTO_BUCKET = "platform-artifacts-test"
MOTO_REGION = "eu-central-1"


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 client of moto's in-process mock, with the bucket MOTO_BUCKET; no endpoint or profile
    of the machine's environment reaches it."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "standin",
        "AWS_SECRET_ACCESS_KEY": "standin",
        "AWS_DEFAULT_REGION": MOTO_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=MOTO_REGION)
        client.create_bucket(
            Bucket=MOTO_BUCKET, CreateBucketConfiguration={"LocationConstraint": MOTO_REGION}
        )
        yield client
