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
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import uvicorn

from platform_config.settings import Settings

ACCESS_LOGGER = "uvicorn.access"
# The link is the customer's credential: whoever reads the access log must not be able to use it.
# uvicorn logs the path as the client sent it, still percent-encoded, while the router matches it
# decoded: /%70ortal/<token> and /portal%2F<token> open the portal too. So the path is judged
# decoded, and the token's shape is redacted anywhere, whichever route (or none) a request hit.
TOKEN_PLACEHOLDER = "<token>"
# Whatever follows /portal/: the router answers /portal/<anything> from the token alone.
_PORTAL_SEGMENT = re.compile(r"(/portal/+)[^/?#\s\"]+", re.IGNORECASE)
# A portal token is 43 characters of URL-safe base64 (delivery.portal_links.PortalTokens).
# Shorter runs are left alone: a cut token is no credential, and names and ids stay readable.
TOKEN_MIN_LENGTH = 32
_TOKEN_SHAPED = re.compile(rf"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{{{TOKEN_MIN_LENGTH},}}")
# Random base64 of that length all but surely mixes upper and lower case; cfg_ids (UUIDs), key
# fingerprints and kebab-case file names do not, so they stay in the log.
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
# What a rewritten path may show as itself: printable ASCII but the space, '"' (it ends uvicorn's
# request field) and '%' (so that what is shown is never decoded again into something else).
_SHOWN_AS_IS = "!#$&'()*+,/:;<=>?@[]^`{|}\\~"


def _redact_token_shaped(match: re.Match[str]) -> str:
    run = match.group()
    return TOKEN_PLACEHOLDER if _UPPER.search(run) and _LOWER.search(run) else run


def _redact_decoded(text: str) -> str:
    return _TOKEN_SHAPED.sub(_redact_token_shaped, _PORTAL_SEGMENT.sub(rf"\g<1>{TOKEN_PLACEHOLDER}", text))


def _fully_decoded(text: str) -> str:
    # Each round that changes the text shortens it, so this ends; %252F is a "/" after two rounds.
    while (decoded := unquote(text)) != text:
        text = decoded
    return text


def redact_portal_tokens(text: str) -> str:
    """``text`` with every portal token replaced, however it was percent-encoded; unchanged when it held none.

    A path that had to be decoded to find the token is shown decoded, with whatever could break
    the log line (space, quote, control and non-ASCII characters, '%') encoded again.
    """
    decoded = _fully_decoded(text)
    redacted = _redact_decoded(decoded)
    if redacted == decoded:
        return text
    if decoded == text:
        return redacted
    return quote(redacted, safe=_SHOWN_AS_IS)


class PortalTokenRedactor(logging.Filter):
    """Redacts portal tokens in access log records (see :func:`redact_portal_tokens`); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_portal_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        elif isinstance(record.args, Mapping) and record.args:
            record.args = {
                key: redact_portal_tokens(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        elif isinstance(record.msg, str):
            # Without arguments the message is the whole text; with them it is the logger's own
            # format string, and re-encoding it could break its placeholders.
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
