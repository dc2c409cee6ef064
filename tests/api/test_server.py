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

import pytest
import uvicorn

import api.__main__ as api_main
from api.app import create_app
from api.server import ACCESS_LOGGER, PortalTokenRedactor, install_access_log_redaction, uvicorn_config
from platform_config.settings import Settings
from platform_db import OrderRepository
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


def test_the_access_log_shows_no_portal_token(settings: Settings) -> None:
    records = _Records()
    with served(settings) as port:
        logger = logging.getLogger(ACCESS_LOGGER)
        logger.addHandler(records)
        try:
            _get(port, f"/portal/{TOKEN}")
            _get(port, f"/portal/{TOKEN}/v1/cfn.yaml?x=1")
            _get(port, "/healthz")
            time.sleep(0.2)
        finally:
            logger.removeHandler(records)
    portal_lines = [line for line in records.lines if "/portal/" in line]
    assert len(portal_lines) == 2, records.lines
    assert all(TOKEN not in line for line in records.lines)
    assert any('"GET /portal/<token> HTTP/1.1" 404' in line for line in portal_lines)
    assert any('"GET /portal/<token>/v1/cfn.yaml?x=1 HTTP/1.1" 404' in line for line in portal_lines)
    assert any("/healthz" in line for line in records.lines)


def test_the_redactor_rewrites_uvicorn_access_records() -> None:
    # As uvicorn's h11 protocol logs a request.
    args = ("127.0.0.1:5000", "GET", f"/portal/{TOKEN}/v2", "1.1", 200)
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert PortalTokenRedactor().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /portal/<token>/v2 HTTP/1.1" 200'
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
