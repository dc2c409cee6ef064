"""Idempotency-Key claims of API requests that launch a Dagster backfill, in platform_db.

A request claims a row of its table before it launches anything, so a retried request with the
same Idempotency-Key answers the backfill the first one launched and launches nothing new. Each
table has the columns ``id``, ``idempotency_key`` (unique; NULL for requests without a key),
``cfg_id``, ``backfill_id`` (NULL while the claiming request is still launching) and
``created_at``, plus what the request asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy import Engine, Row, Table, delete, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from platform_db.repository import check_idempotency_key, create_platform_db_engine
from platform_db.rows import inserted_id, record_of

# A claim whose request never recorded a backfill (its process died mid-launch) may be taken over
# after this long; far longer than one launch may take.
STALE_CLAIM = timedelta(minutes=2)


@dataclass(frozen=True)
class BackfillClaim:
    """What every claims table holds; a table's record adds what its requests ask for."""

    id: int
    idempotency_key: str | None
    cfg_id: str
    # None while the claiming request is still launching the backfill.
    backfill_id: str | None
    created_at: datetime


C = TypeVar("C", bound=BackfillClaim)


class KeyConflict(Exception):
    """The Idempotency-Key was used before for another request (another order, other values)."""

    what: ClassVar[str] = "request"

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(f"this Idempotency-Key was already used for a different {self.what}")
        self.idempotency_key = idempotency_key


class ClaimInProgress(Exception):
    """Another request with this Idempotency-Key is launching its backfill right now."""

    what: ClassVar[str] = "request"

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(f"a {self.what} with this Idempotency-Key is being launched right now")
        self.idempotency_key = idempotency_key


class BackfillClaims(Generic[C]):
    """One claims table, behind methods that each commit before they return.

    Subclasses name the ``table``, its ``record`` and the exceptions to raise, and offer their own
    ``claim``/``record_backfill`` on top of :meth:`_claim` and :meth:`_record`; a record whose fields
    are not the stored values as they are overrides :meth:`_to_claim`.
    """

    table: ClassVar[Table]
    record: type[C]
    conflict: ClassVar[type[KeyConflict]] = KeyConflict
    in_progress: ClassVar[type[ClaimInProgress]] = ClaimInProgress

    def __init__(self, engine: Engine, stale_claim: timedelta = STALE_CLAIM) -> None:
        self._engine = engine
        self._stale_claim = stale_claim

    @classmethod
    def from_url(cls, url: URL | str) -> Self:
        return cls(create_platform_db_engine(url))

    def _to_claim(self, row: Row[Any]) -> C:
        return record_of(self.record, row)

    def _claim(self, idempotency_key: str | None, request: Mapping[str, Any]) -> tuple[C, bool]:
        """Claim a row for ``request`` (cfg_id and what else identifies it), or find the key's row.

        Returns ``(claim, claimed)``. ``claimed`` True: the caller launches the backfill, then
        records it (or calls :meth:`release` when the launch failed). False: the earlier request's
        ``backfill_id`` is the answer. Raises :attr:`conflict` when the key was used for another
        request, :attr:`in_progress` while the earlier request is still launching.
        """
        check_idempotency_key(idempotency_key)
        if idempotency_key is not None:
            existing = self._row_by_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, request, idempotency_key)
        values = {
            **request,
            "idempotency_key": idempotency_key,
            "backfill_id": None,
            "created_at": datetime.now(UTC),
        }
        try:
            with self._engine.begin() as connection:
                claim_id = inserted_id(connection, insert(self.table).values(**values))
        except IntegrityError:
            # A concurrent request with the same key claimed it between our look-up and our insert.
            existing = self._row_by_key(idempotency_key) if idempotency_key is not None else None
            if existing is None or idempotency_key is None:
                raise
            return self._replay(existing, request, idempotency_key)
        return self._get(claim_id), True

    def _record(self, claim_id: int, backfill_id: str, **values: Any) -> C:
        """The claim was launched as Dagster backfill ``backfill_id`` (with ``values`` beside it)."""
        statement = (
            update(self.table).where(self.table.c.id == claim_id).values(backfill_id=backfill_id, **values)
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(claim_id)
        return self._get(claim_id)

    def release(self, claim_id: int) -> None:
        """Give a claim back after its launch failed, so a retry with the same key may launch."""
        statement = delete(self.table).where(self.table.c.id == claim_id, self.table.c.backfill_id.is_(None))
        with self._engine.begin() as connection:
            connection.execute(statement)

    def get(self, claim_id: int) -> C | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(self.table).where(self.table.c.id == claim_id)).one_or_none()
        return None if row is None else self._to_claim(row)

    def by_key(self, idempotency_key: str) -> C | None:
        row = self._row_by_key(idempotency_key)
        return None if row is None else self._to_claim(row)

    def for_order(self, cfg_id: str) -> list[C]:
        """Every claim of the order, oldest first."""
        query = select(self.table).where(self.table.c.cfg_id == cfg_id).order_by(self.table.c.id)
        with self._engine.connect() as connection:
            return [self._to_claim(row) for row in connection.execute(query)]

    def dispose(self) -> None:
        self._engine.dispose()

    def _get(self, claim_id: int) -> C:
        found = self.get(claim_id)
        assert found is not None
        return found

    def _row_by_key(self, idempotency_key: str) -> Row[Any] | None:
        query = select(self.table).where(self.table.c.idempotency_key == idempotency_key)
        with self._engine.connect() as connection:
            return connection.execute(query).one_or_none()

    def _replay(self, existing: Row[Any], request: Mapping[str, Any], idempotency_key: str) -> tuple[C, bool]:
        if any(getattr(existing, column) != value for column, value in request.items()):
            raise self.conflict(idempotency_key)
        if existing.backfill_id is not None:
            return self._to_claim(existing), False
        if self._take_over_stale(existing.id):
            return self._get(existing.id), True
        raise self.in_progress(idempotency_key)

    def _take_over_stale(self, claim_id: int) -> bool:
        now = datetime.now(UTC)
        # One conditional UPDATE: of several retries that find the same stale claim, one wins.
        statement = (
            update(self.table)
            .where(
                self.table.c.id == claim_id,
                self.table.c.backfill_id.is_(None),
                self.table.c.created_at < now - self._stale_claim,
            )
            .values(created_at=now)
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)
