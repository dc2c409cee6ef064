"""Putting a test's order in a given status the way the pipeline would: through allowed moves only."""

from __future__ import annotations

from contracts.orders import OrderStatus
from platform_db import OrderRepository

S = OrderStatus
# The moves the pipeline makes from a new order to each status.
PATHS: dict[OrderStatus, list[OrderStatus]] = {
    S.RECEIVED: [],
    S.EDP_PENDING: [S.EDP_PENDING],
    S.BUILDING: [S.EDP_PENDING, S.BUILDING],
    S.WAITING_FOR_APK: [S.EDP_PENDING, S.BUILDING, S.WAITING_FOR_APK],
    S.DELIVERED: [S.EDP_PENDING, S.BUILDING, S.DELIVERED],
    S.EMAIL_UNKNOWN: [S.EDP_PENDING, S.BUILDING, S.EMAIL_UNKNOWN],
    S.FAILED: [S.FAILED],
}


def walk_to(orders: OrderRepository, cfg_id: str, status: OrderStatus, *, error: str | None = None) -> None:
    """Move a new (``received``) order to ``status``; ``error`` is the reason of the last move."""
    path = PATHS[status]
    for step in path:
        reason = error if step is path[-1] else None
        assert orders.move(cfg_id, step, error=reason), f"the lifecycle refused {step} for order {cfg_id}"
