"""send_delivery_email_once: at most one email per portal version, even when SES's answer is lost.

Fast tests drive the dispatch with a scripted SES client (every kind of failure botocore raises);
the slow ones send through the embedded SES (moto's server) behind ``standins.fault_proxy``, which
drops answers, refuses connections or throttles, and count what moto really accepted.
"""

from __future__ import annotations

import email
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError
from sqlalchemy import update

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.artifact_store import ArtifactStore, order_key
from delivery.email_dispatch import (
    EmailNotSent,
    EmailOutcome,
    EmailState,
    SendPolicy,
    SesClientRetries,
    send_delivery_email_once,
)
from delivery.manifest_signing import ManifestSigner
from delivery.portal_publication import PortalPublication, publish_portal_version
from platform_config.settings import STANDIN_AWS_KEY, Settings
from platform_db import OrderRepository
from platform_db.deliveries import STALE_SENDING, DeliveryRepository
from platform_db.migrate import upgrade
from platform_db.schema import delivery_emails
from resources.ses import SesResource
from standins.fault_proxy import FaultMode, FaultProxy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
ENDPOINT = "https://email.eu-central-1.amazonaws.com/v2/email/outbound-emails"
PORTAL_URL = "https://portal.example.com/portal/t0ken"
SIGNER = ManifestSigner.generate()


def _order() -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))


def parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class Sleeps:
    """Records the backoffs instead of waiting; ``then`` runs after each one (a fault that ends)."""

    seconds: list[float] = field(default_factory=list)
    then: Callable[[int], None] | None = None

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        if self.then is not None:
            self.then(len(self.seconds))


# --- fast: a scripted SES client ----------------------------------------------------------------


class ScriptedSes:
    """Answers ``send_email`` with the scripted results in turn: an exception is raised, a dict answered."""

    def __init__(self, *results: BaseException | dict[str, Any]) -> None:
        self.results = list(results)
        self.requests: list[dict[str, Any]] = []

    def send_email(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        result = self.results.pop(0) if self.results else {"MessageId": f"msg-{len(self.requests)}"}
        if isinstance(result, BaseException):
            raise result
        return result


def ses_error(code: str, message: str = "it says no", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendEmail",
    )


@dataclass
class Dispatch:
    """One published portal version of a stored order, on a fresh SQLite platform_db."""

    order: ConfiguratorPayload
    publication: PortalPublication
    deliveries: DeliveryRepository
    outbox: Path
    sleeps: Sleeps = field(default_factory=Sleeps)

    @property
    def cfg_id(self) -> str:
        return self.publication.cfg_id

    def send(
        self, ses: Any, policy: SendPolicy | None = None, sender: str = "deliveries@platform.example.com"
    ) -> EmailOutcome:
        return send_delivery_email_once(
            publication=self.publication,
            portal_url=PORTAL_URL,
            order=self.order,
            sender=sender,
            ses_client=ses,
            deliveries=self.deliveries,
            outbox_dir=self.outbox,
            policy=policy or SendPolicy(attempts=4, backoff_seconds=1.0),
            sleep=self.sleeps,
        )

    def state(self) -> EmailState | None:
        record = self.deliveries.email_of(self.cfg_id, self.publication.version)
        return None if record is None else record.state


@pytest.fixture
def dispatch(tmp_path: Path) -> Iterator[Dispatch]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    order = _order()
    orders = OrderRepository.from_url(url)
    cfg_id = orders.submit(order, None)[0].cfg_id
    orders.dispose()
    deliveries = DeliveryRepository.from_url(url)
    claimed = deliveries.claim_portal_version(cfg_id, "run-1")
    manifest_key = f"portal/{cfg_id}/v1/manifest.json"
    deliveries.record_publication(cfg_id, 1, manifest_key=manifest_key, artifact_count=0)
    manifest = Manifest(
        cfg_id=cfg_id, version=1, created_at=claimed.created_at, deployment_target="cloud", artifacts=[]
    )
    publication = PortalPublication(
        cfg_id=cfg_id,
        version=1,
        manifest_key=manifest_key,
        manifest=manifest,
    )
    yield Dispatch(order=order, publication=publication, deliveries=deliveries, outbox=tmp_path / "outbox")
    deliveries.dispose()


def test_a_sent_email_is_recorded_and_written_to_the_outbox(dispatch: Dispatch) -> None:
    ses = ScriptedSes({"MessageId": "msg-1"})

    outcome = dispatch.send(ses)

    assert outcome == EmailOutcome(EmailState.SENT, "msg-1", True, None, attempts=1)
    assert dispatch.state() is EmailState.SENT
    assert dispatch.deliveries.email_message_id(dispatch.cfg_id, 1) == "msg-1"
    assert [f.name for f in dispatch.outbox.glob("*.eml")] == [f"{dispatch.cfg_id}-v1.eml"]
    [request] = ses.requests
    assert request["Destination"] == {"ToAddresses": ["ada@example.com"]}
    assert dispatch.sleeps.seconds == []


TRANSIENT = [
    pytest.param(EndpointConnectionError(endpoint_url=ENDPOINT), id="connection-refused"),
    pytest.param(ConnectTimeoutError(endpoint_url=ENDPOINT), id="connect-timeout"),
    pytest.param(
        ses_error("TooManyRequestsException", "Maximum sending rate exceeded.", 429), id="v2-throttled"
    ),
    pytest.param(ses_error("Throttling", "Maximum sending rate exceeded."), id="classic-throttled"),
    pytest.param(ses_error("ThrottlingException", "Rate exceeded"), id="throttling-exception"),
    pytest.param(ses_error("LimitExceededException", "Daily message quota exceeded."), id="quota"),
]


@pytest.mark.parametrize("failure", TRANSIENT)
def test_what_certainly_did_not_reach_ses_is_retried_with_backoff(
    dispatch: Dispatch, failure: Exception
) -> None:
    ses = ScriptedSes(failure, failure, {"MessageId": "msg-3"})

    outcome = dispatch.send(ses)

    assert outcome == EmailOutcome(EmailState.SENT, "msg-3", True, None, attempts=3)
    assert len(ses.requests) == 3
    assert dispatch.sleeps.seconds == [1.0, 2.0]
    assert dispatch.state() is EmailState.SENT


@pytest.mark.parametrize("failure", TRANSIENT)
def test_spent_attempts_release_the_claim_and_raise_email_not_sent(
    dispatch: Dispatch, failure: Exception
) -> None:
    ses = ScriptedSes(*[failure] * 4)

    with pytest.raises(EmailNotSent) as caught:
        dispatch.send(ses)

    assert caught.value.retryable is True
    assert caught.value.attempts == 4
    assert str(caught.value).endswith("(after 4 attempts)")
    assert dispatch.sleeps.seconds == [1.0, 2.0, 4.0]
    assert dispatch.state() is None  # released: a later attempt may send it
    assert dispatch.send(ScriptedSes({"MessageId": "msg-later"})).sent_now is True


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "MessageRejected",
            "Email address is not verified. The following identities failed the check: nobody@example.org",
        ),
        ("MailFromDomainNotVerifiedException", "The MAIL FROM domain is not verified."),
        ("AccountSuspendedException", "The account is suspended from sending."),
        ("SendingPausedException", "Sending is paused for this account."),
        ("BadRequestException", "The input you provided is invalid."),
        ("NotFoundException", "The configuration set does not exist."),
    ],
)
def test_a_refusal_is_not_retried_and_raises_ses_reason(dispatch: Dispatch, code: str, message: str) -> None:
    ses = ScriptedSes(ses_error(code, message, 404 if code == "NotFoundException" else 400))

    with pytest.raises(EmailNotSent) as caught:
        dispatch.send(ses)

    assert str(caught.value) == f"SES refused the email: {code}: {message}"
    assert (caught.value.code, caught.value.retryable, caught.value.attempts) == (code, False, 1)
    assert isinstance(caught.value.__cause__, ClientError)
    assert len(ses.requests) == 1 and dispatch.sleeps.seconds == []
    assert dispatch.state() is None
    assert list(dispatch.outbox.glob("*.eml")) == []


def test_a_request_botocore_refused_to_build_is_not_sent(dispatch: Dispatch) -> None:
    with pytest.raises(EmailNotSent, match=r"^the email was not sent: ParamValidationError"):
        dispatch.send(ScriptedSes(ParamValidationError(report="Invalid type for parameter Content")))
    assert dispatch.state() is None


def test_the_reason_carries_no_url_query(dispatch: Dispatch) -> None:
    leaky = ses_error(
        "MessageRejected", "see https://ses.example.com/x?X-Amz-Signature=deadbeef&X-Amz-Credential=AKID"
    )

    with pytest.raises(EmailNotSent) as caught:
        dispatch.send(ScriptedSes(leaky))

    assert (
        "deadbeef" not in str(caught.value)
        and "AKID" not in str(caught.value)
        and "?" not in str(caught.value)
    )


MAYBE_SENT = [
    pytest.param(ReadTimeoutError(endpoint_url=ENDPOINT), "ReadTimeoutError", id="read-timeout"),
    pytest.param(
        ConnectionClosedError(endpoint_url=ENDPOINT), "ConnectionClosedError", id="connection-closed"
    ),
    pytest.param(
        ResponseParserError("Unable to parse response"), "ResponseParserError", id="unparsable-answer"
    ),
    pytest.param(
        ses_error("InternalFailure", "internal error", 500), "HTTP 500 InternalFailure", id="ses-500"
    ),
    pytest.param(
        ses_error("ServiceUnavailable", "try later", 503), "HTTP 503 ServiceUnavailable", id="ses-503"
    ),
    pytest.param(ses_error("GatewayTimeout", "timed out", 504), "HTTP 504 GatewayTimeout", id="gateway-504"),
    pytest.param(RuntimeError("something odd"), "RuntimeError", id="unknown-exception"),
    pytest.param({"ResponseMetadata": {}}, "without a MessageId", id="no-message-id"),
]


@pytest.mark.parametrize(("failure", "named"), MAYBE_SENT)
def test_a_failure_after_the_request_may_have_left_is_unknown_and_never_resent(
    dispatch: Dispatch, failure: BaseException | dict[str, Any], named: str
) -> None:
    ses = ScriptedSes(failure)

    outcome = dispatch.send(ses)

    assert outcome.state is EmailState.UNKNOWN
    assert (outcome.message_id, outcome.sent_now, outcome.attempts) == (None, False, 1)
    assert outcome.reason is not None and named in outcome.reason
    assert len(ses.requests) == 1 and dispatch.sleeps.seconds == []
    record = dispatch.deliveries.email_of(dispatch.cfg_id, 1)
    assert record is not None and (record.state, record.reason) == (EmailState.UNKNOWN, outcome.reason)
    assert list(dispatch.outbox.glob("*.eml")) == []

    again = dispatch.send(ses)

    assert again == EmailOutcome(EmailState.UNKNOWN, None, False, outcome.reason)
    assert len(ses.requests) == 1


def test_an_interrupted_send_is_unknown(dispatch: Dispatch) -> None:
    with pytest.raises(KeyboardInterrupt):
        dispatch.send(ScriptedSes(KeyboardInterrupt()))

    record = dispatch.deliveries.email_of(dispatch.cfg_id, 1)
    assert record is not None and record.state is EmailState.UNKNOWN
    assert record.reason is not None and "interrupted" in record.reason


def test_an_interrupted_backoff_gives_the_claim_back(dispatch: Dispatch) -> None:
    def stop(_: int) -> None:
        raise KeyboardInterrupt

    dispatch.sleeps.then = stop
    with pytest.raises(KeyboardInterrupt):
        dispatch.send(ScriptedSes(EndpointConnectionError(endpoint_url=ENDPOINT)))

    assert dispatch.state() is None


def test_a_sent_version_answers_what_was_recorded(dispatch: Dispatch) -> None:
    dispatch.send(ScriptedSes({"MessageId": "msg-1"}))
    ses = ScriptedSes()

    assert dispatch.send(ses) == EmailOutcome(EmailState.SENT, "msg-1", False, None)
    assert ses.requests == []
    assert len(list(dispatch.outbox.glob("*.eml"))) == 1


def test_a_version_marked_sent_by_an_operator_sends_nothing(dispatch: Dispatch) -> None:
    dispatch.send(ScriptedSes(ReadTimeoutError(endpoint_url=ENDPOINT)))
    dispatch.deliveries.mark_sent_by_operator(dispatch.cfg_id, 1)
    ses = ScriptedSes()

    outcome = dispatch.send(ses)

    assert (outcome.state, outcome.sent_now) == (EmailState.MARKED_SENT, False)
    assert ses.requests == []


def test_a_version_released_for_a_resend_is_sent_once_more(dispatch: Dispatch) -> None:
    dispatch.send(ScriptedSes(ConnectionClosedError(endpoint_url=ENDPOINT)))
    dispatch.deliveries.release_for_resend(dispatch.cfg_id, 1)
    ses = ScriptedSes({"MessageId": "msg-resent"})

    assert dispatch.send(ses) == EmailOutcome(EmailState.SENT, "msg-resent", True, None, attempts=1)
    assert dispatch.send(ses).sent_now is False
    assert len(ses.requests) == 1


@pytest.mark.parametrize(
    ("claimed_ago", "state", "reason"),
    [
        # Another attempt holds the claim right now: it is sending.
        (timedelta(0), EmailState.SENDING, "another attempt"),
        # Older than stale_sending: its sender died mid-send, so the outcome is unknown.
        (STALE_SENDING + timedelta(minutes=1), EmailState.UNKNOWN, "never finished"),
    ],
    ids=["held-by-another-attempt", "stale-of-a-dead-sender"],
)
def test_an_existing_claim_sends_nothing(
    dispatch: Dispatch, claimed_ago: timedelta, state: EmailState, reason: str
) -> None:
    assert dispatch.deliveries.claim_email(dispatch.cfg_id, 1)
    if claimed_ago:
        with dispatch.deliveries._engine.begin() as connection:
            connection.execute(update(delivery_emails).values(claimed_at=datetime.now(UTC) - claimed_ago))
    ses = ScriptedSes()

    outcome = dispatch.send(ses)

    assert (outcome.state, outcome.sent_now) == (state, False)
    assert outcome.reason is not None and reason in outcome.reason
    assert ses.requests == []
    assert dispatch.state() is state


def test_a_client_that_retries_by_itself_is_refused_before_claiming(dispatch: Dispatch) -> None:
    retrying = boto3.client(
        "sesv2",
        region_name="eu-central-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )

    with pytest.raises(SesClientRetries, match="total_max_attempts"):
        dispatch.send(retrying)

    assert dispatch.state() is None


def test_the_resource_builds_a_single_attempt_client() -> None:
    resource = SesResource(
        region_name="eu-central-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        sender="deliveries@platform.example.com",
        send_attempts=3,
        send_backoff_seconds=0.5,
        connect_timeout_seconds=2,
        read_timeout_seconds=7,
    )

    config = resource.get_client().meta.config

    assert config.retries["total_max_attempts"] == 1
    assert (config.connect_timeout, config.read_timeout) == (2, 7)
    assert resource.send_policy() == SendPolicy(attempts=3, backoff_seconds=0.5)


# --- slow: the embedded SES (moto's server) behind the fault proxy -------------------------------


@dataclass
class Mailing:
    settings: Settings
    order: ConfiguratorPayload
    publication: PortalPublication
    deliveries: DeliveryRepository
    proxy: FaultProxy
    outbox: Path
    sleeps: Sleeps = field(default_factory=Sleeps)

    def client(self, *, direct: bool = False, read_timeout: float = 10.0) -> Any:
        """The pipeline's SES client, through the proxy (or straight to moto)."""
        return SesResource(
            region_name=self.settings.aws.region,
            endpoint_url=self.settings.aws.endpoint_url if direct else self.proxy.url,
            aws_access_key_id=STANDIN_AWS_KEY,
            aws_secret_access_key=STANDIN_AWS_KEY,
            sender=self.settings.email.sender,
            connect_timeout_seconds=2,
            read_timeout_seconds=read_timeout,
        ).get_client()

    @cached_property
    def default_client(self) -> Any:
        return self.client()

    def send(
        self, sender: str | None = None, *, ses: Any = None, outbox: bool = True, attempts: int = 4
    ) -> EmailOutcome:
        return send_delivery_email_once(
            publication=self.publication,
            portal_url=PORTAL_URL,
            order=self.order,
            sender=sender or self.settings.email.sender,
            ses_client=ses if ses is not None else self.default_client,
            deliveries=self.deliveries,
            outbox_dir=self.outbox if outbox else None,
            policy=SendPolicy(attempts=attempts, backoff_seconds=0.01),
            sleep=self.sleeps,
        )

    def sent_by_moto(self) -> list[dict[str, Any]]:
        """The raw messages the embedded SES accepted for this order (the server is shared by the session)."""
        data = requests.get(f"{self.settings.aws.endpoint_url}/moto-api/data.json", timeout=10).json()
        return [m for m in data["ses"]["RawMessage"] if self.publication.cfg_id in m["raw_data"]]

    def outbox_files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []

    def state(self) -> EmailState | None:
        record = self.deliveries.email_of(self.publication.cfg_id, self.publication.version)
        return None if record is None else record.state


@pytest.fixture
def mailing(pipeline_settings: Settings, tmp_path: Path) -> Iterator[Mailing]:
    settings = pipeline_settings
    client_args = {
        "endpoint_url": settings.aws.endpoint_url,
        "region_name": settings.aws.region,
        **settings.aws_credentials(),
    }
    order = _order()
    orders = OrderRepository.from_url(settings.platform_db_url())
    cfg_id = orders.submit(order, None)[0].cfg_id
    orders.dispose()
    store = ArtifactStore(boto3.client("s3", **client_args), settings.artifacts.bucket)
    deliveries = DeliveryRepository.from_url(settings.platform_db_url())
    publication = publish_portal_version(
        cfg_id=cfg_id,
        run_id="run-1",
        order=order,
        flags={},
        artifacts=[("edp", store.put(order_key(cfg_id, "edp", "dtm.json"), b"{}", "application/json"))],
        store=store,
        deliveries=deliveries,
        signer=SIGNER,
    )
    moto = urlsplit(settings.aws.endpoint_url)
    assert moto.hostname is not None and moto.port is not None
    with FaultProxy(moto.hostname, moto.port) as proxy:
        yield Mailing(
            settings=settings,
            order=order,
            publication=publication,
            deliveries=deliveries,
            proxy=proxy,
            outbox=tmp_path / "outbox-dispatch",
        )
    deliveries.dispose()


@pytest.mark.slow
def test_sends_one_email_through_ses_and_writes_it_to_the_outbox(mailing: Mailing) -> None:
    outcome = mailing.send()

    assert (outcome.state, outcome.sent_now, outcome.attempts) == (EmailState.SENT, True, 1)
    assert outcome.message_id
    sent = mailing.sent_by_moto()
    assert [m["id"] for m in sent] == [outcome.message_id]
    assert "ada@example.com" in sent[0]["destinations"]
    assert sent[0]["source"] == mailing.settings.email.sender
    delivered = email.message_from_string(sent[0]["raw_data"], policy=default)
    assert isinstance(delivered, EmailMessage)
    delivered_text = delivered.get_body(("plain",))
    delivered_html = delivered.get_body(("html",))
    assert delivered_text is not None and PORTAL_URL in delivered_text.get_content()
    assert delivered_html is not None and PORTAL_URL in delivered_html.get_content()

    files = mailing.outbox_files()
    assert [f.name for f in files] == [f"{mailing.publication.cfg_id}-v1.eml"]
    written = parse(files[0])
    assert "ada@example.com" in written["To"]
    assert "version 1" in written["Subject"]
    text = written.get_body(("plain",))
    assert text is not None and PORTAL_URL in text.get_content()
    assert mailing.deliveries.email_message_id(mailing.publication.cfg_id, 1) == outcome.message_id
    assert mailing.proxy.counts.forwarded == 1


@pytest.mark.slow
def test_second_call_for_the_same_version_sends_nothing(mailing: Mailing) -> None:
    first = mailing.send()
    eml_before = mailing.outbox_files()[0].read_bytes()

    again = mailing.send()

    assert again == EmailOutcome(EmailState.SENT, first.message_id, False, None)
    assert len(mailing.sent_by_moto()) == 1
    assert mailing.proxy.counts.forwarded == 1
    assert len(mailing.outbox_files()) == 1
    assert mailing.outbox_files()[0].read_bytes() == eml_before


@pytest.mark.slow
def test_a_lost_answer_is_unknown_and_the_email_is_never_sent_twice(mailing: Mailing) -> None:
    # SES accepts the email; the proxy reads its answer and drops the connection.
    mailing.proxy.set_mode(FaultMode.DROP_RESPONSE)

    outcome = mailing.send()

    assert (outcome.state, outcome.sent_now, outcome.message_id, outcome.attempts) == (
        EmailState.UNKNOWN,
        False,
        None,
        1,
    )
    assert outcome.reason is not None and "ConnectionClosedError" in outcome.reason
    # Exactly one request reached SES (no SDK retry, no retry here), and SES holds exactly one message.
    assert mailing.proxy.counts.forwarded == 1 and mailing.proxy.counts.dropped == 1
    assert len(mailing.sent_by_moto()) == 1
    assert mailing.state() is EmailState.UNKNOWN
    assert mailing.outbox_files() == []

    # The step is retried with the proxy healthy again: nothing is sent, the outcome stays unknown.
    mailing.proxy.set_mode(FaultMode.PASS)
    again = mailing.send()

    assert again == EmailOutcome(EmailState.UNKNOWN, None, False, outcome.reason)
    assert mailing.proxy.counts.forwarded == 1
    assert len(mailing.sent_by_moto()) == 1


@pytest.mark.slow
def test_a_read_timeout_is_unknown_too(mailing: Mailing) -> None:
    mailing.proxy.set_mode(FaultMode.STALL)

    outcome = mailing.send(ses=mailing.client(read_timeout=0.5))

    assert outcome.state is EmailState.UNKNOWN
    assert outcome.reason is not None and "ReadTimeoutError" in outcome.reason
    assert mailing.proxy.counts.forwarded == 1
    assert len(mailing.sent_by_moto()) == 1


@pytest.mark.slow
def test_refused_connections_are_retried_with_backoff_and_the_email_sent_once(mailing: Mailing) -> None:
    # The first two connection attempts are refused (nothing listens), then the proxy passes again.
    mailing.proxy.set_mode(FaultMode.REFUSE)
    mailing.sleeps.then = lambda backoffs: mailing.proxy.set_mode(FaultMode.PASS) if backoffs == 2 else None

    outcome = mailing.send()

    assert (outcome.state, outcome.sent_now, outcome.attempts) == (EmailState.SENT, True, 3)
    assert mailing.sleeps.seconds == [0.01, 0.02]
    assert mailing.proxy.counts.forwarded == 1
    assert [m["id"] for m in mailing.sent_by_moto()] == [outcome.message_id]


@pytest.mark.slow
def test_throttling_is_retried_and_the_email_sent_once(mailing: Mailing) -> None:
    mailing.proxy.set_mode(FaultMode.THROTTLE, times=2)

    outcome = mailing.send()

    assert (outcome.state, outcome.sent_now, outcome.attempts) == (EmailState.SENT, True, 3)
    assert mailing.sleeps.seconds == [0.01, 0.02]
    counts = mailing.proxy.counts
    assert (counts.throttled, counts.forwarded) == (2, 1)
    assert [m["id"] for m in mailing.sent_by_moto()] == [outcome.message_id]


@pytest.mark.slow
def test_a_permanent_refusal_raises_ses_reason_and_releases_the_claim(mailing: Mailing) -> None:
    with pytest.raises(EmailNotSent) as caught:
        mailing.send(sender="nobody@unverified.example.org")

    # SES's own words (moto's: "Did not have authority to send from email ..."; SES: "Email address is not verified ...").
    assert str(caught.value).startswith("SES refused the email: MessageRejected: ")
    assert "nobody@unverified.example.org" in str(caught.value)
    assert (caught.value.code, caught.value.retryable, caught.value.attempts) == ("MessageRejected", False, 1)
    assert mailing.proxy.counts.forwarded == 1  # not retried
    assert mailing.sent_by_moto() == []
    assert mailing.outbox_files() == []
    assert mailing.state() is None

    # Released: once the sender is right, the email goes out, once.
    outcome = mailing.send()

    assert outcome.sent_now is True
    assert [m["id"] for m in mailing.sent_by_moto()] == [outcome.message_id]
    assert mailing.send() == EmailOutcome(EmailState.SENT, outcome.message_id, False, None)
    assert len(mailing.sent_by_moto()) == 1


@pytest.mark.slow
def test_a_refused_connection_is_known_unsent_a_reset_one_is_not(mailing: Mailing) -> None:
    """The two kinds: whether the request may have left decides, not whether it reached SES."""
    # Refused: the connection never opened, so the request certainly did not leave.
    mailing.proxy.set_mode(FaultMode.REFUSE)
    with pytest.raises(EmailNotSent) as refused:
        mailing.send(attempts=2)
    assert refused.value.retryable is True and "EndpointConnectionError" in str(refused.value)
    assert mailing.state() is None

    # Reset after the request was written: SES never saw it either (nothing forwarded), but the
    # client cannot tell that from a lost answer, so the outcome is unknown, not a resend.
    mailing.proxy.set_mode(FaultMode.RESET)
    outcome = mailing.send()

    assert outcome.state is EmailState.UNKNOWN
    assert (mailing.proxy.counts.reset, mailing.proxy.counts.forwarded) == (1, 0)
    assert mailing.sent_by_moto() == []
    assert mailing.state() is EmailState.UNKNOWN


@pytest.mark.slow
def test_without_outbox_the_email_is_still_sent_once(mailing: Mailing) -> None:
    outcome = mailing.send(outbox=False)

    assert outcome.sent_now is True
    assert mailing.send(outbox=False) == EmailOutcome(EmailState.SENT, outcome.message_id, False, None)
    assert len(mailing.sent_by_moto()) == 1
    assert mailing.outbox_files() == []
