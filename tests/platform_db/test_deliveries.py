from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from datetime import UTC

import pytest

from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository

MakePayload = Callable[..., ConfiguratorPayload]


@pytest.fixture
def deliveries(migrated_url: str) -> Iterator[DeliveryRepository]:
    repository = DeliveryRepository.from_url(migrated_url)
    yield repository
    repository.dispose()


@pytest.fixture
def new_order(repo: OrderRepository, make_payload: MakePayload) -> Callable[[], str]:
    """Store an order (portal versions refer to it) and return its cfg_id."""

    def make() -> str:
        order, _ = repo.submit(make_payload(), None)
        return order.cfg_id

    return make


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


def test_a_claim_survives_a_new_connection(migrated_url: str, cfg_id: str) -> None:
    before = DeliveryRepository.from_url(migrated_url)
    try:
        claimed = before.claim_portal_version(cfg_id, "run-a")
    finally:
        before.dispose()

    after = DeliveryRepository.from_url(migrated_url)
    try:
        assert after.claim_portal_version(cfg_id, "run-a") == claimed
        assert after.claim_portal_version(cfg_id, "run-b").version == 2
    finally:
        after.dispose()


def test_concurrent_runs_get_distinct_consecutive_versions(
    migrated_url: str, cfg_id: str, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 5
    # One engine each, as separate Dagster runs would have.
    repositories = [DeliveryRepository.from_url(migrated_url) for _ in range(workers)]
    try:
        claimed = race(workers, lambda index: repositories[index].claim_portal_version(cfg_id, f"run-{index}"))
        assert sorted(version.version for version in claimed) == list(range(1, workers + 1))
        # Each run keeps the number it got.
        for index, version in enumerate(claimed):
            assert repositories[0].claim_portal_version(cfg_id, f"run-{index}").version == version.version
    finally:
        for repository in repositories:
            repository.dispose()


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


def test_a_claimed_version_keeps_its_publication_on_retry(deliveries: DeliveryRepository, cfg_id: str) -> None:
    deliveries.claim_portal_version(cfg_id, "run-a")
    publish(deliveries, cfg_id, 1)

    again = deliveries.claim_portal_version(cfg_id, "run-a")

    assert again.version == 1
    assert again.manifest_key == f"portal/{cfg_id}/v1/manifest.json"


def test_recording_a_publication_of_an_unclaimed_version_fails(deliveries: DeliveryRepository, cfg_id: str) -> None:
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
    migrated_url: str, published: str, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 6
    repositories = [DeliveryRepository.from_url(migrated_url) for _ in range(workers)]
    try:
        results = race(workers, lambda index: repositories[index].claim_email(published, 1))
        assert sorted(results) == [False] * (workers - 1) + [True]
    finally:
        for repository in repositories:
            repository.dispose()
