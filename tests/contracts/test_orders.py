"""The order lifecycle table: what a customer or operator relies on whatever code moves an order."""

from __future__ import annotations

import pytest

from contracts.orders import DELIVERED_ONCE, TRANSITIONS, OrderStatus, allowed_from, can_move


def test_every_status_has_its_moves() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize("delivered", sorted(DELIVERED_ONCE))
def test_a_delivered_order_never_goes_back_to_failed_or_waiting(delivered: OrderStatus) -> None:
    for downgrade in (
        OrderStatus.FAILED,
        OrderStatus.WAITING_FOR_APK,
        OrderStatus.BUILDING,
        OrderStatus.RECEIVED,
    ):
        assert not can_move(delivered, downgrade)


def test_an_unknown_email_outcome_resolves_only_to_delivered() -> None:
    assert TRANSITIONS[OrderStatus.EMAIL_UNKNOWN] == {OrderStatus.EMAIL_UNKNOWN, OrderStatus.DELIVERED}


@pytest.mark.parametrize("status", [s for s in OrderStatus if s not in DELIVERED_ONCE])
def test_an_order_not_yet_delivered_can_fail_and_a_failed_one_can_be_retried(status: OrderStatus) -> None:
    assert can_move(status, OrderStatus.FAILED)
    assert can_move(OrderStatus.FAILED, status)


def test_allowed_from_is_the_table_read_backwards() -> None:
    assert allowed_from(OrderStatus.EDP_PENDING) == {
        OrderStatus.RECEIVED,
        OrderStatus.EDP_PENDING,
        OrderStatus.FAILED,
    }
