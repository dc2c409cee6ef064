"""What only a retry's claim holds (the shared claim behaviour: test_claims.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from platform_db.order_retries import OrderRetryConflict, OrderRetryRepository
from tests.platform_db.conftest import Connect


@pytest.fixture
def retries(connect: Connect) -> OrderRetryRepository:
    return connect(OrderRetryRepository)


def test_a_claim_is_recorded_with_what_it_launched(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    assert (claim.backfill_id, claim.assets, claim.new_edp_job) == (None, None, None)

    recorded = retries.record_backfill(claim.id, "bf-1", ["order/cfn_or_iso", "order/apk"], False)

    assert (recorded.backfill_id, recorded.assets, recorded.new_edp_job) == (
        "bf-1",
        ("order/cfn_or_iso", "order/apk"),
        False,
    )
    assert retries.by_key("key-1") == recorded


def test_the_same_key_for_another_order_is_a_conflict(
    retries: OrderRetryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id, other = new_order(), new_order()
    claim, _ = retries.claim(cfg_id, "key-1")
    retries.record_backfill(claim.id, "bf-1", ["order/config"], True)

    with pytest.raises(OrderRetryConflict, match="a different retry"):
        retries.claim(other, "key-1")
