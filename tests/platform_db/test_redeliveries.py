"""What only a re-delivery's claim holds (the shared claim behaviour: test_claims.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from platform_db.redeliveries import RedeliveryConflict, RedeliveryRepository
from tests.platform_db.conftest import Connect


@pytest.fixture
def redeliveries(connect: Connect) -> RedeliveryRepository:
    return connect(RedeliveryRepository)


@pytest.mark.parametrize("apk", [False, True])
def test_the_same_key_answers_the_recorded_apk_value(
    apk: bool, redeliveries: RedeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    claim, _ = redeliveries.claim(cfg_id, apk, "key-1")
    assert claim.apk is apk
    redeliveries.record_backfill(claim.id, "bf-1")

    again, claimed = redeliveries.claim(cfg_id, apk, "key-1")

    assert not claimed and again.apk is apk and again.backfill_id == "bf-1"


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
