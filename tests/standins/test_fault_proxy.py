"""standins.fault_proxy: each mode against a small upstream that records what reached it."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from standins.fault_proxy import FaultCounts, FaultMode, FaultProxy
from tests.conftest import LoopbackHTTPServer, QuietHandler


class Upstream(LoopbackHTTPServer):
    """An HTTP/1.1 server on 127.0.0.1 answering ``echo:<body>``; ``received`` holds each request's path and body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        upstream = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                upstream.received.append((self.path, body))
                if self.path == "/chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in (b"echo:", body):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                answer = b"echo:" + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        super().__init__(Handler)


def _ses(proxy: FaultProxy) -> Any:
    """An SES v2 client behind ``proxy`` that tries each call once."""
    return boto3.client(
        "sesv2",
        region_name="eu-central-1",
        endpoint_url=proxy.url,
        aws_access_key_id="standin",
        aws_secret_access_key="standin",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    running = Upstream()
    yield running
    running.stop()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", upstream.port) as running:
        yield running


def connected(proxy: FaultProxy, count: int = 1) -> socket.socket:
    """A new idle connection, once the proxy has accepted it (not only the kernel)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    deadline = time.monotonic() + 5
    while proxy.counts.connections + proxy.counts.turned_away < count:
        assert time.monotonic() < deadline, "the proxy did not accept the connection"
        time.sleep(0.01)
    return sock


def post(proxy: FaultProxy, body: bytes, *, path: str = "/x", timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_pass_forwards_requests_and_answers(proxy: FaultProxy, upstream: Upstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        # Two requests on one keep-alive connection.
        for body in (b"one", b"two"):
            connection.request("POST", "/x", body=body)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"echo:" + body)
    finally:
        connection.close()

    assert upstream.received == [("/x", b"one"), ("/x", b"two")]
    assert proxy.counts == FaultCounts(connections=1, forwarded=2, answered=2)
    assert proxy.url == f"http://127.0.0.1:{proxy.port}"


def test_chunked_bodies_pass_both_ways(proxy: FaultProxy, upstream: Upstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        connection.request("POST", "/chunked", body=iter([b"ab", b"cd"]), encode_chunked=True)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"echo:abcd")
    finally:
        connection.close()
    assert upstream.received == [("/chunked", b"abcd")]


def test_drop_response_forwards_and_withholds_the_answer(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.set_mode(FaultMode.DROP_RESPONSE)

    with pytest.raises(http.client.RemoteDisconnected):
        post(proxy, b"accepted")

    # The upstream acted on it; the client never heard.
    assert upstream.received == [("/x", b"accepted")]
    counts = proxy.counts
    assert (counts.forwarded, counts.dropped, counts.answered) == (1, 1, 0)


def test_stall_forwards_and_keeps_silent_until_the_client_gives_up(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    proxy.set_mode(FaultMode.STALL)

    with pytest.raises(TimeoutError):
        post(proxy, b"accepted", timeout=0.3)

    assert upstream.received == [("/x", b"accepted")]
    assert (proxy.counts.forwarded, proxy.counts.stalled) == (1, 1)


def test_reset_forwards_nothing(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.set_mode(FaultMode.RESET)

    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        post(proxy, b"never")

    assert upstream.received == []
    assert (proxy.counts.reset, proxy.counts.forwarded) == (1, 0)


def test_refuse_stops_listening_and_pass_listens_again_on_the_same_port(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    idle = connected(proxy)
    port = proxy.port

    proxy.set_mode(FaultMode.REFUSE)

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    # An open connection is closed too: the next request on it finds the end of the stream.
    assert idle.recv(1) == b""
    idle.close()
    assert upstream.received == []

    proxy.set_mode(FaultMode.PASS)

    assert proxy.port == port
    assert post(proxy, b"back") == (200, b"echo:back")


def test_a_proxy_may_start_refusing(upstream: Upstream) -> None:
    with FaultProxy("127.0.0.1", upstream.port, mode=FaultMode.REFUSE) as proxy:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.set_mode("pass")
        assert post(proxy, b"now") == (200, b"echo:now")


def test_throttle_answers_ses_throttling_without_forwarding(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.set_mode(FaultMode.THROTTLE)

    with pytest.raises(ClientError) as caught:
        _ses(proxy).send_email(
            FromEmailAddress="a@example.com",
            Destination={"ToAddresses": ["b@example.com"]},
            Content={"Raw": {"Data": b"Subject: x\r\n\r\nx"}},
        )

    assert caught.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert upstream.received == []
    assert (proxy.counts.throttled, proxy.counts.forwarded) == (1, 0)


def test_a_counted_fault_ends_after_its_requests(proxy: FaultProxy, upstream: Upstream) -> None:
    proxy.set_mode(FaultMode.THROTTLE, times=2)

    statuses = [post(proxy, b"n")[0] for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert proxy.mode is FaultMode.PASS
    assert (proxy.counts.throttled, proxy.counts.forwarded) == (2, 1)


def test_a_fault_limited_to_paths_lets_other_requests_pass(proxy: FaultProxy, upstream: Upstream) -> None:
    # S3 and SES behind one endpoint: only the send meets the fault.
    proxy.set_mode(FaultMode.DROP_RESPONSE, times=1, paths=("/v2/email/outbound-emails",))

    assert post(proxy, b"object", path="/bucket/key") == (200, b"echo:object")
    with pytest.raises(http.client.RemoteDisconnected):
        post(proxy, b"mail", path="/v2/email/outbound-emails")
    assert post(proxy, b"mail again", path="/v2/email/outbound-emails") == (200, b"echo:mail again")
    assert [path for path, _ in upstream.received] == [
        "/bucket/key",
        "/v2/email/outbound-emails",
        "/v2/email/outbound-emails",
    ]
    with pytest.raises(ValueError):
        proxy.set_mode(FaultMode.REFUSE, paths=("/v2/",))


@pytest.mark.parametrize(
    ("mode", "times"), [(FaultMode.REFUSE, 1), (FaultMode.PASS, 2), (FaultMode.DROP_RESPONSE, 0)]
)
def test_only_faults_the_proxy_sees_are_counted(proxy: FaultProxy, mode: FaultMode, times: int) -> None:
    with pytest.raises(ValueError, match="times"):
        proxy.set_mode(mode, times=times)


def test_connections_beyond_the_limit_are_turned_away(upstream: Upstream) -> None:
    with FaultProxy("127.0.0.1", upstream.port, max_connections=1) as proxy:
        first = connected(proxy)
        try:
            second = connected(proxy, count=2)
            assert second.recv(1) == b""
            second.close()
            assert proxy.counts.turned_away == 1
        finally:
            first.close()


def test_an_unreachable_upstream_is_a_502(free_port: Any) -> None:
    with FaultProxy("127.0.0.1", free_port()) as proxy:
        assert post(proxy, b"x")[0] == 502


def test_stop_closes_every_connection(upstream: Upstream) -> None:
    proxy = FaultProxy("127.0.0.1", upstream.port).start()
    idle = connected(proxy)

    proxy.stop()

    assert idle.recv(1) == b""
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def test_botocore_sees_a_refused_proxy_as_a_connection_that_never_opened(proxy: FaultProxy) -> None:
    proxy.set_mode(FaultMode.REFUSE)

    with pytest.raises(EndpointConnectionError):
        _ses(proxy).get_account()
