"""Retries of failed orders launched through the API, in platform_db.

A retry is a Dagster backfill of one order from where it stopped, launched by
``POST /orders/{cfg_id}/retry``. Its row is claimed before anything moves (like a re-delivery's:
:mod:`platform_db.claims`), so a retried request with the same Idempotency-Key answers the
backfill the first request launched and launches nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select

from platform_db.claims import BackfillClaim, BackfillClaims, ClaimInProgress, KeyConflict
from platform_db.rows import as_utc, record_of
from platform_db.schema import order_retries


@dataclass(frozen=True)
class OrderRetry(BackfillClaim):
    # What the retry launched; None, like backfill_id, while the claiming request is still launching.
    assets: tuple[str, ...] | None
    new_edp_job: bool | None


class OrderRetryConflict(KeyConflict):
    """The Idempotency-Key was used before for a retry of another order."""

    what = "retry"


class OrderRetryInProgress(ClaimInProgress):
    """Another request with this Idempotency-Key is launching its retry right now."""

    what = "retry"


class OrderRetryRepository(BackfillClaims[OrderRetry]):
    """The ``order_retries`` table, behind methods that each commit before they return."""

    table = order_retries
    record = OrderRetry
    conflict = OrderRetryConflict
    in_progress = OrderRetryInProgress

    def claim(self, cfg_id: str, idempotency_key: str | None) -> tuple[OrderRetry, bool]:
        """Claim a retry of ``cfg_id``, or find the one an earlier request with the key claimed.

        Returns ``(retry, claimed)``. ``claimed`` True: the caller moves the order and launches
        the backfill, then calls :meth:`record_backfill` (or :meth:`release`). False: the earlier
        request's retry is the answer. Raises :class:`OrderRetryConflict` when the key was used for
        another order, :class:`OrderRetryInProgress` while the earlier request is still launching.
        """
        return self._claim(idempotency_key, {"cfg_id": cfg_id})

    def record_backfill(
        self, claim_id: int, backfill_id: str, assets: list[str], new_edp_job: bool
    ) -> OrderRetry:
        """The claimed retry was launched as Dagster backfill ``backfill_id`` of ``assets``."""
        return self._record(claim_id, backfill_id, assets=list(assets), new_edp_job=new_edp_job)

    def latest_at(self, cfg_id: str) -> datetime | None:
        """When the order's newest retry was asked for; None if it never was."""
        query = select(func.max(order_retries.c.created_at)).where(order_retries.c.cfg_id == cfg_id)
        with self._engine.connect() as connection:
            latest = connection.execute(query).scalar_one_or_none()
        return None if latest is None else as_utc(latest)

    def _to_claim(self, row: Row[Any]) -> OrderRetry:
        # Stored as a JSON list.
        return record_of(OrderRetry, row, assets=None if row.assets is None else tuple(row.assets))
