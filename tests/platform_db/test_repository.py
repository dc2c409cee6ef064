from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import func, select

from contracts.configurator import ConfiguratorPayload
from contracts.orders import OrderStatus
from contracts.records import Order
from platform_db import IdempotencyConflict, OrderRepository
from platform_db.migrate import upgrade
from platform_db.repository import SQLITE_BUSY_TIMEOUT_MS
from platform_db.schema import orders
from tests.order_lifecycle import walk_to
from tests.platform_db.conftest import Connect

MakePayload = Callable[..., ConfiguratorPayload]


def row_count(repo: OrderRepository) -> int:
    with repo.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(orders)).scalar_one()


def test_submit_stores_a_received_order(repo: OrderRepository, make_payload: MakePayload) -> None:
    payload = make_payload()

    order, created = repo.submit(payload, "key-1")

    assert created is True
    assert order.status is OrderStatus.RECEIVED
    assert uuid.UUID(order.cfg_id).version == 4
    assert str(uuid.UUID(order.cfg_id)) == order.cfg_id
    assert order.idempotency_key == "key-1"
    assert order.payload == payload.model_dump(mode="json")
    assert order.target == "cloud"
    assert order.edp_job_id is None and order.last_error is None
    assert order.created_at.tzinfo == UTC and order.created_at == order.updated_at
    assert repo.get(order.cfg_id) == order


def test_onprem_target_is_stored(repo: OrderRepository, make_payload: MakePayload) -> None:
    order, _ = repo.submit(make_payload(deployment={"target": "onprem"}), None)

    assert order.target == "onprem"
    assert repo.get(order.cfg_id).target == "onprem"  # type: ignore[union-attr]


def test_stored_payload_validates_back_into_the_model(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    payload = make_payload()
    order, _ = repo.submit(payload, None)

    assert repo.get(order.cfg_id).configurator_payload() == payload  # type: ignore[union-attr]


def test_get_unknown_order_is_none(repo: OrderRepository) -> None:
    assert repo.get(str(uuid.uuid4())) is None


def test_same_key_and_payload_returns_the_existing_order(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    first, first_created = repo.submit(make_payload(), "key-1")
    # An equal payload built separately, as a retried HTTP request would be.
    again, again_created = repo.submit(make_payload(), "key-1")

    assert (first_created, again_created) == (True, False)
    assert again == first
    assert row_count(repo) == 1


def test_same_key_with_another_payload_is_a_conflict(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    first, _ = repo.submit(make_payload(), "key-1")

    with pytest.raises(IdempotencyConflict):
        repo.submit(make_payload(options={"extra_storage": True}), "key-1")

    assert row_count(repo) == 1
    assert repo.get(first.cfg_id) == first


def test_without_key_every_submit_is_a_new_order(repo: OrderRepository, make_payload: MakePayload) -> None:
    first, first_created = repo.submit(make_payload(), None)
    second, second_created = repo.submit(make_payload(), None)

    assert first_created and second_created
    assert first.cfg_id != second.cfg_id
    assert second.seq > first.seq
    assert row_count(repo) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_key_of_invalid_length_is_rejected(
    repo: OrderRepository, make_payload: MakePayload, key: str
) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        repo.submit(make_payload(), key)
    assert row_count(repo) == 0


def test_orders_after_pages_through_orders_in_seq_order(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    submitted = [repo.submit(make_payload(), None)[0] for _ in range(5)]

    seen: list[Order] = []
    cursor = 0
    while page := repo.orders_after(cursor, limit=2):
        assert len(page) <= 2
        seen.extend(page)
        cursor = page[-1].seq

    assert [order.cfg_id for order in seen] == [order.cfg_id for order in submitted]
    assert [order.seq for order in seen] == sorted(order.seq for order in seen)
    assert repo.orders_after(submitted[2].seq) == submitted[3:]
    assert repo.orders_after(submitted[-1].seq) == []


def test_orders_after_rejects_an_empty_page(repo: OrderRepository) -> None:
    with pytest.raises(ValueError):
        repo.orders_after(0, limit=0)


def test_orders_with_status(repo: OrderRepository, make_payload: MakePayload) -> None:
    received, pending, failed = (repo.submit(make_payload(), None)[0] for _ in range(3))
    repo.record_edp_job(pending.cfg_id, "job-1")
    repo.fail(failed.cfg_id, "boom")

    assert [o.cfg_id for o in repo.orders_with_status(OrderStatus.EDP_PENDING)] == [pending.cfg_id]
    assert [o.cfg_id for o in repo.orders_with_status(OrderStatus.RECEIVED, OrderStatus.FAILED)] == [
        received.cfg_id,
        failed.cfg_id,
    ]
    assert repo.orders_with_status(OrderStatus.DELIVERED) == []
    assert repo.orders_with_status() == []


def test_a_failure_keeps_its_reason_until_a_retry_moves_the_order_on(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    order, _ = repo.submit(make_payload(), None)

    assert repo.fail(order.cfg_id, "EDP job failed: no devices") is OrderStatus.FAILED
    failed = repo.get(order.cfg_id)
    assert failed is not None
    assert failed.status is OrderStatus.FAILED
    assert failed.last_error == "EDP job failed: no devices"
    assert failed.updated_at >= order.updated_at and failed.updated_at.tzinfo == UTC
    assert failed.created_at == order.created_at

    assert repo.move(order.cfg_id, OrderStatus.BUILDING)
    building = repo.get(order.cfg_id)
    assert building is not None
    assert building.status is OrderStatus.BUILDING
    assert building.last_error is None


def test_record_edp_job(repo: OrderRepository, make_payload: MakePayload) -> None:
    order, _ = repo.submit(make_payload(), None)

    repo.record_edp_job(order.cfg_id, "job-42")

    stored = repo.get(order.cfg_id)
    assert stored is not None
    assert stored.edp_job_id == "job-42"
    assert stored.status is OrderStatus.EDP_PENDING


@pytest.mark.parametrize(
    "change",
    [
        lambda repo, cfg_id: repo.move(cfg_id, OrderStatus.BUILDING),
        lambda repo, cfg_id: repo.fail(cfg_id, "boom"),
        lambda repo, cfg_id: repo.start_retry(cfg_id, OrderStatus.RECEIVED, new_edp_job=True),
        lambda repo, cfg_id: repo.record_edp_job(cfg_id, "job-1"),
    ],
    ids=["move", "fail", "start_retry", "record_edp_job"],
)
def test_changing_an_unknown_order_is_a_key_error(
    repo: OrderRepository, change: Callable[[OrderRepository, str], None]
) -> None:
    with pytest.raises(KeyError):
        change(repo, str(uuid.uuid4()))


def test_an_order_survives_a_restart(connect: Connect, make_payload: MakePayload) -> None:
    before = connect(OrderRepository)
    order, _ = before.submit(make_payload(), "key-1")
    before.record_edp_job(order.cfg_id, "job-1")
    stored = before.get(order.cfg_id)
    before.dispose()

    after = connect(OrderRepository)
    assert after.get(order.cfg_id) == stored
    assert after.submit(make_payload(), "key-1") == (stored, False)


def test_concurrent_submits_with_one_key_store_one_order(
    connect: Connect, make_payload: MakePayload, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 8
    # One engine each, as separate processes (API workers, Dagster runs) would have.
    repositories = [connect(OrderRepository) for _ in range(workers)]

    results = race(workers, lambda index: repositories[index].submit(make_payload(), "same-key"))

    assert len({order.cfg_id for order, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert row_count(repositories[0]) == 1


def _lose_the_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next key look-up miss, as if a concurrent submit committed right after it."""
    original = OrderRepository._row_by_key
    calls = {"n": 0}

    def row_by_key(connection: Any, idempotency_key: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else original(connection, idempotency_key)

    monkeypatch.setattr(OrderRepository, "_row_by_key", staticmethod(row_by_key))


def test_losing_the_insert_race_returns_the_winner(
    repo: OrderRepository, make_payload: MakePayload, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner, _ = repo.submit(make_payload(), "key-1")
    _lose_the_race(monkeypatch)

    assert repo.submit(make_payload(), "key-1") == (winner, False)
    assert row_count(repo) == 1


def test_losing_the_insert_race_with_another_payload_is_a_conflict(
    repo: OrderRepository, make_payload: MakePayload, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.submit(make_payload(), "key-1")
    _lose_the_race(monkeypatch)

    with pytest.raises(IdempotencyConflict):
        repo.submit(make_payload(options={"extra_storage": True}), "key-1")
    assert row_count(repo) == 1


def test_sqlite_store_is_set_up_for_several_processes(sqlite_url: str) -> None:
    upgrade(sqlite_url)  # the parent directories do not exist yet
    repo = OrderRepository.from_url(sqlite_url)
    try:
        with repo.engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_MS
    finally:
        repo.dispose()


def test_order_repr_leaves_out_the_customer_data(repo: OrderRepository, make_payload: MakePayload) -> None:
    order, _ = repo.submit(make_payload(), None)

    assert order.cfg_id in repr(order)
    assert "ada@example.com" not in repr(order)


def test_rotating_the_portal_token_moves_to_the_next_generation(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    order, _ = repo.submit(make_payload(), None)
    assert order.portal_token_generation == 0
    assert repo.rotate_portal_token(order.cfg_id) == 1
    assert repo.rotate_portal_token(order.cfg_id) == 2
    stored = repo.get(order.cfg_id)
    assert stored is not None and stored.portal_token_generation == 2
    with pytest.raises(KeyError):
        repo.rotate_portal_token("00000000-0000-0000-0000-000000000000")


def test_rotating_the_commissioning_token_moves_to_the_next_generation_and_can_be_undone(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    order, _ = repo.submit(make_payload(), None)
    assert order.commissioning_token_generation == 0
    assert repo.rotate_commissioning_token(order.cfg_id) == 1
    assert repo.rotate_commissioning_token(order.cfg_id) == 2
    # Only the generation a failed launch made goes back, and never a later rotation's.
    assert not repo.undo_commissioning_rotation(order.cfg_id, 1)
    assert repo.undo_commissioning_rotation(order.cfg_id, 2)
    stored = repo.get(order.cfg_id)
    assert stored is not None and stored.commissioning_token_generation == 1
    # Neither the status nor the portal link moves with it.
    assert stored.updated_at == order.updated_at and stored.portal_token_generation == 0
    with pytest.raises(KeyError):
        repo.rotate_commissioning_token("00000000-0000-0000-0000-000000000000")


def test_a_delivered_order_is_never_downgraded_and_keeps_the_failed_attempt_beside_it(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    order, _ = repo.submit(make_payload(), None)
    walk_to(repo, order.cfg_id, OrderStatus.DELIVERED)

    assert repo.fail(order.cfg_id, "run r2: order/manifest: NoSuchKey") is OrderStatus.DELIVERED
    assert repo.move(order.cfg_id, OrderStatus.WAITING_FOR_APK) is False
    assert repo.move(order.cfg_id, OrderStatus.BUILDING) is False
    assert repo.record_edp_job(order.cfg_id, "job-2") is False
    stored = repo.get(order.cfg_id)
    assert stored is not None
    assert stored.status is OrderStatus.DELIVERED
    assert stored.attempt_error == "run r2: order/manifest: NoSuchKey"
    assert stored.last_error is None

    # The next delivery clears the failed attempt.
    assert repo.move(order.cfg_id, OrderStatus.DELIVERED)
    assert repo.get(order.cfg_id).attempt_error is None  # type: ignore[union-attr]


def test_only_a_failed_order_starts_a_retry_and_a_new_edp_attempt_forgets_the_old_job(
    repo: OrderRepository, make_payload: MakePayload
) -> None:
    order, _ = repo.submit(make_payload(), None)
    repo.record_edp_job(order.cfg_id, "job-1")
    assert repo.start_retry(order.cfg_id, OrderStatus.RECEIVED, new_edp_job=True) is False

    repo.fail(order.cfg_id, "EDP job job-1 failed: topology invalid")
    assert repo.start_retry(order.cfg_id, OrderStatus.RECEIVED, new_edp_job=True) is True
    retried = repo.get(order.cfg_id)
    assert retried is not None
    assert (retried.status, retried.edp_attempt, retried.edp_job_id, retried.last_error) == (
        OrderStatus.RECEIVED,
        1,
        None,
        None,
    )
    # Already on its way again: a second retry request moves nothing.
    assert repo.start_retry(order.cfg_id, OrderStatus.RECEIVED, new_edp_job=True) is False
    assert repo.get(order.cfg_id).edp_attempt == 1  # type: ignore[union-attr]
