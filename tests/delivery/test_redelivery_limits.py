"""Re-delivery limits: how many versions an order may get, and when a backfill needs a confirmation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.records import PortalVersion
from delivery.redelivery_limits import (
    FLEET_CONFIRMATION_TAG,
    BackfillScope,
    RedeliveryLimits,
    RedeliveryRefused,
    check_redelivery,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CFG_ID = "0b7e7b4e-3c1a-4f5e-9d7a-2f1e6c0a9b11"
ROOMY = RedeliveryLimits(per_order=100, per_order_per_day=100, fleet_backfill_orders=10)


def version(number: int, hours_ago: float, run_id: str | None = None) -> PortalVersion:
    return PortalVersion(
        cfg_id=CFG_ID,
        version=number,
        run_id=run_id or f"run-{number}",
        manifest_key=f"portal/{CFG_ID}/v{number}/manifest.json",
        artifact_count=3,
        created_at=NOW - timedelta(hours=hours_ago),
    )


def refusal(
    published: list[PortalVersion],
    limits: RedeliveryLimits = ROOMY,
    backfill: BackfillScope | None = None,
    run_id: str = "run-new",
) -> str | None:
    try:
        check_redelivery(
            cfg_id=CFG_ID, run_id=run_id, published=published, now=NOW, limits=limits, backfill=backfill
        )
    except RedeliveryRefused as refused:
        return str(refused)
    return None


def fleet(orders: int | None, confirmation: str | None = None) -> BackfillScope:
    return BackfillScope(backfill_id="abcdefgh", orders=orders, confirmation=confirmation)


def test_the_first_delivery_is_never_refused() -> None:
    closed = RedeliveryLimits(per_order=0, per_order_per_day=0, fleet_backfill_orders=1)
    assert refusal([], closed, fleet(5000)) is None
    assert refusal([], closed, fleet(None)) is None


def test_versions_after_the_first_are_bounded_per_order() -> None:
    limits = ROOMY.model_copy(update={"per_order": 2})
    old = [version(n, hours_ago=1000 - n) for n in (1, 2, 3)]

    assert refusal(old[:2], limits) is None, "one re-delivery of two allowed"
    refused = refusal(old, limits)

    assert refused is not None
    assert f"re-delivery of order {CFG_ID} refused (it has 3 published portal version(s)" in refused
    assert "nothing was published or emailed" in refused
    assert "re-delivered 2 time(s), the limit per order (api.max_redeliveries_per_order = 2)" in refused


def test_versions_after_the_first_are_bounded_within_24_hours_and_the_reason_says_when_the_next_fits() -> (
    None
):
    limits = ROOMY.model_copy(update={"per_order_per_day": 2})
    # The first delivery an hour ago does not count; the re-deliveries 3 and 2 hours ago fill the day.
    published = [version(1, hours_ago=1), version(2, hours_ago=3), version(3, hours_ago=2)]

    refused = refusal(published, limits)

    assert refused is not None
    assert "re-delivered 2 time(s) within the last 24 hours" in refused
    assert "(api.max_redeliveries_per_order_per_day = 2)" in refused
    assert "the next one is possible from 2025-03-02 09:00:00 UTC" in refused
    older = [version(1, hours_ago=30), version(2, hours_ago=25), version(3, hours_ago=2)]
    assert refusal(older, limits) is None, "a re-delivery a day old no longer counts"


def test_no_re_delivery_at_all_with_a_limit_of_zero() -> None:
    limits = ROOMY.model_copy(update={"per_order_per_day": 0})
    refused = refusal([version(1, hours_ago=2000)], limits)
    assert refused is not None and "(api.max_redeliveries_per_order_per_day = 0)" in refused
    assert "possible from" not in refused


def test_a_retried_step_republishing_its_own_version_does_not_count_twice() -> None:
    limits = RedeliveryLimits(per_order=1, per_order_per_day=1, fleet_backfill_orders=1)
    published = [version(1, hours_ago=5), version(2, hours_ago=1, run_id="run-redelivery")]

    assert refusal(published, limits, fleet(500), run_id="run-redelivery") is None
    assert refusal(published, limits, run_id="run-another") is not None


def test_a_backfill_over_many_orders_re_delivers_only_with_the_number_of_orders_confirmed() -> None:
    published = [version(1, hours_ago=100)]

    refused = refusal(published, backfill=fleet(137))
    assert refused is not None
    assert (
        "backfill abcdefgh re-delivers to 137 orders, more than pipeline.max_redelivery_backfill_orders (10)"
        in (refused)
    )
    assert f"launch the backfill again with the tag {FLEET_CONFIRMATION_TAG}=137" in refused

    assert refusal(published, backfill=fleet(137, " 137 ")) is None
    assert refusal(published, backfill=fleet(10)) is None, "up to the setting needs no confirmation"
    assert refusal(published, backfill=None) is None
    for wrong in ("true", "136", "1370"):
        mismatch = refusal(published, backfill=fleet(137, wrong))
        assert mismatch is not None and f"its tag {FLEET_CONFIRMATION_TAG} does not say 137" in mismatch


@pytest.mark.parametrize(
    ("confirmation", "refused"), [(None, True), ("yes", True), ("0", True), ("42", False)]
)
def test_a_backfill_of_unknown_size_needs_the_tag_with_a_number(
    confirmation: str | None, refused: bool
) -> None:
    answer = refusal([version(1, hours_ago=100)], backfill=fleet(None, confirmation))
    assert (answer is not None) is refused
    if answer is not None:
        assert f"{FLEET_CONFIRMATION_TAG}=<number of orders>" in answer


def test_every_limit_broken_is_named_and_a_confirmation_lifts_none_of_the_per_order_ones() -> None:
    limits = RedeliveryLimits(per_order=1, per_order_per_day=1, fleet_backfill_orders=10)
    published = [version(1, hours_ago=3), version(2, hours_ago=2)]

    unconfirmed = refusal(published, limits, fleet(20))
    confirmed = refusal(published, limits, fleet(20, "20"))

    assert unconfirmed is not None and confirmed is not None
    assert FLEET_CONFIRMATION_TAG in unconfirmed and FLEET_CONFIRMATION_TAG not in confirmed
    for text in (unconfirmed, confirmed):
        assert "api.max_redeliveries_per_order = 1" in text
        assert "api.max_redeliveries_per_order_per_day = 1" in text
