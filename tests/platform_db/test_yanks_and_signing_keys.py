"""Yank state and signing keys in platform_db: kept across connections, one notice per version."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contracts.records import current_version
from platform_db.deliveries import DeliveryRepository
from tests.platform_db.conftest import Connect


@pytest.fixture
def deliveries(connect: Connect) -> DeliveryRepository:
    return connect(DeliveryRepository)


def published(deliveries: DeliveryRepository, cfg_id: str, count: int) -> None:
    for number in range(1, count + 1):
        claimed = deliveries.claim_portal_version(cfg_id, f"run-{number}")
        deliveries.record_publication(
            cfg_id, claimed.version, manifest_key=f"k{number}", artifact_count=2, signing_key_id="a" * 16
        )


def test_a_yank_is_kept_and_moves_the_current_version(
    deliveries: DeliveryRepository, connect: Connect, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    published(deliveries, cfg_id, 3)
    yanked = deliveries.set_yank(cfg_id, 3, "bad build")
    assert yanked.yanked and yanked.yank_reason == "bad build"
    first_yanked_at = yanked.yanked_at
    # A new connection (another process after a restart) reads the same state.
    again = connect(DeliveryRepository)
    versions = again.portal_versions(cfg_id)
    assert [v.yanked for v in versions] == [False, False, True]
    assert current_version(versions).version == 2  # type: ignore[union-attr]
    assert again.set_yank(cfg_id, 3, "bad build (meter map)").yanked_at == first_yanked_at
    restored = again.set_yank(cfg_id, 3, None)
    assert not restored.yanked and restored.yank_reason is None
    assert current_version(again.portal_versions(cfg_id)).version == 3  # type: ignore[union-attr]


def test_only_a_published_version_can_be_yanked(
    deliveries: DeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    deliveries.claim_portal_version(cfg_id, "run-unpublished")
    with pytest.raises(KeyError):
        deliveries.set_yank(cfg_id, 1, "x")
    with pytest.raises(KeyError):
        deliveries.set_yank(new_order(), 1, "x")


def test_the_yank_notice_is_claimed_once_and_given_back_when_nothing_was_sent(
    deliveries: DeliveryRepository, new_order: Callable[[], str]
) -> None:
    cfg_id = new_order()
    published(deliveries, cfg_id, 1)
    assert not deliveries.claim_yank_notice(cfg_id, 1), "a version not yanked has nothing to tell"
    deliveries.set_yank(cfg_id, 1, "recalled")
    assert deliveries.claim_yank_notice(cfg_id, 1)
    assert not deliveries.claim_yank_notice(cfg_id, 1)
    deliveries.record_yank_notice(cfg_id, 1, None)
    assert deliveries.claim_yank_notice(cfg_id, 1), "SES took nothing: the claim is free again"
    deliveries.record_yank_notice(cfg_id, 1, "ses-1")
    deliveries.set_yank(cfg_id, 1, None)
    deliveries.set_yank(cfg_id, 1, "recalled again")
    assert not deliveries.claim_yank_notice(cfg_id, 1), "the customer is told once per version"


def test_every_signing_key_stays_listed(deliveries: DeliveryRepository, new_order: Callable[[], str]) -> None:
    deliveries.record_signing_key("a" * 16, "PEM A")
    deliveries.record_signing_key("b" * 16, "PEM B")
    deliveries.record_signing_key("a" * 16, "PEM A")
    assert [(k.key_id, k.public_key_pem) for k in deliveries.signing_keys()] == [
        ("a" * 16, "PEM A"),
        ("b" * 16, "PEM B"),
    ]
    cfg_id = new_order()
    published(deliveries, cfg_id, 1)
    assert deliveries.newest_signing_key_id() == "a" * 16
