"""The EDP artifact policy: which artifact URLs the pipeline fetches, and how far, how much, how long.

EDP lists a job's artifacts as URLs; the pipeline copies what they answer into S3 and publishes it
in the customer's portal. The fetch happens from inside the platform's network, so a URL is as
dangerous as the place it reaches. Every rule about that lives here, and ``delivery.edp_intake``
applies them to a job:

- a URL, and every redirect hop (followed by hand, at most ``edp.max_artifact_redirects``), must be
  http(s) on EDP's own host and port (``edp.base_url``) or on one of ``edp.artifact_hosts``;
- every address its host resolves to must be public unless ``edp.allow_private_artifact_hosts``;
  the connection then goes to an address so checked, never to a second lookup (DNS rebinding);
- a job lists at most ``edp.max_artifacts``; one artifact may have ``edp.max_artifact_bytes``
  (``dtm.json``: ``edp.max_dtm_bytes``, it is base64'd into the seed ISO's user-data), all of a
  job's together ``edp.max_job_bytes``; Content-Length is checked first and the body counted as it
  streams in, so an oversized body is never held whole;
- one download, redirects, retries and every read included, ends at
  ``edp.download_deadline_seconds``, however slowly the other side drips.

Refusals name the artifact and the rule (the setting that decides it), never a URL beyond its host
and port (presigned URLs carry credentials in their query) nor anything EDP answered: the text
becomes the order's ``last_error``, which ``GET /orders/{cfg_id}`` returns to the website.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util.retry import Retry

from contracts.edp import ArtifactHost, EdpArtifact

DTM_NAME = "dtm.json"
DEFAULT_PORTS = {"http": 80, "https": 443}
READ_CHUNK_BYTES = 64 * 1024
RETRY_STATUSES = (429, 500, 502, 503, 504)
# Retries live inside the download's deadline; a long backoff would only sleep it away.
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX_SECONDS = 2.0
DEADLINE_TOLERANCE_SECONDS = 0.05
# Long enough for a reason an operator can act on, short enough for an API answer.
MAX_REASON_CHARS = 500
# Asking for the bytes as they are keeps the size caps and the sha256 about what is stored; a
# compressed answer would be inflated past the caps by the client before they could be counted.
IDENTITY = {"Accept-Encoding": "identity"}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
_STRAY_QUERY = re.compile(r"\?[^\s?#]*=\S*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class EdpArtifactError(RuntimeError):
    """EDP delivered something the pipeline cannot build from; the message says what.

    The message is made readable as the error is built (URLs cut to their path, capped), because
    it travels on into the order's ``last_error`` and the step's failure.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(readable_reason(reason))


def _url_without_secrets(match: re.Match[str]) -> str:
    try:
        parts = urlsplit(match.group(0))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<URL>"
    if ":" in host:
        host = f"[{host}]"
    # Neither userinfo nor query nor fragment: presigned URLs carry their credentials there.
    return f"{parts.scheme}://{host}{port}{parts.path}"


def readable_reason(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` fit for ``last_error``: URLs without userinfo, query or fragment, one line, capped."""
    text = _URL.sub(_url_without_secrets, text)
    text = _STRAY_QUERY.sub("", text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_and_port(parts: SplitResult) -> tuple[str, int | None]:
    """Host (lower case, no trailing dot) and explicit port of a split URL; ValueError if malformed."""
    host = (parts.hostname or "").rstrip(".")
    return host, parts.port


def address_refusal(address: IpAddress) -> str | None:
    """Why a connection to ``address`` is refused when private targets are, or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Most specific first: 127.0.0.1, 169.254.169.254 and 240.0.0.1 are "private" too, but the name says more.
    for rule, applies in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if applies:
            return rule
    return None if address.is_global else "non-public"


def resolve_host(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to, in the resolver's order, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Scope ids (fe80::1%eth0) are not part of the address the rules judge.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))


class ByteLimit(BaseModel):
    """The most bytes one artifact may have, and the setting that bounds it there."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(ge=0)
    rule: str
    scope: str

    def refusal(self, name: str, *, announced: int | None = None) -> EdpArtifactError:
        size = (
            f"announces {announced} bytes"
            if announced is not None
            else f"sends more than {self.max_bytes} bytes"
        )
        return EdpArtifactError(
            f"EDP artifact {name}: refused: it {size}; {self.scope} is {self.max_bytes} bytes ({self.rule})"
        )


class EdpArtifactPolicy(BaseModel):
    """The rules EDP's artifact URLs and bodies are held to (settings ``edp.*``, see the module)."""

    model_config = ConfigDict(frozen=True)

    edp_base_url: str
    artifact_hosts: tuple[ArtifactHost, ...] = ()
    allow_private_hosts: bool = False
    max_artifacts: int = Field(ge=1)
    max_artifact_bytes: int = Field(ge=1)
    max_dtm_bytes: int = Field(ge=1)
    max_job_bytes: int = Field(ge=1)
    max_redirects: int = Field(ge=0)
    download_deadline_seconds: float = Field(gt=0)
    timeout_seconds: float = Field(gt=0, description="Connect and read timeout of one socket operation.")
    retries: int = Field(ge=0)

    def _allowed_hosts(self) -> list[tuple[str, int | None]]:
        edp = urlsplit(self.edp_base_url)
        edp_host, edp_port = _host_and_port(edp)
        allowed: list[tuple[str, int | None]] = [(edp_host, edp_port or DEFAULT_PORTS.get(edp.scheme))]
        allowed.extend(_host_and_port(urlsplit(f"//{entry}")) for entry in self.artifact_hosts)
        return allowed

    def check_url(self, name: str, url: str, *, hop: int = 0) -> None:
        """Refuse ``url`` (the artifact's own, or redirect hop ``hop``) unless scheme and host are allowed."""
        where = "its URL" if hop == 0 else f"redirect {hop}"
        try:
            parts = urlsplit(url)
            host, explicit_port = _host_and_port(parts)
        except ValueError:
            raise EdpArtifactError(f"EDP artifact {name}: refused: {where} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            shown = scheme[:16] or "none"
            raise EdpArtifactError(
                f"EDP artifact {name}: refused: {where} has scheme {shown!r}; only http and https are fetched"
            )
        if not host:
            raise EdpArtifactError(f"EDP artifact {name}: refused: {where} names no host")
        port = explicit_port or DEFAULT_PORTS[scheme]
        for allowed_host, allowed_port in self._allowed_hosts():
            # An entry without a port stands for the scheme's default port, as in a URL.
            if host == allowed_host and port == (allowed_port or DEFAULT_PORTS[scheme]):
                return
        raise EdpArtifactError(
            f"EDP artifact {name}: refused: {where} names host {_netloc(host, port)}, which is neither EDP's own "
            "(edp.base_url) nor one of edp.artifact_hosts"
        )

    def check_listing(self, job_id: str, artifacts: Sequence[EdpArtifact]) -> None:
        """Refuse a job's list of artifacts as a whole, before any is fetched."""
        if len(artifacts) > self.max_artifacts:
            raise EdpArtifactError(
                f"EDP job {job_id}: refused: it lists {len(artifacts)} artifacts, more than {self.max_artifacts} "
                "(edp.max_artifacts)"
            )
        names = [artifact.name for artifact in artifacts]
        # Each name is one key under orders/<cfg_id>/edp/: a second one would overwrite the first.
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise EdpArtifactError(
                f"EDP job {job_id}: refused: it lists {', '.join(repeated)} more than once"
            )
        for artifact in artifacts:
            self.check_url(artifact.name, artifact.url)

    def byte_limit(self, name: str, job_bytes_taken: int) -> ByteLimit:
        """The tightest cap on artifact ``name`` once the job's earlier artifacts took ``job_bytes_taken``."""
        limits = [
            ByteLimit(
                max_bytes=self.max_artifact_bytes,
                rule="edp.max_artifact_bytes",
                scope="the limit per artifact",
            )
        ]
        if name == DTM_NAME:
            limits.append(
                ByteLimit(
                    max_bytes=self.max_dtm_bytes, rule="edp.max_dtm_bytes", scope=f"the limit of {DTM_NAME}"
                )
            )
        limits.append(
            ByteLimit(
                max_bytes=max(self.max_job_bytes - job_bytes_taken, 0),
                rule="edp.max_job_bytes",
                scope="what the job's limit leaves after its earlier artifacts",
            )
        )
        return min(limits, key=lambda limit: limit.max_bytes)


class _Refused(RuntimeError):
    """A connection the guard does not allow; not an OSError, so urllib3 neither retries nor wraps it."""


class _DownloadGuard:
    """One download's deadline and address rule, held by every connection the download opens.

    A socket timeout bounds one read only: a server that drips a byte at a time (status line,
    headers, chunk sizes or body) never trips it. At the deadline the guard shuts the download's
    sockets down, which ends whatever read blocks, and admits no new connection.
    """

    def __init__(self, seconds: float, *, check_addresses: bool) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.check_addresses = check_addresses
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._timer = threading.Timer(seconds, self._cut_off)
        self._timer.daemon = True

    def __enter__(self) -> _DownloadGuard:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def passed(self) -> bool:
        # A socket timeout cut to the time left fires at the deadline too, maybe a hair before the timer.
        return self.expired.is_set() or self.time_left() <= DEADLINE_TOLERANCE_SECONDS

    def too_slow(self) -> str:
        return f"not complete within {self.seconds:g} s (edp.download_deadline_seconds)"

    def admit(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self.expired.is_set():
                raise _Refused(self.too_slow())
            self._connections.append(connection)

    def _cut_off(self) -> None:
        with self._lock:
            self.expired.set()
            for connection in self._connections:
                sock = connection.sock
                if sock is not None:
                    # socket.socket's own shutdown, also for TLS: SSLSocket.shutdown would drop its
                    # SSL object under the thread that is reading from it.
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _GuardedHTTPConnection(HTTPConnection):
    """Opens sockets only as its download's guard allows: in time, and to checked addresses."""

    def __init__(self, *args: Any, guard: _DownloadGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def _new_conn(self) -> socket.socket:
        self.guard.admit(self)
        if not self.guard.check_addresses:
            return super()._new_conn()
        try:
            addresses = resolve_host(self.host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        # Every address, before connecting to any: the resolver may rotate, and any may be the one used.
        for address in addresses:
            rule = address_refusal(address)
            if rule is not None:
                raise _Refused(
                    f"host {self.host} resolves to a {rule} address (edp.allow_private_artifact_hosts is false)"
                )
        failure: OSError | None = None
        for address in addresses:
            try:
                # The address just checked, not the name: a second lookup could answer otherwise.
                return urllib3_connection.create_connection(
                    (str(address), self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                failure = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}")


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """The same for TLS: the certificate is still verified against the host name."""


class _GuardedPoolManager(PoolManager):
    def __init__(self, guard: _DownloadGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = _GuardedHTTPSConnection if scheme == "https" else _GuardedHTTPConnection
        # A pool hands its conn_kw to every connection it makes.
        pool.conn_kw["guard"] = self.guard
        return pool


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, guard: _DownloadGuard, retries: Retry) -> None:
        self.guard = guard  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=retries)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager = _GuardedPoolManager(
            self.guard, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


class EdpArtifactDownloader:
    """Downloads EDP artifacts under an :class:`EdpArtifactPolicy`.

    Connections are checked as they are opened (see the module); when private targets are
    allowed, the guard still keeps the deadline.
    """

    def __init__(self, policy: EdpArtifactPolicy) -> None:
        self.policy = policy

    def _retry(self) -> Retry:
        return Retry(
            total=self.policy.retries,
            backoff_factor=RETRY_BACKOFF_FACTOR,
            backoff_max=RETRY_BACKOFF_MAX_SECONDS,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            # A Retry-After of an hour would sleep through the deadline where nothing can cut it short.
            respect_retry_after_header=False,
            raise_on_status=False,
        )

    def download(self, artifact: EdpArtifact, limit: ByteLimit) -> bytes:
        """The artifact's bytes, or EdpArtifactError naming the artifact and the rule it broke."""
        name = artifact.name
        guard = _DownloadGuard(
            self.policy.download_deadline_seconds, check_addresses=not self.policy.allow_private_hosts
        )
        with guard, requests.Session() as session:
            # No proxy or .netrc from the environment: the address checked must be the one connected
            # to, and no ambient credentials may travel to a host EDP names.
            session.trust_env = False
            adapter = _GuardedAdapter(guard, self._retry())
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            try:
                return self._follow(name, artifact.url, limit, guard, session)
            except _Refused as refused:
                raise EdpArtifactError(f"EDP artifact {name}: refused: {refused}") from None
            except (requests.RequestException, Urllib3Error, OSError) as exc:
                if guard.passed():
                    raise EdpArtifactError(f"EDP artifact {name}: refused: {guard.too_slow()}") from None
                # The exception's text names the URL, query and all; its kind is enough to act on.
                raise EdpArtifactError(
                    f"EDP artifact {name}: download failed ({type(exc).__name__})"
                ) from None

    def _follow(
        self, name: str, url: str, limit: ByteLimit, guard: _DownloadGuard, session: requests.Session
    ) -> bytes:
        for hop in range(self.policy.max_redirects + 1):
            self.policy.check_url(name, url, hop=hop)
            timeout = min(self.policy.timeout_seconds, max(guard.time_left(), 0.01))
            # Redirects by hand: requests would follow them to any host before anything could check it.
            with session.get(
                url, stream=True, allow_redirects=False, timeout=timeout, headers=IDENTITY
            ) as response:
                if response.is_redirect:
                    url = urljoin(url, session.get_redirect_target(response))
                    continue
                if response.status_code != 200:
                    raise EdpArtifactError(f"EDP artifact {name}: HTTP {response.status_code}")
                return self._read(name, response, limit, guard)
        raise EdpArtifactError(
            f"EDP artifact {name}: refused: more than {self.policy.max_redirects} redirects (edp.max_artifact_redirects)"
        )

    def _read(self, name: str, response: requests.Response, limit: ByteLimit, guard: _DownloadGuard) -> bytes:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise EdpArtifactError(
                f"EDP artifact {name}: refused: it came compressed, though asked for as it is"
            )
        announced = response.headers.get("Content-Length", "").strip()
        if announced.isdigit() and int(announced) > limit.max_bytes:
            raise limit.refusal(name, announced=int(announced))
        body = bytearray()
        for chunk in response.iter_content(READ_CHUNK_BYTES):
            body += chunk
            if len(body) > limit.max_bytes:
                raise limit.refusal(name)
        # A body without Content-Length ends where the guard cut it: that end is no end.
        if guard.passed():
            raise EdpArtifactError(f"EDP artifact {name}: refused: {guard.too_slow()}")
        return bytes(body)
