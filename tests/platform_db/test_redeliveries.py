from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.redeliveries import RedeliveryConflict, RedeliveryInProgress, RedeliveryRepository
from platform_db.schema import redeliveries as redeliveries_table


@pytest.fixture
def redeliveries(migrated_url: str) -> Iterator[RedeliveryRepository]:
    repository = RedeliveryRepository.from_url(migrated_url)
    yield repository
    repository.dispose()


@pytest.fixture
def new_order(repo: OrderRepository, make_payload: Callable[..., ConfiguratorPayload]) -> Callable[[], str]:
    def make() -> str:
        order, _ = repo.submit(make_payload(), None)
        return order.cfg_id

    return make


def test_a_claim_is_recorded_with_its_backfill(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()

    claim, claimed = redeliveries.claim(cfg_id, False, "key-1")
    assert claimed and claim.backfill_id is None and claim.cfg_id == cfg_id and claim.apk is False
    recorded = redeliveries.record_backfill(claim.id, "bf-1")

    assert recorded.backfill_id == "bf-1"
    assert recorded.created_at.tzinfo is not None and recorded.created_at.utcoffset() == timedelta(0)
    assert redeliveries.by_key("key-1") == recorded
    assert redeliveries.for_order(cfg_id) == [recorded]


def test_the_same_key_answers_the_recorded_backfill(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = redeliveries.claim(cfg_id, True, "key-1")
    redeliveries.record_backfill(claim.id, "bf-1")

    again, claimed = redeliveries.claim(cfg_id, True, "key-1")

    assert not claimed
    assert again.backfill_id == "bf-1"
    assert len(redeliveries.for_order(cfg_id)) == 1


def test_the_same_key_for_another_order_or_apk_value_is_a_conflict(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id, other = new_order(), new_order()
    claim, _ = redeliveries.claim(cfg_id, False, "key-1")
    redeliveries.record_backfill(claim.id, "bf-1")

    with pytest.raises(RedeliveryConflict):
        redeliveries.claim(other, False, "key-1")
    with pytest.raises(RedeliveryConflict):
        redeliveries.claim(cfg_id, True, "key-1")


def test_without_a_key_every_claim_is_new(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    first, first_claimed = redeliveries.claim(cfg_id, False, None)
    second, second_claimed = redeliveries.claim(cfg_id, False, None)
    assert first_claimed and second_claimed and first.id != second.id


def test_a_claim_being_launched_is_in_progress_until_released(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = redeliveries.claim(cfg_id, False, "key-1")

    with pytest.raises(RedeliveryInProgress):
        redeliveries.claim(cfg_id, False, "key-1")

    redeliveries.release(claim.id)
    retried, claimed = redeliveries.claim(cfg_id, False, "key-1")
    assert claimed and retried.id != claim.id


def test_a_recorded_claim_is_not_released(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = redeliveries.claim(cfg_id, False, "key-1")
    redeliveries.record_backfill(claim.id, "bf-1")

    redeliveries.release(claim.id)

    assert redeliveries.get(claim.id) is not None


def test_a_stale_claim_is_taken_over_by_one_retry(
    redeliveries: RedeliveryRepository, new_order: Callable[[], str], repo: OrderRepository
) -> None:
    cfg_id = new_order()
    claim, _ = redeliveries.claim(cfg_id, False, "key-1")
    # The claiming request died mid-launch long ago.
    with repo.engine.begin() as connection:
        connection.execute(
            update(redeliveries_table)
            .where(redeliveries_table.c.id == claim.id)
            .values(created_at=claim.created_at.astimezone(UTC) - timedelta(hours=1))
        )

    taken, claimed = redeliveries.claim(cfg_id, False, "key-1")

    assert claimed and taken.id == claim.id
    with pytest.raises(RedeliveryInProgress):
        redeliveries.claim(cfg_id, False, "key-1")


def test_concurrent_requests_with_one_key_make_one_claim(
    redeliveries: RedeliveryRepository,
    new_order: Callable[[], str],
    race: Callable[[int, Callable[[int], Any]], list[Any]],
) -> None:
    cfg_id = new_order()

    def request(index: int) -> str:
        try:
            _, claimed = redeliveries.claim(cfg_id, False, "key-1")
        except RedeliveryInProgress:
            return "in progress"
        return "claimed" if claimed else "replayed"

    outcomes = race(8, request)
    assert outcomes.count("claimed") == 1
    assert outcomes.count("in progress") == 7
    assert len(redeliveries.for_order(cfg_id)) == 1
