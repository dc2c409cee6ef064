"""Sending the delivery email of a portal version, at most once, even when SES's answer is lost.

The version's email is claimed in platform_db (``delivery_emails``) before SES is called, and the
SES client makes exactly one attempt per call (``resources.ses``: botocore's own retries would
send again a message SES accepted when only its answer was lost). What this module retries is
decided by where a failure happened:

- **not sent, for now** (retried here with exponential backoff, up to ``SendPolicy.attempts``):
  the connection never opened (``EndpointConnectionError``: refused, no route, DNS;
  ``ConnectTimeoutError``), or SES answered a throttling refusal (:data:`TRANSIENT_REFUSALS`).
  Once the attempts are spent the claim is released and :class:`EmailNotSent` raised.
- **not sent, refused**: any other 4xx answer of SES (``MessageRejected``,
  ``MailFromDomainNotVerifiedException``, ``AccountSuspendedException``, ``SendingPausedException``,
  ``BadRequestException`` ...), or a request botocore refused to build (parameters, credentials).
  The claim is released (a later attempt, e.g. an operator's retry, may send) and
  :class:`EmailNotSent` raised at once, with SES's reason.
- **maybe sent**: anything after the request may have left: ``ReadTimeoutError``,
  ``ConnectionClosedError`` (the connection dropped or reset mid-answer), an answer that does not
  parse or has no MessageId, a 5xx answer (a 504 is literally a lost answer), any other exception.
  The claim is kept and marked ``unknown`` with the reason; nothing is sent again, the outcome is
  ``unknown``. Only an operator resolves it (``POST /orders/{cfg_id}/email``).

A version whose claim exists sends nothing: ``sent``/``marked_sent`` answer what was recorded,
``unknown`` stays unknown, and a ``sending`` claim is either another attempt's (outcome
``sending``) or, older than the repository's ``stale_sending``, one whose sender died mid-send:
it is marked ``unknown``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from contracts.configurator import ConfiguratorPayload
from contracts.orders import EmailState
from contracts.records import DeliveryEmail
from delivery.edp_artifact_policy import readable_reason
from delivery.email import compose_delivery_email, write_to_outbox
from delivery.portal_publication import PortalPublication

__all__ = [
    "TRANSIENT_REFUSALS",
    "EmailClaims",
    "EmailNotSent",
    "EmailOutcome",
    "EmailState",
    "SendPolicy",
    "send_delivery_email_once",
]

# SES answers that refuse the email for now: sending rate (v2: TooManyRequestsException, classic:
# Throttling) or quota (LimitExceededException). SES answered, so nothing was sent: retrying is safe.
# SendingPausedException is not among them: sending stays paused until someone resumes it.
TRANSIENT_REFUSALS = frozenset(
    {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
)
# The connection to SES never opened: the request did not leave.
_NOT_CONNECTED = (EndpointConnectionError, ConnectTimeoutError)
# botocore refused to build or sign the request: it did not leave, and trying again will not help.
_NOT_BUILT = (ParamValidationError, NoCredentialsError, PartialCredentialsError, NoRegionError)


class EmailClaims(Protocol):
    """Where the email claims are kept (``platform_db.deliveries.DeliveryRepository``)."""

    def claim_email(self, cfg_id: str, version: int) -> bool: ...
    def email_of(self, cfg_id: str, version: int) -> DeliveryEmail | None: ...
    def record_email_sent(self, cfg_id: str, version: int, message_id: str) -> None: ...
    def release_email_claim(self, cfg_id: str, version: int) -> None: ...
    def mark_unknown(self, cfg_id: str, version: int, reason: str, *, stale_only: bool = False) -> bool: ...


@dataclass(frozen=True)
class SendPolicy:
    """How often and how patiently a send is tried when it certainly did not reach SES."""

    # SES requests per call at most (the SDK itself makes one per request).
    attempts: int = 4
    # Before attempt n+1: backoff_seconds * 2**(n-1), i.e. 1, 2, 4 s by default.
    backoff_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff_seconds < 0:
            raise ValueError("backoff_seconds must not be negative")

    def backoff(self, failed_attempts: int) -> float:
        return self.backoff_seconds * 2 ** (failed_attempts - 1)


@dataclass(frozen=True)
class EmailOutcome:
    """What became of a portal version's email.

    ``state`` is one of ``sending`` (another attempt holds the claim right now), ``sent``,
    ``unknown`` (SES may or may not have sent it; ``reason`` says why) or ``marked_sent`` (an
    operator confirmed it). ``sent_now`` is True only for the call that got SES's MessageId.
    """

    state: EmailState
    message_id: str | None
    sent_now: bool
    reason: str | None = None
    # SES requests this call made (0 when the version's claim existed).
    attempts: int = 0


class EmailNotSent(Exception):
    """SES did not take the email: it refused it, or could not be reached. Nothing was sent.

    The claim was released, so a later attempt may send the email. ``str(exc)`` is the reason in
    SES's words ("SES refused the email: MessageRejected: Email address is not verified. ..."),
    without URL queries, fit for an order's error.
    """

    def __init__(self, reason: str, *, code: str | None, retryable: bool, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        # SES's error code ("MessageRejected"), or the botocore exception's name.
        self.code = code
        # True when it was refused for now (throttled, unreachable): trying later may succeed.
        self.retryable = retryable
        self.attempts = attempts


class SesClientRetries(ValueError):
    """The SES client would retry by itself, and could send an email twice when an answer is lost."""


def require_single_attempt(ses_client: Any) -> None:
    """Refuse a botocore client whose retries are on: each retry could send the email again.

    Clients without botocore's ``meta.config`` (test doubles) are not checked.
    """
    config = getattr(getattr(ses_client, "meta", None), "config", None)
    if config is None:
        return
    retries = getattr(config, "retries", None) or {}
    if retries.get("total_max_attempts") == 1 or retries.get("max_attempts") == 0:
        return
    raise SesClientRetries(
        "the SES client retries by itself (botocore retries: "
        f"{retries or 'default'}); build it with Config(retries={{'total_max_attempts': 1}}), "
        "as resources.ses.SesResource.get_client() does"
    )


def send_delivery_email_once(
    *,
    publication: PortalPublication,
    portal_url: str,
    order: ConfiguratorPayload,
    sender: str,
    ses_client: Any,
    deliveries: EmailClaims,
    outbox_dir: Path | None,
    policy: SendPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> EmailOutcome:
    """Send the email of ``publication``'s portal version unless its claim exists; see the module doc.

    Returns the outcome (``sent`` with ``sent_now`` for the call that sent it); raises
    :class:`EmailNotSent` when SES refused it or could not be reached (claim released), and
    :class:`SesClientRetries` for a client whose SDK retries are on (before claiming anything).
    """
    require_single_attempt(ses_client)
    policy = policy or SendPolicy()
    cfg_id, version = publication.cfg_id, publication.version
    message = compose_delivery_email(
        sender=sender, order=order, manifest=publication.manifest, page_url=portal_url
    )
    # The claim and the look at an existing one race with a concurrent release (SES refused the
    # other attempt), so the claim is tried again when the row vanished in between.
    for _ in range(3):
        if deliveries.claim_email(cfg_id, version):
            break
        existing = deliveries.email_of(cfg_id, version)
        if existing is not None and existing.state is not EmailState.RESEND_REQUESTED:
            return _outcome_of_claim(deliveries, existing)
    else:
        raise RuntimeError(f"could not claim or read the email of order {cfg_id} version {version}")
    return _send_claimed(
        message=message,
        cfg_id=cfg_id,
        version=version,
        sender=sender,
        recipient=str(order.customer.email),
        ses_client=ses_client,
        deliveries=deliveries,
        outbox_dir=outbox_dir,
        policy=policy,
        sleep=sleep,
    )


def _outcome_of_claim(deliveries: EmailClaims, email: DeliveryEmail) -> EmailOutcome:
    """A retried step, another attempt, or an earlier one that ended unknown: nothing is sent."""
    if email.stale:
        # Its sender died mid-send; whoever notices records it (one conditional UPDATE).
        stale_reason = email.outcome_reason or "the sender stopped mid-send"
        deliveries.mark_unknown(email.cfg_id, email.version, stale_reason, stale_only=True)
        again = deliveries.email_of(email.cfg_id, email.version)
        if again is not None and again.state is not EmailState.SENDING:
            email = again
        else:
            return EmailOutcome(EmailState.UNKNOWN, None, False, stale_reason)
    reason = email.reason
    if email.state is EmailState.SENDING:
        reason = f"another attempt claimed this email at {email.claimed_at.isoformat(timespec='seconds')} and is sending it"
    return EmailOutcome(email.state, email.message_id, False, reason)


def _send_claimed(
    *,
    message: EmailMessage,
    cfg_id: str,
    version: int,
    sender: str,
    recipient: str,
    ses_client: Any,
    deliveries: EmailClaims,
    outbox_dir: Path | None,
    policy: SendPolicy,
    sleep: Callable[[float], None],
) -> EmailOutcome:
    # Raw MIME keeps both parts: SES's simple form would keep only the HTML one.
    request = {
        "FromEmailAddress": sender,
        "Destination": {"ToAddresses": [recipient]},
        "Content": {"Raw": {"Data": message.as_bytes(policy=SMTP)}},
    }
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = ses_client.send_email(**request)
        except Exception as exc:  # noqa: BLE001 - each failure is classified; an unknown kind counts as maybe sent
            failure, verdict = exc, send_failure_verdict(exc)
        except BaseException as exc:
            # Interrupted (the step was terminated, the process is stopping) while the request may
            # have been under way: the outcome is unknown, so a retried step sends nothing.
            reason = f"interrupted while sending the email to SES ({type(exc).__name__}); it may or may not have been sent"
            deliveries.mark_unknown(cfg_id, version, reason)
            raise
        else:
            break
        if verdict.kind == "maybe_sent":
            deliveries.mark_unknown(cfg_id, version, verdict.reason)
            return EmailOutcome(EmailState.UNKNOWN, None, False, verdict.reason, attempt)
        if verdict.kind == "transient" and attempt < policy.attempts:
            try:
                sleep(policy.backoff(attempt))
            except BaseException:
                # Nothing is under way between attempts: give the claim back.
                deliveries.release_email_claim(cfg_id, version)
                raise
            continue
        deliveries.release_email_claim(cfg_id, version)
        reason = verdict.reason if attempt == 1 else f"{verdict.reason} (after {attempt} attempts)"
        raise EmailNotSent(
            reason, code=verdict.code, retryable=verdict.kind == "transient", attempts=attempt
        ) from failure
    message_id = answer.get("MessageId") if isinstance(answer, dict) else None
    if not isinstance(message_id, str) or not message_id:
        reason = "SES answered without a MessageId: it may or may not have sent the email"
        deliveries.mark_unknown(cfg_id, version, reason)
        return EmailOutcome(EmailState.UNKNOWN, None, False, reason, attempt)
    deliveries.record_email_sent(cfg_id, version, message_id)
    if outbox_dir is not None:
        write_to_outbox(message, outbox_dir, f"{cfg_id}-v{version}")
    return EmailOutcome(EmailState.SENT, message_id, True, None, attempt)


@dataclass(frozen=True)
class SendVerdict:
    # "transient": not sent, may succeed later; "refused": not sent, will not; "maybe_sent".
    kind: str
    reason: str
    code: str | None


def send_failure_verdict(exc: Exception) -> SendVerdict:
    """Whether the failed request reached SES, and the reason in words fit for an order's error."""
    name = type(exc).__name__
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "no message")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and 400 <= status < 500:
            kind = "transient" if code in TRANSIENT_REFUSALS else "refused"
            return SendVerdict(kind, readable_reason(f"SES refused the email: {code}: {message}"), code)
        # A 5xx (or an answer without a status) does not say the email was not accepted.
        return SendVerdict(
            "maybe_sent",
            readable_reason(
                f"SES answered HTTP {status} {code}: {message}; it may or may not have sent the email"
            ),
            code,
        )
    if isinstance(exc, _NOT_CONNECTED):
        return SendVerdict("transient", readable_reason(f"SES could not be reached: {name}: {exc}"), name)
    if isinstance(exc, _NOT_BUILT):
        return SendVerdict("refused", readable_reason(f"the email was not sent: {name}: {exc}"), name)
    return SendVerdict(
        "maybe_sent",
        readable_reason(f"SES may have sent the email, but its answer was lost: {name}: {exc}"),
        name,
    )
