from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.order_retries import (
    OrderRetryConflict,
    OrderRetryInProgress,
    OrderRetryRepository,
)
from platform_db.schema import order_retries as order_retries_table


@pytest.fixture
def retries(migrated_url: str) -> Iterator[OrderRetryRepository]:
    repository = OrderRetryRepository.from_url(migrated_url)
    yield repository
    repository.dispose()


@pytest.fixture
def new_order(repo: OrderRepository, make_payload: Callable[..., ConfiguratorPayload]) -> Callable[[], str]:
    def make() -> str:
        order, _ = repo.submit(make_payload(), None)
        return order.cfg_id

    return make


def test_a_claim_is_recorded_with_what_it_launched(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()

    claim, claimed = retries.claim(cfg_id, "key-1")
    assert claimed and claim.cfg_id == cfg_id
    assert (claim.backfill_id, claim.assets, claim.new_edp_job) == (None, None, None)
    recorded = retries.record_backfill(claim.id, "bf-1", ["order/cfn_or_iso", "order/apk"], False)

    assert (recorded.backfill_id, recorded.assets, recorded.new_edp_job) == (
        "bf-1",
        ("order/cfn_or_iso", "order/apk"),
        False,
    )
    assert recorded.created_at.tzinfo is not None and recorded.created_at.utcoffset() == timedelta(0)
    assert retries.by_key("key-1") == recorded
    assert retries.for_order(cfg_id) == [recorded]


def test_the_same_key_answers_the_recorded_retry(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    recorded = retries.record_backfill(claim.id, "bf-1", ["order/config"], True)

    again, claimed = retries.claim(cfg_id, "key-1")

    assert not claimed and again == recorded
    assert len(retries.for_order(cfg_id)) == 1


def test_the_same_key_for_another_order_is_a_conflict(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id, other = new_order(), new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    retries.record_backfill(claim.id, "bf-1", ["order/config"], True)

    with pytest.raises(OrderRetryConflict, match="a different retry"):
        retries.claim(other, "key-1")


def test_without_a_key_every_claim_is_new(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    first, first_claimed = retries.claim(cfg_id, None)
    second, second_claimed = retries.claim(cfg_id, None)
    assert first_claimed and second_claimed and first.id != second.id


def test_a_claim_being_launched_is_in_progress_until_released(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = retries.claim(cfg_id, "key-1")

    with pytest.raises(OrderRetryInProgress):
        retries.claim(cfg_id, "key-1")

    retries.release(claim.id)
    assert retries.get(claim.id) is None
    retried, claimed = retries.claim(cfg_id, "key-1")
    assert claimed and retried.id != claim.id


def test_a_recorded_claim_is_not_released(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    retries.record_backfill(claim.id, "bf-1", ["order/email"], False)

    retries.release(claim.id)

    assert retries.get(claim.id) is not None


def test_a_stale_claim_is_taken_over_by_one_retry(
    retries: OrderRetryRepository, new_order: Callable[[], str], repo: OrderRepository
) -> None:
    cfg_id = new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    # The claiming request died mid-launch long ago.
    with repo.engine.begin() as connection:
        connection.execute(
            update(order_retries_table)
            .where(order_retries_table.c.id == claim.id)
            .values(created_at=claim.created_at.astimezone(UTC) - timedelta(hours=1))
        )

    taken, claimed = retries.claim(cfg_id, "key-1")

    assert claimed and taken.id == claim.id
    with pytest.raises(OrderRetryInProgress):
        retries.claim(cfg_id, "key-1")


def test_recording_an_unknown_claim_is_a_key_error(retries: OrderRetryRepository) -> None:
    with pytest.raises(KeyError):
        retries.record_backfill(12345, "bf-1", ["order/config"], True)


def test_an_overlong_key_is_refused(retries: OrderRetryRepository, new_order: Callable[[], str]) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        retries.claim(new_order(), "k" * 256)


def test_concurrent_requests_with_one_key_make_one_claim(
    retries: OrderRetryRepository,
    new_order: Callable[[], str],
    race: Callable[[int, Callable[[int], Any]], list[Any]],
) -> None:
    cfg_id = new_order()

    def request(index: int) -> str:
        try:
            _, claimed = retries.claim(cfg_id, "key-1")
        except OrderRetryInProgress:
            return "in progress"
        return "claimed" if claimed else "replayed"

    outcomes = race(8, request)
    assert outcomes.count("claimed") == 1
    assert outcomes.count("in progress") == 7
    assert len(retries.for_order(cfg_id)) == 1
