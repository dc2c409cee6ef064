"""Re-delivery limits held by the pipeline itself, whoever launched the run.

Every portal version after an order's first is a re-delivery: published, and emailed to the
customer. The API bounds the re-deliveries it launches (429), but a backfill of ``order/manifest``
+ ``order/email`` launched in the Dagster UI never passes the API. So ``order/manifest`` checks,
before it publishes a new version, what was actually published:

- at most ``api.max_redeliveries_per_order`` versions after the first, ever;
- at most ``api.max_redeliveries_per_order_per_day`` versions after the first within 24 hours;
- a backfill over more than ``pipeline.max_redelivery_backfill_orders`` orders re-delivers only
  with the run tag :data:`FLEET_CONFIRMATION_TAG` set to the number of orders it covers, so nobody
  emails the whole fleet by selecting every partition.

The first delivery is never refused (nor is an order with nothing published yet). A retried step
of a run whose version is already published republishes that same version: not a new one, so it
passes; a run whose claimed version never got published counts what it counted the first time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from contracts.records import PortalVersion
from service_kit.timestamps import as_utc

# Set on the backfill (its runs carry its tags) to the number of orders it covers.
FLEET_CONFIRMATION_TAG = "platform/confirm_fleet_redelivery"
LIMIT_WINDOW = timedelta(days=1)


class RedeliveryLimits(BaseModel):
    """The settings that bound re-deliveries (see the module)."""

    model_config = ConfigDict(frozen=True)

    per_order: int = Field(ge=0)
    per_order_per_day: int = Field(ge=0)
    fleet_backfill_orders: int = Field(ge=1)


class BackfillScope(BaseModel):
    """The backfill a run belongs to, as far as the limits care."""

    model_config = ConfigDict(frozen=True)

    backfill_id: str
    # How many orders (partitions) it covers; None when the instance cannot tell.
    orders: int | None = Field(ge=1)
    # The run's FLEET_CONFIRMATION_TAG, as the operator typed it.
    confirmation: str | None = None


class RedeliveryRefused(Exception):
    """A new portal version would break a limit: nothing is published, nobody is emailed."""

    def __init__(self, cfg_id: str, published: int, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__(
            f"re-delivery of order {cfg_id} refused (it has {published} published portal version(s); "
            f"nothing was published or emailed): " + "; ".join(self.reasons)
        )


def check_redelivery(
    *,
    cfg_id: str,
    run_id: str,
    published: Sequence[PortalVersion],
    now: datetime,
    limits: RedeliveryLimits,
    backfill: BackfillScope | None,
) -> None:
    """Raise :class:`RedeliveryRefused` naming every limit a new version of the order would break.

    ``published`` are the order's published versions, ``run_id`` the run about to publish one.
    """
    if not published or any(version.run_id == run_id for version in published):
        # The first delivery, or this run's own version published again on a retry.
        return
    reasons = []
    fleet = _fleet_refusal(backfill, limits.fleet_backfill_orders)
    if fleet is not None:
        reasons.append(fleet)
    first = min(published, key=lambda version: version.version)
    redeliveries = [version for version in published if version.version != first.version]
    if len(redeliveries) >= limits.per_order:
        reasons.append(
            f"it was re-delivered {len(redeliveries)} time(s), the limit per order "
            f"(api.max_redeliveries_per_order = {limits.per_order})"
        )
    per_day = _per_day_refusal(redeliveries, as_utc(now), limits.per_order_per_day)
    if per_day is not None:
        reasons.append(per_day)
    if reasons:
        raise RedeliveryRefused(cfg_id, len(published), reasons)


def _per_day_refusal(redeliveries: Sequence[PortalVersion], now: datetime, per_day: int) -> str | None:
    recent = sorted(
        as_utc(version.created_at)
        for version in redeliveries
        if as_utc(version.created_at) > now - LIMIT_WINDOW
    )
    if len(recent) < per_day:
        return None
    reason = (
        f"it was re-delivered {len(recent)} time(s) within the last 24 hours, the limit "
        f"(api.max_redeliveries_per_order_per_day = {per_day})"
    )
    if per_day == 0:
        return reason
    # A slot frees when the oldest of the re-deliveries that fill the window is a day old.
    frees_at = recent[len(recent) - per_day] + LIMIT_WINDOW
    return f"{reason}; the next one is possible from {frees_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"


def _fleet_refusal(backfill: BackfillScope | None, most_orders: int) -> str | None:
    if backfill is None:
        return None
    if backfill.orders is not None and backfill.orders <= most_orders:
        return None
    confirmation = (backfill.confirmation or "").strip()
    if backfill.orders is None:
        if confirmation.isdigit() and int(confirmation) > 0:
            return None
        return (
            f"how many orders backfill {backfill.backfill_id} covers cannot be read, so it counts as a "
            f"fleet re-delivery: each order gets a new portal version and an email; if that is meant, "
            f"launch it again with the tag {FLEET_CONFIRMATION_TAG}=<number of orders> "
            "(Dagster UI: the backfill's launch dialog, add a tag)"
        )
    if confirmation == str(backfill.orders):
        return None
    mismatch = f" (its tag {FLEET_CONFIRMATION_TAG} does not say {backfill.orders})" if confirmation else ""
    return (
        f"backfill {backfill.backfill_id} re-delivers to {backfill.orders} orders, more than "
        f"pipeline.max_redelivery_backfill_orders ({most_orders}), and each gets a new portal version and "
        f"an email{mismatch}; if that is meant, launch the backfill again with the tag "
        f"{FLEET_CONFIRMATION_TAG}={backfill.orders} (Dagster UI: the backfill's launch dialog, add a tag)"
    )
