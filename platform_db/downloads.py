"""The portal's download record in platform_db: every page view and download of an order's portal.

The API writes one row per answered portal request (``file`` NULL: a page; ``version`` NULL: the
order's landing page); rows older than ``portal.download_record_days`` are deleted by Dagster's
download_record_retention_sensor (and by the API as it records); ``GET /orders/{cfg_id}`` reads
them, the Dagster UI only their counts. A row holds no token and only the client's
network (the API truncates the address), so the record is no credential and no customer's
exact address.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Engine, Row, String, case, delete, func, insert, select
from sqlalchemy.engine import URL

from contracts.records import DownloadCounts, PortalDownload
from platform_db.repository import create_platform_db_engine
from platform_db.rows import as_utc, inserted_id, record_of
from platform_db.schema import portal_downloads

# What the sensor takes in one tick at most; the orders after these come at the next one.
ORDERS_PER_PAGE = 100


def _fitted(value: str | None, column: Column[Any]) -> str | None:
    # PostgreSQL refuses a value longer than its column, and a record must never fail on one.
    length = column.type.length if isinstance(column.type, String) else None
    return value[:length] if value is not None and length is not None else value


class DownloadRepository:
    """The ``portal_downloads`` table; each method is one short transaction, committed before it returns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: URL | str) -> DownloadRepository:
        return cls(create_platform_db_engine(url))

    def record(
        self,
        cfg_id: str,
        *,
        version: int | None,
        file: str | None,
        user_agent: str | None,
        client: str | None,
        at: datetime | None = None,
    ) -> PortalDownload:
        """Record one page view (``file`` None) or download of the order's portal."""
        columns = portal_downloads.c
        values: dict[str, Any] = {
            "cfg_id": cfg_id,
            "at": as_utc(at) if at is not None else datetime.now(UTC),
            "version": version,
            "file": _fitted(file, columns.file),
            "user_agent": _fitted(user_agent, columns.user_agent),
            "client": _fitted(client, columns.client),
        }
        with self._engine.begin() as connection:
            download_id = inserted_id(connection, insert(portal_downloads).values(**values))
        return PortalDownload(id=download_id, **values)

    def recent(self, cfg_id: str, limit: int) -> list[PortalDownload]:
        """The order's latest ``limit`` entries, newest first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            select(portal_downloads)
            .where(portal_downloads.c.cfg_id == cfg_id)
            .order_by(portal_downloads.c.at.desc(), portal_downloads.c.id.desc())
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [_to_download(row) for row in connection.execute(query)]

    def fetched(self, cfg_id: str, version: int) -> bool:
        """Whether a file of the version (an artifact or its manifest.json) was downloaded; pages do not count."""
        query = (
            select(portal_downloads.c.id)
            .where(
                portal_downloads.c.cfg_id == cfg_id,
                portal_downloads.c.version == version,
                portal_downloads.c.file.is_not(None),
            )
            .limit(1)
        )
        with self._engine.connect() as connection:
            return connection.execute(query).first() is not None

    def counts(self, cfg_id: str) -> DownloadCounts:
        """How many downloads and page views the order's record holds, and when the last download was."""
        file = portal_downloads.c.file
        query = select(
            func.count(file),
            func.count(portal_downloads.c.id),
            func.max(case((file.is_not(None), portal_downloads.c.at))),
        ).where(portal_downloads.c.cfg_id == cfg_id)
        with self._engine.connect() as connection:
            downloads, entries, last_download_at = connection.execute(query).one()
        return DownloadCounts(
            downloads=downloads,
            page_views=entries - downloads,
            last_download_at=None if last_download_at is None else as_utc(last_download_at),
        )

    def orders_recorded_after(self, after_id: int, limit: int = ORDERS_PER_PAGE) -> dict[str, int]:
        """The orders with entries whose id is greater than ``after_id``: cfg_id -> its newest entry's id.

        Ordered by that id, at most ``limit`` orders: the largest id answered is the next
        ``after_id``, and an order left out has a newer entry still, so the next call answers it.
        On PostgreSQL two concurrent inserts may commit out of id order; an entry committed after
        a greater id was read shows in its order's next answer only.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        newest = func.max(portal_downloads.c.id)
        query = (
            select(portal_downloads.c.cfg_id, newest)
            .where(portal_downloads.c.id > after_id)
            .group_by(portal_downloads.c.cfg_id)
            .order_by(newest)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return {cfg_id: int(newest_id) for cfg_id, newest_id in connection.execute(query)}

    def expire(self, before: datetime) -> int:
        """Delete every entry recorded before ``before``; how many were deleted."""
        statement = delete(portal_downloads).where(portal_downloads.c.at < as_utc(before))
        with self._engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    def dispose(self) -> None:
        self._engine.dispose()


def _to_download(row: Row[Any]) -> PortalDownload:
    return record_of(PortalDownload, row)
