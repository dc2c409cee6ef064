"""Re-deliveries launched through the API, in platform_db.

A re-delivery is a Dagster backfill of one order, launched by ``POST /orders/{cfg_id}/redeliver``.
Its row is claimed before the backfill is launched, so a retried request with the same
Idempotency-Key answers the backfill the first request launched and launches nothing new (the
claim logic is :mod:`platform_db.claims`).
"""

from __future__ import annotations

from dataclasses import dataclass

from platform_db.claims import BackfillClaim, BackfillClaims, ClaimInProgress, KeyConflict
from platform_db.schema import redeliveries


@dataclass(frozen=True)
class Redelivery(BackfillClaim):
    # Whether the re-delivery ships the newest APK too.
    apk: bool


class RedeliveryConflict(KeyConflict):
    """The Idempotency-Key was used before for another order or another kind of re-delivery."""

    what = "re-delivery"


class RedeliveryInProgress(ClaimInProgress):
    """Another request with this Idempotency-Key is launching its backfill right now."""

    what = "re-delivery"


class RedeliveryRepository(BackfillClaims[Redelivery]):
    """The ``redeliveries`` table, behind methods that each commit before they return."""

    table = redeliveries
    record = Redelivery
    conflict = RedeliveryConflict
    in_progress = RedeliveryInProgress

    def claim(self, cfg_id: str, apk: bool, idempotency_key: str | None) -> tuple[Redelivery, bool]:
        """Claim a re-delivery of ``cfg_id``, or find the one an earlier request with the key claimed.

        Returns ``(redelivery, claimed)``. ``claimed`` True: the caller launches the backfill, then
        calls :meth:`record_backfill` (or :meth:`release` when the launch failed). False: the
        earlier request's ``backfill_id`` is the answer. Raises :class:`RedeliveryConflict` when
        the key was used for another order or ``apk`` value, :class:`RedeliveryInProgress` while
        the earlier request is still launching.
        """
        return self._claim(idempotency_key, {"cfg_id": cfg_id, "apk": apk})

    def record_backfill(self, claim_id: int, backfill_id: str) -> Redelivery:
        """The claimed re-delivery was launched as Dagster backfill ``backfill_id``."""
        return self._record(claim_id, backfill_id)
