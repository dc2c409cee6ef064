"""A fault-injecting HTTP/1.1 proxy for tests and fault runs: never part of the normal stack.

It sits in front of one upstream ``host:port`` (the embedded SES, say) and, per request, does what
its mode says:

``pass``
    forward the request, answer the upstream's answer.
``drop_response``
    forward the request, read the upstream's whole answer, then close the client's connection
    without sending any of it: the upstream acted on the request, the client never learns it
    (what a proxy dropping SES's answer does).
``stall``
    like ``drop_response``, but keep the client's connection open and silent until the client
    gives up (the client's read timeout).
``reset``
    close the client's connection (TCP RST) after its request arrived, forwarding nothing. The
    upstream never saw the request, but the client cannot tell this from a lost answer.
``refuse``
    stop listening: connection attempts are refused by the kernel (ECONNREFUSED), so the client
    knows the request never left. Open client connections are closed when the mode is set.
``throttle``
    answer HTTP 429 with SES v2's throttling error (``TooManyRequestsException``) without
    forwarding: the SDK raises a ClientError, as when SES refuses the sending rate.

``set_mode(mode, times=n)`` applies a fault to the next ``n`` requests, then passes again
(``refuse`` cannot be counted: the kernel refuses those connections, the proxy never sees them).
:attr:`FaultProxy.counts` tells what it did. One thread per client connection, at most
``max_connections``; one upstream connection per request (the request's bytes forwarded
unchanged). Bodies are framed by Content-Length or chunked encoding, at most ``max_body_bytes``.

Run one by hand with ``python -m standins.fault_proxy --upstream 127.0.0.1:5000 --mode drop_response``.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import BinaryIO, Self

from service_kit.started import once_started

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_CONNECTIONS = 64
THROTTLE_BODY = json.dumps({"message": "Maximum sending rate exceeded."}).encode()
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class FaultMode(StrEnum):
    PASS = "pass"
    DROP_RESPONSE = "drop_response"
    STALL = "stall"
    RESET = "reset"
    REFUSE = "refuse"
    THROTTLE = "throttle"


@dataclass(frozen=True)
class FaultCounts:
    """What the proxy did since it started (a snapshot)."""

    connections: int = 0
    # Requests sent on to the upstream (pass, drop_response and stall).
    forwarded: int = 0
    # Upstream answers handed to the client.
    answered: int = 0
    # Upstream answers read and withheld: the client's connection closed (drop_response) or left silent (stall).
    dropped: int = 0
    stalled: int = 0
    reset: int = 0
    throttled: int = 0
    # Connections closed at once: max_connections were open (or refuse was just set).
    turned_away: int = 0


class _BadMessage(Exception):
    """The peer sent something this proxy does not frame (or over its limits)."""


class FaultProxy:
    """The proxy on ``host:port`` (0: a free port), started by :meth:`start` or ``with``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        mode: FaultMode | str = FaultMode.PASS,
        times: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout_seconds: float = 30.0,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self._requested_port = port
        self._upstream_timeout = upstream_timeout_seconds
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._counts = FaultCounts()
        self._mode = FaultMode.PASS
        self._remaining: int | None = None
        self._paths: tuple[str, ...] = ()
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._accepting: threading.Thread | None = None
        self._stopped = threading.Event()
        self._initial = (FaultMode(mode), times)

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        mode, times = self._initial
        _check_mode(mode, times)
        listener = self._bound_socket(self._requested_port)
        self._port = listener.getsockname()[1]
        with self._lock:
            self._listener, self._mode, self._remaining = listener, mode, times
        if mode is not FaultMode.REFUSE:
            self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            listener, self._listener = self._listener, None
            clients = list(self._clients)
        if listener is not None:
            _close(listener)
        for client in clients:
            _close(client)
        for thread in [self._accepting, *list(self._threads)]:
            if thread is not None:
                thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return once_started(self._port, RuntimeError("the proxy is not started"))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- control ----------------------------------------------------------------------------------

    @property
    def mode(self) -> FaultMode:
        with self._lock:
            return self._mode

    @property
    def counts(self) -> FaultCounts:
        with self._lock:
            return self._counts

    def set_mode(self, mode: FaultMode | str, times: int | None = None, paths: tuple[str, ...] = ()) -> None:
        """Apply ``mode`` from now on, or to the next ``times`` requests only (then ``pass``).

        With ``paths``, only requests whose target starts with one of them meet the fault (and
        count towards ``times``); the others pass: e.g. SES's sends behind one endpoint with S3.
        """
        mode = FaultMode(mode)
        _check_mode(mode, times)
        if paths and mode is FaultMode.REFUSE:
            raise ValueError("refuse turns every connection away: it cannot be limited to paths")
        with self._lock:
            was = self._mode
            self._mode, self._remaining, self._paths = mode, times, tuple(paths)
            clients = list(self._clients) if mode is FaultMode.REFUSE else []
        if self._port is None:
            self._initial = (mode, times)  # not started yet: start() listens (or not) as the mode says
            return
        if mode is FaultMode.REFUSE and was is not FaultMode.REFUSE:
            self._stop_listening()
            for client in clients:
                _close(client)
        elif mode is not FaultMode.REFUSE and was is FaultMode.REFUSE:
            self._listen()

    # --- listening --------------------------------------------------------------------------------

    def _bound_socket(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        return listener

    def _listen(self) -> None:
        with self._lock:
            listener = self._listener
        assert listener is not None
        listener.listen(16)
        thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name="fault-proxy-accept", daemon=True
        )
        self._accepting = thread
        thread.start()

    def _stop_listening(self) -> None:
        # A bound socket that does not listen keeps the port, and the kernel refuses connections to it.
        with self._lock:
            listener = self._listener
        if listener is not None:
            _close(listener)  # shutdown() first: it wakes the thread blocked in accept()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
        replacement = self._bound_socket(self.port)
        with self._lock:
            self._listener = replacement

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: refuse mode or stop()
            with self._lock:
                # Accepted just as refuse was set: closed like the connections refuse found open.
                over = len(self._clients) >= self._max_connections or self._mode is FaultMode.REFUSE
                if over:
                    self._count(turned_away=1)
                else:
                    self._count(connections=1)
                    self._clients.add(client)
            if over:
                _close(client)
                continue
            thread = threading.Thread(
                target=self._serve, args=(client,), name="fault-proxy-client", daemon=True
            )
            with self._lock:
                self._threads = {t for t in self._threads if t.is_alive()} | {thread}
            thread.start()

    # --- one client connection --------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        try:
            reader = client.makefile("rb")
            while not self._stopped.is_set():
                try:
                    request = self._read_message(
                        reader, request=True, on_expect=lambda: client.sendall(CONTINUE)
                    )
                except _BadMessage:
                    return
                if request is None:
                    return  # the client closed its connection
                if not self._handle(client, request):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            _close(client)

    def _handle(self, client: socket.socket, request: _Message) -> bool:
        """Act on one request; False when the client's connection is to be closed."""
        mode = self._take_mode(request.target)
        if mode is FaultMode.REFUSE:
            # Set while this connection was open: close it, as refuse does to every open connection.
            return False
        if mode is FaultMode.RESET:
            with self._lock:
                self._count(reset=1)
            # SO_LINGER 0: close() sends RST instead of FIN.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if mode is FaultMode.THROTTLE:
            with self._lock:
                self._count(throttled=1)
            client.sendall(_throttle_answer())
            return not request.closes
        answer = self._forward(request)
        if answer is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        if mode is FaultMode.DROP_RESPONSE:
            with self._lock:
                self._count(dropped=1)
            return False
        if mode is FaultMode.STALL:
            with self._lock:
                self._count(stalled=1)
            # Silent until the client gives up (or the proxy stops).
            client.settimeout(0.2)
            while not self._stopped.is_set():
                try:
                    if not client.recv(65536):
                        break
                except TimeoutError:
                    continue
            return False
        # Counted before the answer leaves: a client that read it sees it counted.
        with self._lock:
            self._count(answered=1)
        client.sendall(answer.raw)
        return not (request.closes or answer.closes)

    def _take_mode(self, target: str) -> FaultMode:
        with self._lock:
            if self._paths and not target.startswith(self._paths):
                return FaultMode.PASS
            mode = self._mode
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._mode, self._remaining, self._paths = FaultMode.PASS, None, ()
            return mode

    def _forward(self, request: _Message) -> _Message | None:
        """The upstream's whole answer to ``request`` (one connection each), or None when it failed."""
        try:
            with socket.create_connection(self.upstream, timeout=self._upstream_timeout) as upstream:
                upstream.sendall(request.raw)
                with self._lock:
                    self._count(forwarded=1)
                with upstream.makefile("rb") as reader:
                    while True:
                        answer = self._read_message(reader, request=False, method=request.method)
                        # Interim answers (100 Continue: the client was told so already) are not the answer.
                        if answer is None or answer.status >= 200:
                            return answer
        except (OSError, _BadMessage):
            return None

    # --- HTTP/1.1 framing -------------------------------------------------------------------------

    def _read_message(
        self,
        reader: BinaryIO,
        *,
        request: bool,
        method: str = "",
        on_expect: Callable[[], None] | None = None,
    ) -> _Message | None:
        """One request or answer, its bytes unchanged; None at a clean end of the stream.

        ``on_expect`` is called for a request with ``Expect: 100-continue`` before its body is read.
        """
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline(MAX_HEADER_BYTES + 1)
            if not line:
                if head:
                    raise _BadMessage("the stream ended inside a header")
                return None
            if not head and line in (b"\r\n", b"\n"):
                continue  # stray CRLF between messages
            head += line
            if len(head) > MAX_HEADER_BYTES:
                raise _BadMessage("header too large")
        start, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for header_line in lines:
            name, _, value = header_line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = bytearray()
        status = 0
        if not request:
            parts = start.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if request and on_expect is not None and headers.get("expect", "").lower() == "100-continue":
            on_expect()
        no_body = not request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200)
        if no_body:
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body += self._read_chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _BadMessage("bad Content-Length") from None
            if not 0 <= length <= self._max_body_bytes:
                raise _BadMessage("body too large")
            body += reader.read(length)
            if len(body) != length:
                raise _BadMessage("the stream ended inside a body")
        elif not request:
            # An answer without length ends with the connection.
            body += reader.read(self._max_body_bytes + 1)
            if len(body) > self._max_body_bytes:
                raise _BadMessage("body too large")
            headers["connection"] = "close"
        closes = headers.get("connection", "").lower() == "close"
        parts = start.split(" ", 2) if request else []
        return _Message(
            raw=bytes(head + body),
            method=parts[0] if parts else "",
            target=parts[1] if len(parts) > 1 else "",
            status=status,
            closes=closes,
        )

    def _read_chunked(self, reader: BinaryIO) -> bytes:
        raw = bytearray()
        while True:
            size_line = reader.readline(1024)
            raw += size_line
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadMessage("bad chunk size") from None
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = reader.readline(MAX_HEADER_BYTES)
                    raw += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            chunk = reader.read(size + 2)
            raw += chunk
            if len(chunk) != size + 2 or len(raw) > self._max_body_bytes:
                raise _BadMessage("bad or too large chunked body")

    def _count(self, **increments: int) -> None:
        """Add to the counts; the caller holds the lock."""
        self._counts = replace(
            self._counts, **{name: getattr(self._counts, name) + value for name, value in increments.items()}
        )


@dataclass(frozen=True)
class _Message:
    raw: bytes
    method: str
    # Requests only: the request target, e.g. "/v2/email/outbound-emails".
    target: str
    # Answers only.
    status: int
    closes: bool


def _check_mode(mode: FaultMode, times: int | None) -> None:
    if times is not None and (times < 1 or mode in (FaultMode.PASS, FaultMode.REFUSE)):
        raise ValueError("times counts requests of a fault mode other than pass and refuse, at least 1")


def _throttle_answer() -> bytes:
    """SES v2 (REST-JSON) refusing the sending rate, as botocore parses it into a ClientError."""
    head = (
        "HTTP/1.1 429 Too Many Requests\r\n"
        "Content-Type: application/json\r\n"
        "x-amzn-ErrorType: TooManyRequestsException\r\n"
        "x-amzn-RequestId: fault-proxy-throttle\r\n"
        f"Content-Length: {len(THROTTLE_BODY)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + THROTTLE_BODY


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    """Serve a proxy until Ctrl-C: ``--upstream HOST:PORT [--port N] [--mode M] [--times N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.fault_proxy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--upstream", required=True, help="host:port to forward to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=[mode.value for mode in FaultMode], default=FaultMode.PASS.value)
    parser.add_argument("--times", type=int, default=None)
    args = parser.parse_args(argv)
    upstream_host, _, upstream_port = args.upstream.rpartition(":")
    proxy = FaultProxy(
        upstream_host, int(upstream_port), mode=args.mode, times=args.times, host=args.host, port=args.port
    )
    with proxy:
        print(f"fault_proxy: {proxy.url} -> {args.upstream} ({args.mode})", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
