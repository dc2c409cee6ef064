"""State-changing operator calls keyed by their Idempotency-Key, with their answers, in platform_db.

A call claims its key before it acts (one INSERT: of two concurrent requests with the same key,
one claims it), then stores its answer. A retried call with the same key and the same request gets
the stored answer and acts no more; the same key for another call or another body is a conflict.
A call that fails before it acted gives its claim back, so the same key may be sent again.

Unlike a backfill's claim (:mod:`platform_db.claims`), a claim whose request never answered (its
process died mid-call) is never taken over: the call may have acted (rotated a link, emailed the
customer), and acting again is what the key is there to prevent. It stays in progress, and the
operator looks at what happened and sends a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, delete, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from platform_db.repository import check_idempotency_key, create_platform_db_engine
from platform_db.rows import inserted_id, record_of
from platform_db.schema import operator_calls

# A claim unanswered for longer than this belongs to a request that stopped mid-call; far longer
# than any operator call takes.
STALE_CALL = timedelta(minutes=2)
WHAT_MAX_LENGTH = 255


@dataclass(frozen=True)
class OperatorCall:
    id: int
    idempotency_key: str
    # Method and path of the call, e.g. "POST /orders/<cfg_id>/portal-token".
    what: str
    request_sha256: str
    # None while the claiming request acts.
    status_code: int | None
    answer: dict[str, Any] | None
    created_at: datetime
    answered_at: datetime | None


class OperatorCallConflict(Exception):
    """The Idempotency-Key was used before for another call, or for this call with another body."""

    def __init__(self, idempotency_key: str, earlier: OperatorCall, what: str) -> None:
        if earlier.what == what:
            message = f"this Idempotency-Key was already used for {what} with another request body"
        else:
            message = f"this Idempotency-Key was already used for {earlier.what}"
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.earlier = earlier


class OperatorCallInProgress(Exception):
    """A request with this Idempotency-Key has not answered yet: it is acting now, or it stopped
    mid-call (``stale``) and whether it acted is unknown."""

    def __init__(self, idempotency_key: str, earlier: OperatorCall, *, stale: bool) -> None:
        since = earlier.created_at.isoformat(timespec="seconds")
        if stale:
            message = (
                f"a request with this Idempotency-Key began at {since} and never answered (its process "
                "stopped): whether it acted is unknown, so it is not repeated under this key"
            )
        else:
            message = f"a request with this Idempotency-Key is being handled right now (since {since})"
        super().__init__(message)
        self.idempotency_key = idempotency_key
        self.earlier = earlier
        self.stale = stale


def _to_call(row: Row[Any]) -> OperatorCall:
    return record_of(OperatorCall, row)


class OperatorCallRepository:
    """The ``operator_calls`` table, behind methods that each commit before they return."""

    def __init__(self, engine: Engine, stale_call: timedelta = STALE_CALL) -> None:
        self._engine = engine
        self._stale_call = stale_call

    @classmethod
    def from_url(cls, url: URL | str) -> OperatorCallRepository:
        return cls(create_platform_db_engine(url))

    def claim(self, idempotency_key: str, what: str, request_sha256: str) -> tuple[OperatorCall, bool]:
        """Claim the key for ``what`` (with a body of ``request_sha256``), or find the answered call.

        Returns ``(call, claimed)``. ``claimed`` True: the caller acts, then calls :meth:`answer`
        (or :meth:`release` when it did not act). False: ``call`` holds the stored answer. Raises
        :class:`OperatorCallConflict` when the key was used for another call or body,
        :class:`OperatorCallInProgress` while the earlier request has not answered.
        """
        check_idempotency_key(idempotency_key)
        if not 1 <= len(what) <= WHAT_MAX_LENGTH:
            raise ValueError(f"what must be 1 to {WHAT_MAX_LENGTH} characters")
        existing = self.by_key(idempotency_key)
        if existing is not None:
            return self._replay(existing, what, request_sha256), False
        values = {
            "idempotency_key": idempotency_key,
            "what": what,
            "request_sha256": request_sha256,
            "created_at": datetime.now(UTC),
        }
        try:
            with self._engine.begin() as connection:
                call_id = inserted_id(connection, insert(operator_calls).values(**values))
        except IntegrityError:
            # A concurrent request with the same key claimed it between our look-up and our insert.
            existing = self.by_key(idempotency_key)
            if existing is None:
                raise
            return self._replay(existing, what, request_sha256), False
        return self._get(call_id), True

    def answer(self, call_id: int, status_code: int, answer: dict[str, Any]) -> OperatorCall:
        """The claimed call acted and answered ``status_code`` with ``answer`` (JSON)."""
        statement = (
            update(operator_calls)
            .where(operator_calls.c.id == call_id, operator_calls.c.status_code.is_(None))
            .values(status_code=status_code, answer=answer, answered_at=datetime.now(UTC))
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(call_id)
        return self._get(call_id)

    def release(self, call_id: int) -> None:
        """Give an unanswered claim back (the call did not act), so the key may be sent again."""
        statement = delete(operator_calls).where(
            operator_calls.c.id == call_id, operator_calls.c.status_code.is_(None)
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def by_key(self, idempotency_key: str) -> OperatorCall | None:
        query = select(operator_calls).where(operator_calls.c.idempotency_key == idempotency_key)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _to_call(row)

    def dispose(self) -> None:
        self._engine.dispose()

    def _get(self, call_id: int) -> OperatorCall:
        with self._engine.connect() as connection:
            row = connection.execute(select(operator_calls).where(operator_calls.c.id == call_id)).one()
        return _to_call(row)

    def _replay(self, existing: OperatorCall, what: str, request_sha256: str) -> OperatorCall:
        if existing.what != what or existing.request_sha256 != request_sha256:
            raise OperatorCallConflict(existing.idempotency_key, existing, what)
        if existing.status_code is not None:
            return existing
        stale = existing.created_at < datetime.now(UTC) - self._stale_call
        raise OperatorCallInProgress(existing.idempotency_key, existing, stale=stale)
