"""Re-deliveries launched through the API, in platform_db.

A re-delivery is a Dagster backfill of one order, launched by ``POST /orders/{cfg_id}/redeliver``.
Its row is claimed before the backfill is launched, so a retried request with the same
Idempotency-Key answers the backfill the first request launched and launches nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, delete, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from platform_db.repository import IDEMPOTENCY_KEY_MAX_LENGTH, as_utc, create_platform_db_engine
from platform_db.schema import redeliveries

# A claim whose request never recorded a backfill (its process died mid-launch) may be taken over
# after this long; far longer than one launch may take.
STALE_CLAIM = timedelta(minutes=2)


@dataclass(frozen=True)
class Redelivery:
    id: int
    idempotency_key: str | None
    cfg_id: str
    apk: bool
    # None while the claiming request is still launching the backfill.
    backfill_id: str | None
    created_at: datetime


class RedeliveryConflict(Exception):
    """The Idempotency-Key was used before for another order or another kind of re-delivery."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__("this Idempotency-Key was already used for a different re-delivery")
        self.idempotency_key = idempotency_key


class RedeliveryInProgress(Exception):
    """Another request with this Idempotency-Key is launching its backfill right now."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__("a re-delivery with this Idempotency-Key is being launched right now")
        self.idempotency_key = idempotency_key


def _to_redelivery(row: Row[Any]) -> Redelivery:
    return Redelivery(
        id=row.id,
        idempotency_key=row.idempotency_key,
        cfg_id=row.cfg_id,
        apk=bool(row.apk),
        backfill_id=row.backfill_id,
        created_at=as_utc(row.created_at),
    )


class RedeliveryRepository:
    """The ``redeliveries`` table, behind methods that each commit before they return."""

    def __init__(self, engine: Engine, stale_claim: timedelta = STALE_CLAIM) -> None:
        self._engine = engine
        self._stale_claim = stale_claim

    @classmethod
    def from_url(cls, url: URL | str) -> RedeliveryRepository:
        return cls(create_platform_db_engine(url))

    def claim(self, cfg_id: str, apk: bool, idempotency_key: str | None) -> tuple[Redelivery, bool]:
        """Claim a re-delivery of ``cfg_id``, or find the one an earlier request with the key claimed.

        Returns ``(redelivery, claimed)``. ``claimed`` True: the caller launches the backfill, then
        calls :meth:`record_backfill` (or :meth:`release` when the launch failed). False: the
        earlier request's ``backfill_id`` is the answer. Raises :class:`RedeliveryConflict` when
        the key was used for another order or ``apk`` value, :class:`RedeliveryInProgress` while
        the earlier request is still launching.
        """
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            raise ValueError(f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
        if idempotency_key is not None:
            existing = self.by_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, cfg_id, apk, idempotency_key)
        values = {
            "idempotency_key": idempotency_key,
            "cfg_id": cfg_id,
            "apk": apk,
            "backfill_id": None,
            "created_at": datetime.now(UTC),
        }
        try:
            with self._engine.begin() as connection:
                claim_id = connection.execute(insert(redeliveries).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            # A concurrent request with the same key claimed it between our look-up and our insert.
            existing = self.by_key(idempotency_key) if idempotency_key is not None else None
            if existing is None or idempotency_key is None:
                raise
            return self._replay(existing, cfg_id, apk, idempotency_key)
        return Redelivery(id=claim_id, **values), True

    def record_backfill(self, claim_id: int, backfill_id: str) -> Redelivery:
        """The claimed re-delivery was launched as Dagster backfill ``backfill_id``."""
        statement = update(redeliveries).where(redeliveries.c.id == claim_id).values(backfill_id=backfill_id)
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(claim_id)
        found = self.get(claim_id)
        assert found is not None
        return found

    def release(self, claim_id: int) -> None:
        """Give a claim back after its launch failed, so a retry with the same key may launch."""
        statement = delete(redeliveries).where(redeliveries.c.id == claim_id, redeliveries.c.backfill_id.is_(None))
        with self._engine.begin() as connection:
            connection.execute(statement)

    def get(self, claim_id: int) -> Redelivery | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(redeliveries).where(redeliveries.c.id == claim_id)).one_or_none()
        return None if row is None else _to_redelivery(row)

    def by_key(self, idempotency_key: str) -> Redelivery | None:
        query = select(redeliveries).where(redeliveries.c.idempotency_key == idempotency_key)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _to_redelivery(row)

    def for_order(self, cfg_id: str) -> list[Redelivery]:
        """Every re-delivery of the order launched through the API, oldest first."""
        query = select(redeliveries).where(redeliveries.c.cfg_id == cfg_id).order_by(redeliveries.c.id)
        with self._engine.connect() as connection:
            return [_to_redelivery(row) for row in connection.execute(query)]

    def dispose(self) -> None:
        self._engine.dispose()

    def _replay(self, existing: Redelivery, cfg_id: str, apk: bool, idempotency_key: str) -> tuple[Redelivery, bool]:
        if existing.cfg_id != cfg_id or existing.apk != apk:
            raise RedeliveryConflict(idempotency_key)
        if existing.backfill_id is not None:
            return existing, False
        if self._take_over_stale(existing):
            taken = self.get(existing.id)
            assert taken is not None
            return taken, True
        raise RedeliveryInProgress(idempotency_key)

    def _take_over_stale(self, existing: Redelivery) -> bool:
        now = datetime.now(UTC)
        # One conditional UPDATE: of several retries that find the same stale claim, one wins.
        statement = (
            update(redeliveries)
            .where(
                redeliveries.c.id == existing.id,
                redeliveries.c.backfill_id.is_(None),
                redeliveries.c.created_at < now - self._stale_claim,
            )
            .values(created_at=now)
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)
