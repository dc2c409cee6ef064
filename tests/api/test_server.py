"""The API as uvicorn serves it (``python -m api``): connection limits, the body deadline and the access log.

Real servers on free loopback ports in threads, reached over raw sockets, since these are properties
of the connection that a test client never shows. Every wait here is bounded by a few seconds.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
import uvicorn

import api.__main__ as api_main
from api.app import create_app
from api.server import ACCESS_LOGGER, PortalTokenRedactor, install_access_log_redaction, uvicorn_config
from contracts.configurator import ConfiguratorPayload
from delivery.artifact_store import ArtifactStore, order_key
from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalTokens
from delivery.portal_publication import publish_portal_version
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.migrate import upgrade

pytestmark = pytest.mark.slow

START_TIMEOUT = 10.0
TOKEN = "c2VjcmV0LXBvcnRhbC10b2tlbi1vZi1hZGE"


def _with_api(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=changes)})


@contextmanager
def served(settings: Settings) -> Iterator[int]:
    """The API under uvicorn with the config ``python -m api`` uses; yields the port."""
    upgrade(settings.platform_db_url())
    orders = OrderRepository.from_url(settings.platform_db_url())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn_config(settings, create_app(settings, orders), timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        orders.dispose()
        assert not thread.is_alive(), "uvicorn did not stop"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_until_closed(
    conn: socket.socket, timeout: float, tick: Callable[[], None] | None = None
) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (monotonic)."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            try:
                tick()
            except OSError:  # the server closed while we were still sending
                pass
        readable, _, _ = select.select([conn], [], [], 0.1)
        if readable:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return received, time.monotonic()
            received += data
    raise AssertionError(f"the server kept the connection open for {timeout} s; received {received[:200]!r}")


def _get(port: int, path: str) -> bytes:
    with _connect(port) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return _read_until_closed(conn, 5)[0]


def test_a_body_that_drips_in_is_cut_off_at_the_deadline(settings: Settings) -> None:
    with served(_with_api(settings, body_read_timeout_seconds=1.0)) as port, _connect(port) as conn:
        conn.sendall(
            b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        started = time.monotonic()
        # One byte every tick: the connection is never idle, so only a whole-body deadline ends it.
        received, closed_at = _read_until_closed(conn, 5, tick=lambda: conn.sendall(b" "))

    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"did not arrive within 1 seconds" in received
    assert 0.9 <= closed_at - started < 3


def test_a_body_within_the_deadline_is_served(settings: Settings, cloud_order: dict[str, Any]) -> None:
    body = json.dumps(cloud_order).encode()
    with served(_with_api(settings, body_read_timeout_seconds=1.0)) as port, _connect(port) as conn:
        conn.sendall(
            b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for index in range(0, len(body), 200):
            conn.sendall(body[index : index + 200])
            time.sleep(0.02)
        received, _ = _read_until_closed(conn, 5)
    assert received.startswith(b"HTTP/1.1 200"), received[:300]


def test_an_idle_keep_alive_connection_is_closed(settings: Settings) -> None:
    with served(_with_api(settings, timeout_keep_alive_seconds=1)) as port, _connect(port) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        received, closed_at = _read_until_closed(conn, 5)
    assert received.startswith(b"HTTP/1.1 200")
    assert closed_at - started < 3


def test_connections_beyond_the_concurrency_limit_get_503(settings: Settings) -> None:
    with served(_with_api(settings, limit_concurrency=3)) as port:
        idle = [_connect(port) for _ in range(3)]
        try:
            time.sleep(0.3)
            assert _get(port, "/healthz").startswith(b"HTTP/1.1 503")
        finally:
            for conn in idle:
                conn.close()
        time.sleep(0.3)
        assert _get(port, "/healthz").startswith(b"HTTP/1.1 200")


def test_headers_over_the_limit_are_refused(settings: Settings) -> None:
    with served(_with_api(settings, h11_max_incomplete_event_size=4096)) as port, _connect(port) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 8192)
        received, _ = _read_until_closed(conn, 5)
    assert received.startswith(b"HTTP/1.1 400")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def logged() -> Iterator[_Records]:
    """Every line the served API logs: its access log (which does not propagate) and all the rest."""
    records = _Records()
    loggers = [logging.getLogger(ACCESS_LOGGER), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(records)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(records)


def _access_lines(records: _Records) -> list[str]:
    return [line for line in records.lines if '"GET ' in line]


def _publish_portal(settings: Settings, cloud_order: dict[str, Any]) -> str:
    """An order with a published portal version in platform_db and the bucket; its portal token."""
    upgrade(settings.platform_db_url())
    orders = OrderRepository.from_url(settings.platform_db_url())
    try:
        payload = ConfiguratorPayload.model_validate(cloud_order)
        cfg_id = orders.submit(payload, None)[0].cfg_id
        s3 = boto3.client(
            "s3",
            endpoint_url=settings.aws.endpoint_url,
            region_name=settings.aws.region,
            **settings.aws_credentials(),
        )
        store = ArtifactStore(s3, settings.artifacts.bucket)
        publish_portal_version(
            cfg_id=cfg_id,
            run_id="run-1",
            order=payload,
            flags={"commissioning_required": True},
            artifacts=[("cfn", store.put(order_key(cfg_id, "cfn", "cfn.yaml"), b"Resources: {}\n"))],
            store=store,
            deliveries=DeliveryRepository(orders.engine),
            signer=ManifestSigner.generate(),
        )
    finally:
        orders.dispose()
    return PortalTokens(settings.portal_token_key()).token(cfg_id, 0)


def test_the_access_log_shows_no_portal_token(settings: Settings) -> None:
    cfg_id = "0b6f1c9e-2a5d-4e7f-9c3b-8d1e2f3a4b5c"
    with served(settings) as port, logged() as records:
        _get(port, f"/portal/{TOKEN}")
        _get(port, f"/portal/{TOKEN}/v1/cfn.yaml?x=1")
        _get(port, "/healthz")
        _get(port, f"/orders/{cfg_id}")
        time.sleep(0.2)
    lines = _access_lines(records)
    assert all(TOKEN not in line for line in records.lines)
    assert any('"GET /portal/<token> HTTP/1.1" 404' in line for line in lines), lines
    assert any('"GET /portal/<token>/v1/cfn.yaml?x=1 HTTP/1.1" 404' in line for line in lines), lines
    assert any("/healthz" in line for line in lines)
    # What is no credential stays readable for the operator.
    assert any(f"/orders/{cfg_id}" in line for line in lines), lines


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (f"/%70ortal/{TOKEN}", "/portal/<token>"),
        (f"/portal%2F{TOKEN}/v1", "/portal/<token>/v1"),
        (f"/portal%2f{TOKEN}%2Fv1%2Fcfn.yaml", "/portal/<token>/v1/cfn.yaml"),
        # Encoded twice: the router sees /portal%2F..., the log reader decodes it in their head.
        (f"/portal%252F{TOKEN}", "/portal/<token>"),
        (f"/portal/%{TOKEN[:2]}{TOKEN[2:]}", "/portal/<token>"),
        (f"/PORTAL/{TOKEN}", "/PORTAL/<token>"),
        # Off the portal's routes the token is still the token.
        (f"/elsewhere/{TOKEN}/x", "/elsewhere/<token>/x"),
        (f"/healthz?link={TOKEN}", "/healthz?link=<token>"),
        (f"/portal%2F{TOKEN}%22%0A", "/portal/<token>%22%0A"),
    ],
)
def test_an_encoded_portal_link_is_logged_decoded_and_redacted(
    settings: Settings, path: str, shown: str
) -> None:
    with served(settings) as port, logged() as records:
        _get(port, path)
        time.sleep(0.2)
    assert all(TOKEN not in line for line in records.lines), records.lines
    [line] = _access_lines(records)
    assert f'"GET {shown} HTTP/1.1"' in line


def test_encoded_links_open_the_portal_and_the_log_keeps_the_token_out(
    pipeline_settings: Settings, cloud_order: dict[str, Any]
) -> None:
    token = _publish_portal(pipeline_settings, cloud_order)
    paths = [f"/portal/{token}", f"/%70ortal/{token}", f"/portal%2F{token}", f"/portal%2F{token}%2Fv1"]
    with served(pipeline_settings) as port, logged() as records:
        answers = [_get(port, path) for path in paths]
        time.sleep(0.2)

    # The router matches the decoded path: each of these is the customer's portal.
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * len(paths)
    assert all(token not in line for line in records.lines), records.lines
    shown = sorted(line.split('"')[1] for line in _access_lines(records))
    assert shown == sorted(["GET /portal/<token> HTTP/1.1"] * 3 + ["GET /portal/<token>/v1 HTTP/1.1"]), (
        records.lines
    )


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (f"/portal/{TOKEN}/v2", "/portal/<token>/v2"),
        (f"/portal%2F{TOKEN}%2Fv2", "/portal/<token>/v2"),
        ("/portal%2Fv2", "/portal/<token>"),
        ("/orders/0b6f1c9e-2a5d-4e7f-9c3b-8d1e2f3a4b5c", "/orders/0b6f1c9e-2a5d-4e7f-9c3b-8d1e2f3a4b5c"),
        ("/a%20b", "/a%20b"),
    ],
)
def test_the_redactor_rewrites_uvicorn_access_records(path: str, shown: str) -> None:
    # As uvicorn's h11 protocol logs a request.
    args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert PortalTokenRedactor().filter(record) is True
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {shown} HTTP/1.1" 200'
    # Installing it twice adds one filter.
    assert install_access_log_redaction() is install_access_log_redaction()


def test_python_m_api_serves_with_the_configured_limits(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _with_api(
        settings, timeout_keep_alive_seconds=7, limit_concurrency=42, h11_max_incomplete_event_size=8192
    )
    served_with: list[uvicorn.Config] = []

    class FakeServer:
        def __init__(self, config: uvicorn.Config) -> None:
            served_with.append(config)

        def run(self) -> None:
            pass

    def defaults_only(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn.run serves with uvicorn's defaults, not the configured limits")

    monkeypatch.setattr(api_main, "load_settings", lambda: chosen)
    monkeypatch.setattr(api_main.uvicorn, "Server", FakeServer)
    monkeypatch.setattr(api_main.uvicorn, "run", defaults_only)
    api_main.main()

    [config] = served_with
    assert (config.timeout_keep_alive, config.limit_concurrency, config.h11_max_incomplete_event_size) == (
        7,
        42,
        8192,
    )
    assert config.http == "h11" and config.access_log
    assert any(isinstance(f, PortalTokenRedactor) for f in logging.getLogger(ACCESS_LOGGER).filters)
