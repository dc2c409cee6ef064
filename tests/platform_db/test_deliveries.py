from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update

from contracts.configurator import ConfiguratorPayload
from contracts.orders import EmailState
from contracts.records import EmailAction
from platform_config.settings import MAX_EMAIL_SEND_SECONDS
from platform_db import OrderRepository
from platform_db.deliveries import (
    STALE_RESEND,
    STALE_SENDING,
    DeliveryRepository,
    EmailResolution,
    ResolutionKeyTaken,
)
from platform_db.migrate import downgrade, upgrade
from platform_db.schema import delivery_emails, email_resolutions
from tests.platform_db.conftest import Connect

MakePayload = Callable[..., ConfiguratorPayload]


@pytest.fixture
def deliveries(connect: Connect) -> DeliveryRepository:
    return connect(DeliveryRepository)


@pytest.fixture
def cfg_id(new_order: Callable[[], str]) -> str:
    return new_order()


def publish(deliveries: DeliveryRepository, cfg_id: str, version: int, artifact_count: int = 3) -> None:
    deliveries.record_publication(
        cfg_id,
        version,
        manifest_key=f"portal/{cfg_id}/v{version}/manifest.json",
        artifact_count=artifact_count,
    )


# --- portal versions --------------------------------------------------------------------------


def test_first_claim_of_an_order_is_version_1(deliveries: DeliveryRepository, cfg_id: str) -> None:
    claimed = deliveries.claim_portal_version(cfg_id, "run-a")

    assert claimed.version == 1
    assert claimed.cfg_id == cfg_id
    assert claimed.run_id == "run-a"
    assert claimed.manifest_key is None
    assert claimed.created_at.tzinfo is not None
    assert claimed.created_at.utcoffset() == UTC.utcoffset(None)


def test_retry_of_the_same_run_gets_the_same_version(deliveries: DeliveryRepository, cfg_id: str) -> None:
    first = deliveries.claim_portal_version(cfg_id, "run-a")

    again = deliveries.claim_portal_version(cfg_id, "run-a")

    assert again.version == first.version == 1
    assert again.created_at == first.created_at


def test_a_new_run_gets_the_next_version(deliveries: DeliveryRepository, cfg_id: str) -> None:
    deliveries.claim_portal_version(cfg_id, "run-a")

    assert deliveries.claim_portal_version(cfg_id, "run-b").version == 2
    assert deliveries.claim_portal_version(cfg_id, "run-c").version == 3
    assert deliveries.claim_portal_version(cfg_id, "run-b").version == 2


def test_versions_are_counted_per_order(deliveries: DeliveryRepository, new_order: Callable[[], str]) -> None:
    first_order, second_order = new_order(), new_order()
    deliveries.claim_portal_version(first_order, "run-a")
    deliveries.claim_portal_version(first_order, "run-b")

    # The same run (a backfill over several partitions) publishes each order's own next version.
    assert deliveries.claim_portal_version(second_order, "run-b").version == 1
    assert deliveries.claim_portal_version(first_order, "run-c").version == 3


def test_a_claim_survives_a_new_connection(connect: Connect, cfg_id: str) -> None:
    before = connect(DeliveryRepository)
    claimed = before.claim_portal_version(cfg_id, "run-a")
    before.dispose()

    after = connect(DeliveryRepository)
    assert after.claim_portal_version(cfg_id, "run-a") == claimed
    assert after.claim_portal_version(cfg_id, "run-b").version == 2


def test_concurrent_runs_get_distinct_consecutive_versions(
    connect: Connect, cfg_id: str, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 5
    # One engine each, as separate Dagster runs would have.
    repositories = [connect(DeliveryRepository) for _ in range(workers)]

    claimed = race(workers, lambda index: repositories[index].claim_portal_version(cfg_id, f"run-{index}"))

    assert sorted(version.version for version in claimed) == list(range(1, workers + 1))
    # Each run keeps the number it got.
    for index, version in enumerate(claimed):
        assert repositories[0].claim_portal_version(cfg_id, f"run-{index}").version == version.version


def test_only_published_versions_are_listed_oldest_first(deliveries: DeliveryRepository, cfg_id: str) -> None:
    for run_id in ("run-a", "run-b", "run-c"):
        deliveries.claim_portal_version(cfg_id, run_id)
    assert deliveries.portal_versions(cfg_id) == []

    publish(deliveries, cfg_id, 3, artifact_count=5)
    publish(deliveries, cfg_id, 1, artifact_count=2)

    listed = deliveries.portal_versions(cfg_id)
    assert [v.version for v in listed] == [1, 3]
    assert [v.run_id for v in listed] == ["run-a", "run-c"]
    assert listed[0].manifest_key == f"portal/{cfg_id}/v1/manifest.json"
    assert [v.artifact_count for v in listed] == [2, 5]
    assert all(v.created_at.tzinfo is not None for v in listed)


def test_published_versions_of_other_orders_are_not_listed(
    deliveries: DeliveryRepository, new_order: Callable[[], str]
) -> None:
    mine, other = new_order(), new_order()
    deliveries.claim_portal_version(other, "run-a")
    publish(deliveries, other, 1)

    assert deliveries.portal_versions(mine) == []
    assert [v.cfg_id for v in deliveries.portal_versions(other)] == [other]


def test_a_claimed_version_keeps_its_publication_on_retry(
    deliveries: DeliveryRepository, cfg_id: str
) -> None:
    deliveries.claim_portal_version(cfg_id, "run-a")
    publish(deliveries, cfg_id, 1)

    again = deliveries.claim_portal_version(cfg_id, "run-a")

    assert again.version == 1
    assert again.manifest_key == f"portal/{cfg_id}/v1/manifest.json"


def test_recording_a_publication_of_an_unclaimed_version_fails(
    deliveries: DeliveryRepository, cfg_id: str
) -> None:
    deliveries.claim_portal_version(cfg_id, "run-a")

    with pytest.raises(KeyError):
        publish(deliveries, cfg_id, 2)
    assert deliveries.portal_versions(cfg_id) == []


# --- delivery emails --------------------------------------------------------------------------


@pytest.fixture
def published(deliveries: DeliveryRepository, cfg_id: str) -> str:
    deliveries.claim_portal_version(cfg_id, "run-a")
    publish(deliveries, cfg_id, 1)
    return cfg_id


def test_email_of_a_version_is_claimed_once(deliveries: DeliveryRepository, published: str) -> None:
    assert deliveries.claim_email(published, 1) is True
    assert deliveries.claim_email(published, 1) is False
    assert deliveries.email_message_id(published, 1) is None


def test_each_version_has_its_own_email_claim(deliveries: DeliveryRepository, published: str) -> None:
    deliveries.claim_portal_version(published, "run-b")
    publish(deliveries, published, 2)

    assert deliveries.claim_email(published, 1) is True
    assert deliveries.claim_email(published, 2) is True


def test_released_claim_can_be_claimed_again(deliveries: DeliveryRepository, published: str) -> None:
    assert deliveries.claim_email(published, 1) is True

    deliveries.release_email_claim(published, 1)

    assert deliveries.claim_email(published, 1) is True
    assert deliveries.claim_email(published, 1) is False


def test_sent_email_is_never_released(deliveries: DeliveryRepository, published: str) -> None:
    deliveries.claim_email(published, 1)
    deliveries.record_email_sent(published, 1, "msg-0001")

    deliveries.release_email_claim(published, 1)

    assert deliveries.claim_email(published, 1) is False
    assert deliveries.email_message_id(published, 1) == "msg-0001"


def test_concurrent_email_claims_let_exactly_one_sender_through(
    connect: Connect, published: str, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 6
    repositories = [connect(DeliveryRepository) for _ in range(workers)]

    results = race(workers, lambda index: repositories[index].claim_email(published, 1))

    assert sorted(results) == [False] * (workers - 1) + [True]


# --- email outcomes ---------------------------------------------------------------------------


def _age_claim(deliveries: DeliveryRepository, cfg_id: str, version: int, by: timedelta) -> None:
    """Pretend the claim was taken ``by`` ago (a sender that died mid-send)."""
    with deliveries._engine.begin() as connection:
        connection.execute(
            update(delivery_emails)
            .where(delivery_emails.c.cfg_id == cfg_id, delivery_emails.c.version == version)
            .values(claimed_at=datetime.now(UTC) - by, resolved_at=datetime.now(UTC) - by)
        )


def _age_resolutions(deliveries: DeliveryRepository, by: timedelta) -> None:
    with deliveries._engine.begin() as connection:
        connection.execute(update(email_resolutions).values(created_at=datetime.now(UTC) - by))


@pytest.fixture
def unknown(deliveries: DeliveryRepository, published: str) -> str:
    """A published order whose email of version 1 has an unknown outcome (its SES answer was lost)."""
    deliveries.claim_email(published, 1)
    deliveries.mark_unknown(published, 1, "answer lost")
    return published


@pytest.fixture
def resend(deliveries: DeliveryRepository, unknown: str) -> EmailResolution:
    """An operator's resend (key ``resend-1``) of the unknown email, its backfill not launched yet."""
    resolution = deliveries.release_for_resend(unknown, 1, "resend-1")
    assert resolution is not None
    return resolution


def test_a_claimed_email_is_sending_and_a_sent_one_sent(
    deliveries: DeliveryRepository, published: str
) -> None:
    assert deliveries.email_of(published, 1) is None
    deliveries.claim_email(published, 1)

    claimed = deliveries.email_of(published, 1)
    assert claimed is not None
    assert claimed.state is EmailState.SENDING and claimed.outcome is EmailState.SENDING
    assert claimed.stale is False and claimed.claimed_at.tzinfo is not None

    deliveries.record_email_sent(published, 1, "msg-1")

    sent = deliveries.email_of(published, 1)
    assert sent is not None
    assert (sent.state, sent.message_id, sent.reason) == (EmailState.SENT, "msg-1", None)
    assert sent.sent_at is not None and sent.sent_at >= claimed.claimed_at
    assert deliveries.unknown_emails() == []


def test_mark_unknown_keeps_the_claim_and_lists_it(deliveries: DeliveryRepository, published: str) -> None:
    deliveries.claim_email(published, 1)

    assert deliveries.mark_unknown(published, 1, "ReadTimeoutError: answer lost") is True

    unknown = deliveries.email_of(published, 1)
    assert unknown is not None
    assert (unknown.state, unknown.reason, unknown.message_id) == (
        EmailState.UNKNOWN,
        "ReadTimeoutError: answer lost",
        None,
    )
    assert [(e.cfg_id, e.version) for e in deliveries.unknown_emails()] == [(published, 1)]
    # Nothing gives an unknown email back by itself: a retried step cannot claim it.
    deliveries.release_email_claim(published, 1)
    assert deliveries.claim_email(published, 1) is False
    assert deliveries.email_of(published, 1) == unknown
    # Only a claim that is sending becomes unknown.
    assert deliveries.mark_unknown(published, 1, "again") is False


def test_the_sender_knows_better_than_a_stale_mark(deliveries: DeliveryRepository, published: str) -> None:
    deliveries.claim_email(published, 1)
    deliveries.mark_unknown(published, 1, "declared stale")

    deliveries.record_email_sent(published, 1, "msg-late")

    email = deliveries.email_of(published, 1)
    assert email is not None and (email.state, email.message_id, email.reason) == (
        EmailState.SENT,
        "msg-late",
        None,
    )


def test_a_stale_sending_claim_counts_as_unknown(deliveries: DeliveryRepository, published: str) -> None:
    deliveries.claim_email(published, 1)
    assert (
        deliveries.mark_unknown(published, 1, "stale", stale_only=True) is False
    )  # fresh: its sender may still wait

    _age_claim(deliveries, published, 1, STALE_SENDING + timedelta(minutes=1))

    stale = deliveries.email_of(published, 1)
    assert stale is not None
    assert stale.state is EmailState.SENDING and stale.stale is True
    assert stale.outcome is EmailState.UNKNOWN
    assert stale.outcome_reason is not None and "never finished" in stale.outcome_reason
    assert [e.version for e in deliveries.unknown_emails(published)] == [1]
    assert deliveries.mark_unknown(published, 1, "the sender died", stale_only=True) is True
    assert deliveries.email_of(published, 1).state is EmailState.UNKNOWN  # type: ignore[union-attr]


def test_mark_sent_by_operator_resolves_an_unknown_email(
    deliveries: DeliveryRepository, unknown: str
) -> None:
    resolution = deliveries.mark_sent_by_operator(unknown, 1, "op-1")

    assert resolution is not None
    assert (resolution.action, resolution.idempotency_key, resolution.backfill_id) == (
        EmailAction.MARK_SENT,
        "op-1",
        None,
    )
    email = deliveries.email_of(unknown, 1)
    assert email is not None
    assert (email.state, email.resolution, email.reason) == (
        EmailState.MARKED_SENT,
        EmailAction.MARK_SENT,
        "answer lost",
    )
    assert email.resolved_at is not None
    assert deliveries.unknown_emails() == []
    assert deliveries.resolution_by_key("op-1") == resolution
    assert deliveries.claim_email(unknown, 1) is False
    # Once resolved, nothing more to resolve.
    assert deliveries.mark_sent_by_operator(unknown, 1) is None
    assert deliveries.release_for_resend(unknown, 1) is None


@pytest.mark.parametrize("state", ["never claimed", "sending", "sent"])
def test_only_an_unknown_email_can_be_resolved(
    deliveries: DeliveryRepository, published: str, state: str
) -> None:
    if state != "never claimed":
        deliveries.claim_email(published, 1)
    if state == "sent":
        deliveries.record_email_sent(published, 1, "msg-1")

    assert deliveries.mark_sent_by_operator(published, 1, "k-1") is None
    assert deliveries.release_for_resend(published, 1, "k-2") is None
    assert deliveries.resolutions(published) == []


def test_release_for_resend_lets_the_next_claim_send_it_once(
    deliveries: DeliveryRepository, unknown: str
) -> None:
    resolution = deliveries.release_for_resend(unknown, 1, "resend-1")

    assert resolution is not None and resolution.action is EmailAction.RESEND
    released = deliveries.email_of(unknown, 1)
    assert released is not None and released.state is EmailState.RESEND_REQUESTED
    assert released.resolution is EmailAction.RESEND
    launched = deliveries.record_resend_backfill(resolution.id, "backfill-1")
    assert launched.backfill_id == "backfill-1"
    # The email step claims it, once.
    assert deliveries.claim_email(unknown, 1) is True
    assert deliveries.claim_email(unknown, 1) is False
    taken = deliveries.email_of(unknown, 1)
    assert taken is not None
    assert (taken.state, taken.reason, taken.resolution) == (EmailState.SENDING, None, EmailAction.RESEND)
    deliveries.record_email_sent(unknown, 1, "msg-2")
    assert deliveries.email_of(unknown, 1).state is EmailState.SENT  # type: ignore[union-attr]
    assert [r.backfill_id for r in deliveries.resolutions(unknown, 1)] == ["backfill-1"]


def test_a_resend_is_requested_again_only_after_a_while(deliveries: DeliveryRepository, unknown: str) -> None:
    assert deliveries.release_for_resend(unknown, 1) is not None

    assert deliveries.release_for_resend(unknown, 1) is None

    _age_claim(deliveries, unknown, 1, STALE_RESEND + timedelta(seconds=5))
    assert deliveries.release_for_resend(unknown, 1) is not None
    # An operator may still call it off: marked sent, the pending resend sends nothing.
    assert deliveries.mark_sent_by_operator(unknown, 1) is not None
    assert deliveries.claim_email(unknown, 1) is False
    assert len(deliveries.resolutions(unknown, 1)) == 3


def test_undo_resend_makes_it_unknown_again_and_frees_the_key(
    deliveries: DeliveryRepository, resend: EmailResolution
) -> None:
    deliveries.undo_resend(resend.id)

    email = deliveries.email_of(resend.cfg_id, 1)
    assert email is not None
    assert (email.state, email.resolution, email.resolved_at, email.reason) == (
        EmailState.UNKNOWN,
        None,
        None,
        "answer lost",
    )
    assert deliveries.resolution_by_key("resend-1") is None
    assert deliveries.release_for_resend(resend.cfg_id, 1, "resend-1") is not None


def test_a_launched_resend_is_never_undone(deliveries: DeliveryRepository, resend: EmailResolution) -> None:
    deliveries.record_resend_backfill(resend.id, "backfill-1")

    deliveries.undo_resend(resend.id)
    assert deliveries.forget_stale_resolution(resend.id) is False

    assert deliveries.email_of(resend.cfg_id, 1).state is EmailState.RESEND_REQUESTED  # type: ignore[union-attr]
    assert deliveries.resolution_by_key("resend-1") is not None


def test_a_stale_unlaunched_resolution_can_be_forgotten(
    deliveries: DeliveryRepository, resend: EmailResolution
) -> None:
    assert deliveries.forget_stale_resolution(resend.id) is False  # its launch may still be under way

    _age_resolutions(deliveries, STALE_RESEND + timedelta(seconds=5))

    assert deliveries.forget_stale_resolution(resend.id) is True
    assert deliveries.resolution_by_key("resend-1") is None


def test_a_key_is_one_resolution(deliveries: DeliveryRepository, new_order: Callable[[], str]) -> None:
    cfg_id = new_order()
    for version, run_id in ((1, "run-a"), (2, "run-b")):
        deliveries.claim_portal_version(cfg_id, run_id)
        publish(deliveries, cfg_id, version)
        deliveries.claim_email(cfg_id, version)
        deliveries.mark_unknown(cfg_id, version, "answer lost")
    assert deliveries.mark_sent_by_operator(cfg_id, 1, "same-key") is not None

    with pytest.raises(ResolutionKeyTaken):
        deliveries.release_for_resend(cfg_id, 2, "same-key")

    # The state change rolled back with the key.
    assert deliveries.email_of(cfg_id, 2).state is EmailState.UNKNOWN  # type: ignore[union-attr]
    assert [e.version for e in deliveries.unknown_emails(cfg_id)] == [2]


def test_emails_of_an_order_by_version(deliveries: DeliveryRepository, new_order: Callable[[], str]) -> None:
    cfg_id, other = new_order(), new_order()
    for order in (cfg_id, other):
        deliveries.claim_portal_version(order, "run-a")
        publish(deliveries, order, 1)
    deliveries.claim_portal_version(cfg_id, "run-b")
    publish(deliveries, cfg_id, 2)
    deliveries.claim_email(cfg_id, 1)
    deliveries.record_email_sent(cfg_id, 1, "msg-1")
    deliveries.claim_email(cfg_id, 2)
    deliveries.mark_unknown(cfg_id, 2, "answer lost")
    deliveries.claim_email(other, 1)
    deliveries.mark_unknown(other, 1, "answer lost")

    emails = deliveries.emails(cfg_id)

    assert {version: email.state for version, email in emails.items()} == {
        1: EmailState.SENT,
        2: EmailState.UNKNOWN,
    }
    assert {(e.cfg_id, e.version) for e in deliveries.unknown_emails()} == {(cfg_id, 2), (other, 1)}
    assert [(e.cfg_id, e.version) for e in deliveries.unknown_emails(other)] == [(other, 1)]


def test_concurrent_resolutions_of_one_email_let_one_through(
    connect: Connect,
    deliveries: DeliveryRepository,
    unknown: str,
    race: Callable[[int, Callable[[int], Any]], list[Any]],
) -> None:
    workers = 6
    repositories = [connect(DeliveryRepository) for _ in range(workers)]

    results = race(workers, lambda index: repositories[index].release_for_resend(unknown, 1, f"k-{index}"))

    assert sum(result is not None for result in results) == 1
    assert len(deliveries.resolutions(unknown, 1)) == 1


def test_migration_0006_derives_the_state_of_existing_emails(db_url: str, make_payload: MakePayload) -> None:
    upgrade(db_url, "0005")
    orders_repo = OrderRepository.from_url(db_url)
    cfg_id = orders_repo.submit(make_payload(), None)[0].cfg_id
    orders_repo.dispose()
    engine = create_engine(db_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            for version in (1, 2):
                connection.execute(
                    text(
                        "INSERT INTO portal_versions (cfg_id, version, run_id, manifest_key, artifact_count, created_at) "
                        "VALUES (:cfg_id, :version, :run_id, 'k', 1, :now)"
                    ),
                    {"cfg_id": cfg_id, "version": version, "run_id": f"run-{version}", "now": now},
                )
            connection.execute(
                text(
                    "INSERT INTO delivery_emails (cfg_id, version, message_id, claimed_at, sent_at) VALUES (:c, 1, 'msg-1', :now, :now)"
                ),
                {"c": cfg_id, "now": now},
            )
            connection.execute(
                text("INSERT INTO delivery_emails (cfg_id, version, claimed_at) VALUES (:c, 2, :now)"),
                {"c": cfg_id, "now": now},
            )
    finally:
        engine.dispose()

    upgrade(db_url)

    migrated = DeliveryRepository.from_url(db_url)
    try:
        emails = migrated.emails(cfg_id)
        assert emails[1].state is EmailState.SENT and emails[1].message_id == "msg-1"
        assert emails[2].state is EmailState.UNKNOWN
        assert emails[2].reason is not None and "never recorded as sent" in emails[2].reason
        # New claims still insert without naming the state's server default.
        assert migrated.claim_email(cfg_id, 1) is False
    finally:
        migrated.dispose()
    downgrade(db_url, "0005")


def test_a_stale_claim_is_older_than_any_send_may_take() -> None:
    # A claim still sending after STALE_SENDING is taken for a dead sender: no live send may last that long.
    assert STALE_SENDING.total_seconds() >= 2 * MAX_EMAIL_SEND_SECONDS
