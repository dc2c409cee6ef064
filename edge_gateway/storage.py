"""Measurements in SQLite: every reading, the latest value per point, and a running count.

One connection, guarded by a lock, serves the pollers and the HTTP handlers; callers in the
event loop reach it through ``asyncio.to_thread`` so a slow disk never stalls polling.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    point TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_at ON measurements (at);
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT NOT NULL,
    point TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (device_id, point)
);
-- COUNT(*) over weeks of readings takes seconds; a counter kept in the same transactions does not.
CREATE TABLE IF NOT EXISTS totals (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (name, value) VALUES ('measurements', 0);
"""


class StorageError(RuntimeError):
    """The measurement database cannot be opened; the message names the file."""


@dataclass(frozen=True)
class Reading:
    device_id: str
    point: str
    value: float
    unit: str
    at: datetime


def format_timestamp(at: datetime) -> str:
    """UTC, millisecond precision, fixed width: sorts as text in the same order as in time."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MeasurementStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: writes arrive from asyncio.to_thread workers; the lock serializes them.
            self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._prepare()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the measurement database {path}: {exc}") from None

    def _prepare(self) -> None:
        with self._lock:
            # WAL lets readers (GET /measurements) run beside the writer; synchronous=FULL makes a
            # committed reading survive a power cut, which an edge box sees more often than a server.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA busy_timeout=5000")
            version = self._connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                self._connection.close()
                raise StorageError(
                    f"{self.path} was written by a newer gateway (schema {version} > {SCHEMA_VERSION})"
                )
            self._connection.executescript(_SCHEMA)
            self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def add(self, readings: Sequence[Reading]) -> None:
        """Store one poll's readings in one transaction: a poll is kept whole or not at all."""
        if not readings:
            return
        rows = [(r.device_id, r.point, r.value, r.unit, format_timestamp(r.at)) for r in readings]
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(
                    "INSERT INTO measurements (device_id, point, value, unit, at) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                cursor.executemany(
                    "INSERT INTO latest (device_id, point, value, unit, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (device_id, point) DO UPDATE SET value = excluded.value, unit = excluded.unit, at = excluded.at",
                    rows,
                )
                cursor.execute(
                    "UPDATE totals SET value = value + ? WHERE name = 'measurements'", (len(rows),)
                )
                cursor.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.rollback()
                raise

    def count(self) -> int:
        with self._lock:
            return int(
                self._connection.execute("SELECT value FROM totals WHERE name = 'measurements'").fetchone()[0]
            )

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{device_id: {point: {"value", "unit", "at"}}}``, the newest reading of every point."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT device_id, point, value, unit, at FROM latest ORDER BY device_id, point"
            ).fetchall()
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for device_id, point, value, unit, at in rows:
            result.setdefault(device_id, {})[point] = {"value": value, "unit": unit, "at": at}
        return result

    def history(self, device_id: str, point: str) -> list[tuple[float, str]]:
        """Every stored ``(value, at)`` of one point, oldest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT value, at FROM measurements WHERE device_id = ? AND point = ? ORDER BY id",
                (device_id, point),
            ).fetchall()
        return [(float(value), str(at)) for value, at in rows]

    def prune(self, older_than: datetime) -> int:
        """Delete readings taken before ``older_than``; the latest value of a point is kept regardless."""
        cutoff = format_timestamp(older_than)
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                deleted = cursor.execute("DELETE FROM measurements WHERE at < ?", (cutoff,)).rowcount
                cursor.execute("UPDATE totals SET value = value - ? WHERE name = 'measurements'", (deleted,))
                cursor.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.rollback()
                raise
        return int(deleted)
