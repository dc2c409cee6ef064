"""The portal's download record as the API writes it: one entry per answered page view or download.

Each entry keeps when, which portal version and file, the User-Agent (clipped, without control
characters) and the client's network only: an IPv4 address truncated to its /24, an IPv6 address
to its /48, anything else (a Unix socket, a test client's name) not at all. The token is never
recorded nor logged: the cfg_id it names is enough to tell whose portal it was.

An entry is written after the response went out (a background task of the response), so a slow or
failing platform_db never delays or breaks a download: a failure is logged and the entry is lost.
The same task deletes entries older than ``portal.download_record_days``, at most once per
:data:`EXPIRE_EVERY_SECONDS` per process. That alone would wait for the next portal request, so
the retention's guarantee is Dagster's ``download_record_retention_sensor``, which expires them
hourly whatever the traffic; this on-traffic expiry stays because it costs one DELETE per interval
and keeps the retention while the Dagster daemon is stopped, as long as the portal is used.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError
from starlette.background import BackgroundTask
from starlette.requests import Request

from delivery.portal_links import PortalTokens
from platform_db.downloads import DownloadRepository

logger = logging.getLogger(__name__)

USER_AGENT_MAX_LENGTH = 256
IPV4_PREFIX = 24
IPV6_PREFIX = 48
EXPIRE_EVERY_SECONDS = 600.0
# Characters of an error's message that reach the log: enough to tell what went wrong.
_REASON_MAX_LENGTH = 200
# Cc (C0, DEL, C1) and Cf (bidi overrides and the like): nothing a User-Agent needs, and they can
# make the record read differently from what was sent.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf"})


def client_network(host: str | None) -> str | None:
    """The network of the client's address: ``203.0.113.0/24`` for 203.0.113.7, a /48 for IPv6; else None."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d: it is the IPv4 client.
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((int(address), IPV4_PREFIX), strict=False))
    # From the integer: a scoped address (fe80::1%eth0) keeps its zone out of the network.
    return str(ipaddress.IPv6Network((int(address), IPV6_PREFIX), strict=False))


def clean_user_agent(value: str | None) -> str | None:
    """The User-Agent without control characters, at most :data:`USER_AGENT_MAX_LENGTH` long; None when empty."""
    if value is None:
        return None
    kept = "".join(char for char in value if unicodedata.category(char) not in _CONTROL_CATEGORIES)
    clipped = kept.strip()[:USER_AGENT_MAX_LENGTH].rstrip()
    return clipped or None


def _reason(exc: Exception) -> str:
    # A DBAPIError's own text carries the statement and its parameters; the driver's message is
    # what went wrong, without them.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = " ".join(str(cause).split())[:_REASON_MAX_LENGTH]
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


class DownloadRecorder:
    """Writes the download record for the portal's handlers; never raises into a response."""

    def __init__(
        self,
        repository: DownloadRepository,
        keep: timedelta,
        *,
        expire_every_seconds: float = EXPIRE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repository = repository
        self._keep = keep
        self._expire_every = expire_every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_expiry: float | None = None

    def after_answer(
        self, request: Request, token: str, *, version: int | None, file: str | None
    ) -> BackgroundTask | None:
        """The task that records this answered request (a page view when ``file`` is None) once it went out.

        Call it only after the portal answered the token's order: a 404 is no hit of any order.
        None for a HEAD request: it fetched nothing.
        """
        cfg_id = PortalTokens.cfg_id_of(token)
        if request.method != "GET" or cfg_id is None:
            return None
        return BackgroundTask(
            self.record,
            cfg_id,
            version=version,
            file=file,
            user_agent=clean_user_agent(request.headers.get("user-agent")),
            client=client_network(request.client.host if request.client is not None else None),
        )

    def record(
        self,
        cfg_id: str,
        *,
        version: int | None,
        file: str | None,
        user_agent: str | None,
        client: str | None,
    ) -> None:
        """Record one entry, then expire old ones when due; a database error is logged, never raised."""
        try:
            self._repository.record(cfg_id, version=version, file=file, user_agent=user_agent, client=client)
        except Exception as exc:  # noqa: BLE001 - the customer got the answer; only the entry is lost
            logger.warning("portal download record: entry of order %s not written: %s", cfg_id, _reason(exc))
        self.expire_if_due()

    def expire_if_due(self) -> None:
        """Delete entries older than the record keeps them, unless this process did so within the interval."""
        with self._lock:
            now = self._clock()
            if self._last_expiry is not None and now - self._last_expiry < self._expire_every:
                return
            # Taken before the delete: a failing database is asked again after the interval, not per hit.
            self._last_expiry = now
        try:
            expired = self._repository.expire(datetime.now(UTC) - self._keep)
        except Exception as exc:  # noqa: BLE001 - old entries wait for the next expiry
            logger.warning("portal download record: old entries not expired: %s", _reason(exc))
            return
        if expired:
            logger.info("portal download record: %d entries older than %s expired", expired, self._keep)
