"""How the API is served: uvicorn with the limits of ``api.*``, and an access log without portal tokens.

uvicorn's defaults let one client hold the server: idle keep-alive connections, any number of
connections, headers buffered up to its own default. The limits here come from the settings. uvicorn
has no timeout for slow headers or bodies; the body has a deadline in the JSON reader
(``api.body_read_timeout_seconds``), and slow or idle connections that never finish their headers
are bounded by ``api.limit_concurrency`` (in front of the API, a reverse proxy's header timeout
closes them).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import uvicorn

from platform_config.settings import Settings

ACCESS_LOGGER = "uvicorn.access"
# The link is the customer's credential: whoever reads the access log must not be able to use it.
_PORTAL_TOKEN = re.compile(r"/portal/[^/?#\s\"]+")
REDACTED = "/portal/<token>"


def redact_portal_tokens(text: str) -> str:
    return _PORTAL_TOKEN.sub(REDACTED, text)


class PortalTokenRedactor(logging.Filter):
    """Rewrites ``/portal/<token>...`` in access log records; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_portal_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_portal_tokens(record.msg)
        return True


def install_access_log_redaction() -> PortalTokenRedactor:
    """Add the filter to uvicorn's access logger once; after uvicorn configured its logging."""
    logger = logging.getLogger(ACCESS_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, PortalTokenRedactor):
            return existing
    redactor = PortalTokenRedactor()
    logger.addFilter(redactor)
    return redactor


def uvicorn_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """The server config of the API; ``overrides`` for tests (e.g. ``log_level``)."""
    api = settings.api
    options: dict[str, Any] = {
        "host": api.host,
        "port": api.port,
        "log_level": "info",
        "access_log": True,
        # h11, not httptools when installed: h11_max_incomplete_event_size only applies to h11.
        "http": "h11",
        "timeout_keep_alive": api.timeout_keep_alive_seconds,
        "limit_concurrency": api.limit_concurrency,
        "h11_max_incomplete_event_size": api.h11_max_incomplete_event_size,
        **overrides,
    }
    # uvicorn.Config configures logging as it is made, so the filter goes on afterwards.
    config = uvicorn.Config(app, **options)
    install_access_log_redaction()
    return config
