"""plan_sweep: which stuck orders the sweeper resumes, which it fails, and which it leaves alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from contracts.orders import OrderStatus
from contracts.records import Order
from delivery.order_sweep import StuckLimits, SweepAction, plan_sweep

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMITS = StuckLimits(
    received=timedelta(minutes=5),
    building=timedelta(minutes=15),
    edp_job=timedelta(minutes=10),
    max_resumes=2,
)


def _order(cfg_id: str, status: OrderStatus, still_for: timedelta) -> Order:
    return Order(
        seq=1,
        cfg_id=cfg_id,
        idempotency_key=None,
        payload={},
        target="cloud",
        status=status,
        edp_job_id="job-1" if status is not OrderStatus.RECEIVED else None,
        last_error=None,
        created_at=NOW - still_for,
        updated_at=NOW - still_for,
    )


def _sweep(
    *orders: Order,
    now: datetime = NOW,
    active: frozenset[str] = frozenset(),
    resumes: dict[str, int] | None = None,
) -> list[SweepAction]:
    return plan_sweep(orders, now=now, limits=LIMITS, active=active, resumes=resumes or {})


def _plan(
    *orders: Order, active: frozenset[str] = frozenset(), resumes: dict[str, int] | None = None
) -> list[tuple[str, str]]:
    return [(action.cfg_id, action.kind) for action in _sweep(*orders, active=active, resumes=resumes)]


def test_orders_within_their_limits_or_with_a_run_are_left_alone() -> None:
    assert (
        _plan(
            _order("a", OrderStatus.RECEIVED, timedelta(minutes=4)),
            _order("b", OrderStatus.BUILDING, timedelta(minutes=14)),
            _order("c", OrderStatus.EDP_PENDING, timedelta(minutes=9)),
            _order("d", OrderStatus.BUILDING, timedelta(hours=3)),
            active=frozenset({"d"}),
        )
        == []
    )


def test_a_stuck_received_or_building_order_is_resumed_at_its_step() -> None:
    assert _plan(
        _order("a", OrderStatus.RECEIVED, timedelta(minutes=6)),
        _order("b", OrderStatus.BUILDING, timedelta(minutes=16)),
    ) == [("a", "resume_config"), ("b", "resume_build")]


def test_the_same_stand_still_gets_the_same_run_key_so_it_is_resumed_once() -> None:
    stuck = _order("a", OrderStatus.BUILDING, timedelta(minutes=16))
    first = _sweep(stuck)
    later = _sweep(stuck, now=NOW + timedelta(minutes=1))
    assert first[0].run_key == later[0].run_key
    moved_again = replace(stuck, updated_at=NOW)
    again = _sweep(moved_again, now=NOW + timedelta(minutes=16))
    assert again[0].run_key != first[0].run_key


def test_an_order_resumed_max_times_is_failed_with_the_reason() -> None:
    [action] = _sweep(_order("a", OrderStatus.BUILDING, timedelta(minutes=20)), resumes={"a": 2})
    assert action.kind == "fail"
    assert "building for 1200 s" in action.reason and "2 automatic resume(s)" in action.reason


def test_an_edp_job_past_its_timeout_fails_the_order_and_says_how_to_retry() -> None:
    [action] = _sweep(_order("a", OrderStatus.EDP_PENDING, timedelta(minutes=11)))
    assert action.kind == "fail"
    assert "EDP job job-1 did not finish within 600 s" in action.reason
    assert "POST /orders/a/retry" in action.reason
