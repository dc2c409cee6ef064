"""The orders repository: the only code that reads or writes the ``orders`` table.

Several processes share the store (the API, Dagster runs, sensors), so every method runs in its
own short transaction and commits before it returns; nothing is cached in memory.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, create_engine, event, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from contracts.configurator import ConfiguratorPayload
from contracts.orders import OrderStatus, allowed_from
from contracts.records import Order
from platform_db.rows import inserted_id, record_of
from platform_db.schema import orders

# Writers on SQLite take turns on one file lock; an API request waits this long for a Dagster run's
# write to finish instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000
IDEMPOTENCY_KEY_MAX_LENGTH = 255


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different payload."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__("this Idempotency-Key was already used for a different payload")
        self.idempotency_key = idempotency_key


def payload_sha256(payload: ConfiguratorPayload) -> str:
    """The payload's hash, stable under key order and whitespace (``orders.payload_sha256``).

    Not ``service_kit.canonical_json``'s form: the stored rows' hashes were taken of this compact,
    ASCII-escaped one, and a replayed Idempotency-Key is compared against them.
    """
    document = json.dumps(payload.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def check_idempotency_key(idempotency_key: str | None) -> None:
    """Raise ``ValueError`` for a key the ``idempotency_key`` columns cannot hold (or an empty one)."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValueError(f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters")


def create_platform_db_engine(url: URL | str) -> Engine:
    """An engine set up for a store that several processes share.

    SQLite gets WAL (readers never block the writer), synchronous=FULL (a committed order
    survives a power cut, not only a crash) and a busy timeout; other databases get pre-ping so a
    connection the server dropped overnight is replaced instead of failing the next request.
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    _create_sqlite_parent_directory(url)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself needs the lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    return engine


def _create_sqlite_parent_directory(url: URL) -> None:
    database = url.database
    # In-memory databases and URI file names (``?uri=true``) have no directory to create.
    if not database or database == ":memory:" or url.query.get("uri") or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _to_order(row: Row[Any]) -> Order:
    return record_of(Order, row, status=OrderStatus(row.status))


class OrderRepository:
    """Orders in platform_db, behind methods that each commit before they return."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: URL | str) -> OrderRepository:
        return cls(create_platform_db_engine(url))

    @property
    def engine(self) -> Engine:
        return self._engine

    def submit(self, payload: ConfiguratorPayload, idempotency_key: str | None) -> tuple[Order, bool]:
        """Store a new order, or find the one an earlier request with the same key stored.

        Returns ``(order, created)``. The order is committed when this returns. Raises
        :class:`IdempotencyConflict` when the key was used before with a different payload.
        """
        check_idempotency_key(idempotency_key)
        document = payload.model_dump(mode="json")
        digest = payload_sha256(payload)

        if idempotency_key is not None:
            with self._engine.connect() as connection:
                existing = self._row_by_key(connection, idempotency_key)
            if existing is not None:
                return self._replay(existing, digest, idempotency_key), False

        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "cfg_id": str(uuid.uuid4()),
            "idempotency_key": idempotency_key,
            "payload_sha256": digest,
            "payload": document,
            "target": payload.target,
            "status": OrderStatus.RECEIVED.value,
            "edp_job_id": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._engine.begin() as connection:
                seq = inserted_id(connection, insert(orders).values(**values))
        except IntegrityError:
            # A concurrent request with the same key committed between our look-up and our
            # insert; the unique index kept it to one row, and that row is the answer.
            if idempotency_key is None:
                raise
            with self._engine.connect() as connection:
                existing = self._row_by_key(connection, idempotency_key)
            if existing is None:
                raise
            return self._replay(existing, digest, idempotency_key), False

        return Order(
            seq=seq,
            cfg_id=values["cfg_id"],
            idempotency_key=idempotency_key,
            payload=document,
            target=values["target"],
            status=OrderStatus.RECEIVED,
            edp_job_id=None,
            last_error=None,
            created_at=now,
            updated_at=now,
        ), True

    def get(self, cfg_id: str) -> Order | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(orders).where(orders.c.cfg_id == cfg_id)).one_or_none()
        return None if row is None else _to_order(row)

    def orders_after(self, seq: int, limit: int = 100) -> list[Order]:
        """Orders with a ``seq`` greater than ``seq``, oldest first, a page at a time.

        On PostgreSQL two concurrent inserts can commit out of ``seq`` order, so this is no cursor
        for work that must not miss a row: order_sensor asks :meth:`orders_without_first_run`.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = select(orders).where(orders.c.seq > seq).order_by(orders.c.seq).limit(limit)
        with self._engine.connect() as connection:
            return [_to_order(row) for row in connection.execute(query)]

    def orders_without_first_run(self, limit: int = 100) -> list[Order]:
        """Received orders nobody has claimed to start the first run of yet, oldest first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            select(orders)
            .where(orders.c.status == OrderStatus.RECEIVED.value, orders.c.first_run_requested_at.is_(None))
            .order_by(orders.c.seq)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [_to_order(row) for row in connection.execute(query)]

    def claim_first_run(self, cfg_id: str) -> bool:
        """Claim starting the order's first run; only one caller ever gets True (one conditional UPDATE)."""
        statement = (
            update(orders)
            .where(orders.c.cfg_id == cfg_id, orders.c.first_run_requested_at.is_(None))
            .values(first_run_requested_at=datetime.now(UTC))
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def release_first_run(self, cfg_id: str) -> None:
        """Give the claim back (the launch failed), so order_sensor starts the run instead."""
        statement = (
            update(orders)
            .where(orders.c.cfg_id == cfg_id, orders.c.status == OrderStatus.RECEIVED.value)
            .values(first_run_requested_at=None)
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def orders_with_status(self, *statuses: OrderStatus) -> list[Order]:
        """Orders in any of ``statuses``, oldest first."""
        if not statuses:
            return []
        wanted = [OrderStatus(status).value for status in statuses]
        query = select(orders).where(orders.c.status.in_(wanted)).order_by(orders.c.seq)
        with self._engine.connect() as connection:
            return [_to_order(row) for row in connection.execute(query)]

    def move(self, cfg_id: str, to: OrderStatus, *, error: str | None = None) -> bool:
        """Move an order to ``to`` if the lifecycle (``contracts.orders.TRANSITIONS``) allows it.

        One conditional UPDATE, so concurrent writers cannot make a move the lifecycle forbids.
        ``last_error`` becomes ``error`` (a stale reason is cleared); reaching ``delivered`` also
        clears ``attempt_error``. Returns whether the order moved; raises ``KeyError`` for an
        unknown ``cfg_id``.
        """
        to = OrderStatus(to)
        values: dict[str, Any] = {"status": to.value, "last_error": error}
        if to is OrderStatus.DELIVERED:
            values["attempt_error"] = None
        return self._move(cfg_id, to, values)

    def fail(self, cfg_id: str, reason: str) -> OrderStatus:
        """Record that an attempt on the order failed; returns the order's status afterwards.

        An order not yet delivered becomes ``failed`` with ``reason``. One already delivered (or
        whose email outcome is unknown) keeps its status: the reason goes to ``attempt_error``.
        Raises ``KeyError`` for an unknown ``cfg_id``.
        """
        if self.move(cfg_id, OrderStatus.FAILED, error=reason):
            return OrderStatus.FAILED
        self._update(cfg_id, attempt_error=reason)
        order = self.get(cfg_id)
        assert order is not None
        return order.status

    def record_edp_job(self, cfg_id: str, job_id: str) -> bool:
        """Remember the EDP job that builds this order and mark the order as waiting for it.

        Returns whether the order moved (a delivered order keeps its status and its job).
        Raises ``KeyError`` for an unknown ``cfg_id``.
        """
        values = {"edp_job_id": job_id, "status": OrderStatus.EDP_PENDING.value, "last_error": None}
        return self._move(cfg_id, OrderStatus.EDP_PENDING, values)

    def start_retry(self, cfg_id: str, to: OrderStatus, *, new_edp_job: bool) -> bool:
        """Put a failed order back on its way at ``to``; ``new_edp_job`` bumps ``edp_attempt``.

        Only a ``failed`` order moves (one UPDATE, so two concurrent retries move it once).
        Returns whether it moved; raises ``KeyError`` for an unknown ``cfg_id``.
        """
        values: dict[str, Any] = {"status": OrderStatus(to).value, "last_error": None}
        if new_edp_job:
            values["edp_attempt"] = orders.c.edp_attempt + 1
            values["edp_job_id"] = None
        statement = (
            update(orders)
            .where(orders.c.cfg_id == cfg_id, orders.c.status == OrderStatus.FAILED.value)
            .values(updated_at=datetime.now(UTC), **values)
        )
        return self._execute_move(cfg_id, statement)

    def _move(self, cfg_id: str, to: OrderStatus, values: dict[str, Any]) -> bool:
        sources = sorted(status.value for status in allowed_from(to))
        statement = (
            update(orders)
            .where(orders.c.cfg_id == cfg_id, orders.c.status.in_(sources))
            .values(updated_at=datetime.now(UTC), **values)
        )
        return self._execute_move(cfg_id, statement)

    def _execute_move(self, cfg_id: str, statement: Any) -> bool:
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount:
                return True
        if self.get(cfg_id) is None:
            raise KeyError(cfg_id)
        return False

    def rotate_portal_token(self, cfg_id: str) -> int:
        """Start a new portal token generation; links with older tokens answer 404 from now on.

        Raises ``KeyError`` for an unknown ``cfg_id``.
        """
        self._update(cfg_id, portal_token_generation=orders.c.portal_token_generation + 1)
        order = self.get(cfg_id)
        assert order is not None
        return order.portal_token_generation

    def rotate_commissioning_token(self, cfg_id: str) -> int:
        """Start a new commissioning token generation; the generation the order has now.

        What the pipeline builds from now on carries the new token. Raises ``KeyError`` for an
        unknown ``cfg_id``.
        """
        column = orders.c.commissioning_token_generation
        # Not a status move: updated_at stays.
        statement = update(orders).where(orders.c.cfg_id == cfg_id).values({column: column + 1})
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(cfg_id)
        order = self.get(cfg_id)
        assert order is not None
        return order.commissioning_token_generation

    def undo_commissioning_rotation(self, cfg_id: str, generation: int) -> bool:
        """Go back from ``generation`` to the one before it (nothing was built with it); whether it
        went back. A later rotation stands: only the generation this one made is undone."""
        column = orders.c.commissioning_token_generation
        statement = (
            update(orders)
            .where(orders.c.cfg_id == cfg_id, column == generation, column > 0)
            .values({column: generation - 1})
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def dispose(self) -> None:
        """Close the pooled connections, e.g. before a process forks or exits."""
        self._engine.dispose()

    def _update(self, cfg_id: str, **values: Any) -> None:
        statement = (
            update(orders).where(orders.c.cfg_id == cfg_id).values(updated_at=datetime.now(UTC), **values)
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(cfg_id)

    @staticmethod
    def _row_by_key(connection: Connection, idempotency_key: str) -> Row[Any] | None:
        query = select(orders).where(orders.c.idempotency_key == idempotency_key)
        return connection.execute(query).one_or_none()

    @staticmethod
    def _replay(row: Row[Any], digest: str, idempotency_key: str) -> Order:
        if row.payload_sha256 != digest:
            raise IdempotencyConflict(idempotency_key)
        return _to_order(row)
