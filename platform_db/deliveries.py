"""Portal versions and delivery emails in platform_db.

Both guard an effect a customer notices: a version number must grow by one per delivery (not per
retry), and an email must go out at most once per version (not once per retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from sqlalchemy.engine import URL

from platform_db.repository import as_utc, create_platform_db_engine
from platform_db.schema import delivery_emails, portal_versions


@dataclass(frozen=True)
class PortalVersion:
    cfg_id: str
    version: int
    run_id: str
    manifest_key: str | None
    artifact_count: int | None
    created_at: datetime


def _to_version(row: Row[Any]) -> PortalVersion:
    return PortalVersion(
        cfg_id=row.cfg_id,
        version=row.version,
        run_id=row.run_id,
        manifest_key=row.manifest_key,
        artifact_count=row.artifact_count,
        created_at=as_utc(row.created_at),
    )


class DeliveryRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: URL | str) -> DeliveryRepository:
        return cls(create_platform_db_engine(url))

    def claim_portal_version(self, cfg_id: str, run_id: str, attempts: int = 5) -> PortalVersion:
        """The portal version this run publishes: the one it claimed before, else previous + 1."""
        for _ in range(attempts):
            existing = self._version_of_run(cfg_id, run_id)
            if existing is not None:
                return existing
            with self._engine.connect() as connection:
                latest = connection.execute(
                    select(func.max(portal_versions.c.version)).where(portal_versions.c.cfg_id == cfg_id)
                ).scalar_one()
            values = {
                "cfg_id": cfg_id,
                "version": (latest or 0) + 1,
                "run_id": run_id,
                "created_at": datetime.now(UTC),
            }
            try:
                with self._engine.begin() as connection:
                    connection.execute(insert(portal_versions).values(**values))
            except IntegrityError:
                # Another run took this number (or this run raced itself); look again.
                continue
            return PortalVersion(manifest_key=None, artifact_count=None, **values)
        raise RuntimeError(f"could not claim a portal version for order {cfg_id} after {attempts} attempts")

    def record_publication(
        self, cfg_id: str, version: int, *, manifest_key: str, artifact_count: int
    ) -> None:
        statement = (
            update(portal_versions)
            .where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.version == version)
            .values(manifest_key=manifest_key, artifact_count=artifact_count)
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError((cfg_id, version))

    def portal_versions(self, cfg_id: str) -> list[PortalVersion]:
        """Every published version of the order, oldest first."""
        query = (
            select(portal_versions)
            .where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.manifest_key.is_not(None))
            .order_by(portal_versions.c.version)
        )
        with self._engine.connect() as connection:
            return [_to_version(row) for row in connection.execute(query)]

    def claim_email(self, cfg_id: str, version: int) -> bool:
        """True when this caller is the one to send the email of this version."""
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(delivery_emails).values(cfg_id=cfg_id, version=version, claimed_at=datetime.now(UTC))
                )
        except IntegrityError:
            return False
        return True

    def record_email_sent(self, cfg_id: str, version: int, message_id: str) -> None:
        statement = (
            update(delivery_emails)
            .where(delivery_emails.c.cfg_id == cfg_id, delivery_emails.c.version == version)
            .values(message_id=message_id, sent_at=datetime.now(UTC))
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def release_email_claim(self, cfg_id: str, version: int) -> None:
        """Give the claim back after SES refused the email, so a retry may send it."""
        statement = delete(delivery_emails).where(
            delivery_emails.c.cfg_id == cfg_id, delivery_emails.c.version == version, delivery_emails.c.sent_at.is_(None)
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def email_message_id(self, cfg_id: str, version: int) -> str | None:
        query = select(delivery_emails.c.message_id).where(
            delivery_emails.c.cfg_id == cfg_id, delivery_emails.c.version == version
        )
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def dispose(self) -> None:
        self._engine.dispose()

    def _version_of_run(self, cfg_id: str, run_id: str) -> PortalVersion | None:
        query = select(portal_versions).where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.run_id == run_id)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _to_version(row)
