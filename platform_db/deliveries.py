r"""Portal versions and delivery emails in platform_db.

Both guard an effect a customer notices: a version number must grow by one per delivery (not per
retry), and an email must go out at most once per version (not once per retry).

An email's row (``delivery_emails``) is claimed before SES is called and records the outcome:

::

    (no row) --claim--> sending --SES answered MessageId--> sent
                          |  \--SES refused / unreachable--> (row deleted: a later attempt may send)
                          \--answer lost (or the sender died: a stale claim)--> unknown
    unknown --operator: mark_sent--> marked_sent
    unknown --operator: resend--> resend_requested --the email step claims it--> sending ...

Only an operator leaves ``unknown``: whether SES sent the email is not known, so sending it again
is a decision, never an automatic retry. Each resolution (``email_resolutions``) is stored with its
Idempotency-Key in the same transaction that changes the email's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from contracts.orders import EmailState
from contracts.records import DeliveryEmail, EmailAction, PortalVersion, SigningKey
from platform_db.claims import BackfillClaim
from platform_db.repository import check_idempotency_key, create_platform_db_engine
from platform_db.rows import as_utc, inserted_id, record_of
from platform_db.schema import delivery_emails, email_resolutions, portal_versions, signing_keys

# A ``sending`` claim older than this was left by a sender that stopped mid-send (its process died):
# its outcome is unknown. Far longer than one send may take (platform_config.settings.MAX_EMAIL_SEND_SECONDS).
STALE_SENDING = timedelta(minutes=10)
# A resend whose backfill launch never finished (or whose backfill never reached the email step)
# may be requested again after this long; a second backfill still sends at most once (the claim).
STALE_RESEND = timedelta(minutes=2)


@dataclass(frozen=True)
class EmailResolution(BackfillClaim):
    """An operator's resolution of one version's email, stored under its Idempotency-Key.

    Only a resend launches a backfill (of order/email); a mark_sent's ``backfill_id`` stays None.
    """

    version: int
    action: EmailAction


class ResolutionKeyTaken(Exception):
    """Another resolution was stored under this Idempotency-Key first (a concurrent request)."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__("this Idempotency-Key was already used for an email resolution")
        self.idempotency_key = idempotency_key


def _to_resolution(row: Row[Any]) -> EmailResolution:
    return record_of(EmailResolution, row, action=EmailAction(row.action))


def _to_version(row: Row[Any]) -> PortalVersion:
    return record_of(PortalVersion, row)


class DeliveryRepository:
    """Each method is one short transaction, committed before it returns."""

    def __init__(
        self,
        engine: Engine,
        *,
        stale_sending: timedelta = STALE_SENDING,
        stale_resend: timedelta = STALE_RESEND,
    ) -> None:
        self._engine = engine
        self._stale_sending = stale_sending
        self._stale_resend = stale_resend

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
            values: dict[str, Any] = {
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
        self,
        cfg_id: str,
        version: int,
        *,
        manifest_key: str,
        artifact_count: int,
        signing_key_id: str | None = None,
    ) -> None:
        statement = (
            update(portal_versions)
            .where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.version == version)
            .values(manifest_key=manifest_key, artifact_count=artifact_count, signing_key_id=signing_key_id)
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError((cfg_id, version))

    # --- yanked versions ------------------------------------------------------------------------

    def set_yank(self, cfg_id: str, version: int, reason: str | None) -> PortalVersion:
        """Yank a published version with ``reason`` (again: a new reason), or un-yank it (``None``).

        KeyError when the order has no such published version.
        """
        yanked_at = None if reason is None else datetime.now(UTC)
        published = and_(
            portal_versions.c.cfg_id == cfg_id,
            portal_versions.c.version == version,
            portal_versions.c.manifest_key.is_not(None),
        )
        statement = update(portal_versions).where(published).values(yanked_at=yanked_at, yank_reason=reason)
        if reason is not None:
            # A new reason keeps the time the version was first withdrawn.
            statement = statement.values(yanked_at=func.coalesce(portal_versions.c.yanked_at, yanked_at))
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError((cfg_id, version))
            row = connection.execute(select(portal_versions).where(published)).one()
        return _to_version(row)

    def claim_yank_notice(self, cfg_id: str, version: int) -> bool:
        """Claim the one email about this version's yank; False when it was claimed before."""
        statement = (
            update(portal_versions)
            .where(
                portal_versions.c.cfg_id == cfg_id,
                portal_versions.c.version == version,
                portal_versions.c.yanked_at.is_not(None),
                portal_versions.c.yank_notice_at.is_(None),
            )
            .values(yank_notice_at=datetime.now(UTC))
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def record_yank_notice(self, cfg_id: str, version: int, message_id: str | None) -> None:
        """SES took the yank email (``message_id``), or ``None``: give the claim back, nothing was sent."""
        values: dict[str, Any] = (
            {"yank_notice_message_id": message_id}
            if message_id is not None
            else {"yank_notice_at": None, "yank_notice_message_id": None}
        )
        statement = (
            update(portal_versions)
            .where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.version == version)
            .values(**values)
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    # --- manifest signing keys ------------------------------------------------------------------

    def record_signing_key(self, key_id: str, public_key_pem: str) -> None:
        """Keep a public key that signs manifests, once: it stays published after a rotation."""
        with self._engine.begin() as connection:
            known = connection.execute(
                select(signing_keys.c.key_id).where(signing_keys.c.key_id == key_id)
            ).one_or_none()
            if known is None:
                try:
                    with connection.begin_nested():
                        connection.execute(
                            insert(signing_keys).values(
                                key_id=key_id, public_key_pem=public_key_pem, first_used_at=datetime.now(UTC)
                            )
                        )
                except IntegrityError:
                    pass  # another publication recorded it first

    def revoke_signing_key(self, key_id: str, *, revoked_at: datetime, reason: str) -> SigningKey | None:
        """Revoke a key from ``revoked_at`` on (the moment it may have leaked, or now); the key as
        revoked, or ``None`` for an unknown key. An earlier revocation stands: its moment only moves back."""
        with self._engine.begin() as connection:
            row = connection.execute(
                select(signing_keys).where(signing_keys.c.key_id == key_id)
            ).one_or_none()
            if row is None:
                return None
            known = record_of(SigningKey, row)
            if known.revoked_at is None or revoked_at < known.revoked_at:
                connection.execute(
                    update(signing_keys)
                    .where(signing_keys.c.key_id == key_id)
                    .values(revoked_at=revoked_at, revocation_reason=reason)
                )
            row = connection.execute(select(signing_keys).where(signing_keys.c.key_id == key_id)).one()
            return record_of(SigningKey, row)

    def newest_signing_key_id(self) -> str | None:
        """The key that signed the most recently published version of any order."""
        query = (
            select(portal_versions.c.signing_key_id)
            .where(portal_versions.c.signing_key_id.is_not(None))
            .order_by(portal_versions.c.created_at.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def signing_keys(self) -> list[SigningKey]:
        """Every public key that signed a manifest, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(signing_keys).order_by(signing_keys.c.first_used_at))
            return [record_of(SigningKey, row) for row in rows]

    def portal_versions(self, cfg_id: str) -> list[PortalVersion]:
        """Every published version of the order, oldest first."""
        query = (
            select(portal_versions)
            .where(portal_versions.c.cfg_id == cfg_id, portal_versions.c.manifest_key.is_not(None))
            .order_by(portal_versions.c.version)
        )
        with self._engine.connect() as connection:
            return [_to_version(row) for row in connection.execute(query)]

    # --- delivery emails ------------------------------------------------------------------------

    def claim_email(self, cfg_id: str, version: int) -> bool:
        """True when this caller is the one to send the email of this version (state ``sending``).

        A version nobody claimed yet is inserted; one an operator released for a resend
        (``resend_requested``) is taken over by one conditional UPDATE. Anything else is False.
        """
        now = datetime.now(UTC)
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(delivery_emails).values(
                        cfg_id=cfg_id, version=version, claimed_at=now, state=EmailState.SENDING.value
                    )
                )
        except IntegrityError:
            statement = (
                update(delivery_emails)
                .where(
                    *self._email(cfg_id, version),
                    delivery_emails.c.state == EmailState.RESEND_REQUESTED.value,
                )
                .values(
                    state=EmailState.SENDING.value, claimed_at=now, message_id=None, sent_at=None, reason=None
                )
            )
            with self._engine.begin() as connection:
                return bool(connection.execute(statement).rowcount)
        return True

    def record_email_sent(self, cfg_id: str, version: int, message_id: str) -> None:
        """SES accepted the email as ``message_id``: state ``sent``.

        Also from ``unknown``: the sender knows better than whoever declared its claim stale.
        """
        statement = (
            update(delivery_emails)
            .where(
                *self._email(cfg_id, version),
                delivery_emails.c.state.in_([EmailState.SENDING.value, EmailState.UNKNOWN.value]),
            )
            .values(
                message_id=message_id, sent_at=datetime.now(UTC), state=EmailState.SENT.value, reason=None
            )
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def release_email_claim(self, cfg_id: str, version: int) -> None:
        """Give the claim back after SES refused the email (or was unreachable), so a retry may send it.

        Only a claim still ``sending``: an unknown, sent or resolved email is never released here.
        """
        statement = delete(delivery_emails).where(
            *self._email(cfg_id, version), delivery_emails.c.state == EmailState.SENDING.value
        )
        with self._engine.begin() as connection:
            connection.execute(statement)

    def mark_unknown(self, cfg_id: str, version: int, reason: str, *, stale_only: bool = False) -> bool:
        """The request may have reached SES but its answer was lost: ``sending`` -> ``unknown``.

        ``stale_only``: only a claim older than ``stale_sending`` (its sender died mid-send), never
        one whose sender may still be waiting for SES. Returns whether the email changed.
        """
        conditions = [*self._email(cfg_id, version), delivery_emails.c.state == EmailState.SENDING.value]
        if stale_only:
            conditions.append(delivery_emails.c.claimed_at < datetime.now(UTC) - self._stale_sending)
        statement = (
            update(delivery_emails).where(*conditions).values(state=EmailState.UNKNOWN.value, reason=reason)
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def mark_sent_by_operator(
        self, cfg_id: str, version: int, idempotency_key: str | None = None
    ) -> EmailResolution | None:
        """An operator confirmed the customer got the email: ``marked_sent``.

        From ``unknown`` (a stale ``sending`` counts as unknown) or ``resend_requested`` (the resend
        is then never sent: the email step finds it marked sent). The resolution is stored in the
        same transaction. None when the email is in no such state; :class:`ResolutionKeyTaken` when
        a concurrent request stored ``idempotency_key`` first.
        """
        resolvable = or_(self._unknown(), delivery_emails.c.state == EmailState.RESEND_REQUESTED.value)
        return self._resolve(
            cfg_id, version, EmailAction.MARK_SENT, EmailState.MARKED_SENT, resolvable, idempotency_key
        )

    def release_for_resend(
        self, cfg_id: str, version: int, idempotency_key: str | None = None
    ) -> EmailResolution | None:
        """An operator decided to send it again: ``resend_requested``, for the email step to claim.

        From ``unknown`` (a stale ``sending`` counts as unknown), or ``resend_requested`` once the
        earlier request is older than ``stale_resend`` (its backfill did not get to send it). The
        resolution is stored in the same transaction; record its backfill with
        :meth:`record_resend_backfill`, or :meth:`undo_resend` when the launch failed. None when
        the email is in no such state; :class:`ResolutionKeyTaken` as in :meth:`mark_sent_by_operator`.
        """
        resolvable = or_(
            self._unknown(),
            and_(
                delivery_emails.c.state == EmailState.RESEND_REQUESTED.value,
                delivery_emails.c.resolved_at < datetime.now(UTC) - self._stale_resend,
            ),
        )
        return self._resolve(
            cfg_id, version, EmailAction.RESEND, EmailState.RESEND_REQUESTED, resolvable, idempotency_key
        )

    def record_resend_backfill(self, resolution_id: int, backfill_id: str) -> EmailResolution:
        statement = (
            update(email_resolutions)
            .where(email_resolutions.c.id == resolution_id)
            .values(backfill_id=backfill_id)
        )
        with self._engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise KeyError(resolution_id)
            row = connection.execute(
                select(email_resolutions).where(email_resolutions.c.id == resolution_id)
            ).one()
        return _to_resolution(row)

    def undo_resend(self, resolution_id: int) -> None:
        """The resend's backfill was not launched: the email is ``unknown`` again, the key free again."""
        with self._engine.begin() as connection:
            row = connection.execute(
                select(email_resolutions).where(
                    email_resolutions.c.id == resolution_id, email_resolutions.c.backfill_id.is_(None)
                )
            ).one_or_none()
            if row is None:
                return
            connection.execute(
                update(delivery_emails)
                .where(
                    *self._email(row.cfg_id, row.version),
                    delivery_emails.c.state == EmailState.RESEND_REQUESTED.value,
                )
                .values(state=EmailState.UNKNOWN.value, resolution=None, resolved_at=None)
            )
            connection.execute(delete(email_resolutions).where(email_resolutions.c.id == resolution_id))

    def forget_stale_resolution(self, resolution_id: int) -> bool:
        """Drop a resend whose launch never finished (no backfill after ``stale_resend``), freeing its key."""
        statement = delete(email_resolutions).where(
            email_resolutions.c.id == resolution_id,
            email_resolutions.c.backfill_id.is_(None),
            email_resolutions.c.created_at < datetime.now(UTC) - self._stale_resend,
        )
        with self._engine.begin() as connection:
            return bool(connection.execute(statement).rowcount)

    def email_of(self, cfg_id: str, version: int) -> DeliveryEmail | None:
        """The email of one portal version; None when it was never claimed (or its claim was released)."""
        query = select(delivery_emails).where(*self._email(cfg_id, version))
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else self._to_email(row)

    def emails(self, cfg_id: str) -> dict[int, DeliveryEmail]:
        """The emails of every version of the order, by version."""
        query = (
            select(delivery_emails)
            .where(delivery_emails.c.cfg_id == cfg_id)
            .order_by(delivery_emails.c.version)
        )
        with self._engine.connect() as connection:
            return {row.version: self._to_email(row) for row in connection.execute(query)}

    def unknown_emails(self, cfg_id: str | None = None) -> list[DeliveryEmail]:
        """Every email whose outcome is unknown (``unknown`` or a stale ``sending``), oldest claim first."""
        query = select(delivery_emails).where(self._unknown()).order_by(delivery_emails.c.claimed_at)
        if cfg_id is not None:
            query = query.where(delivery_emails.c.cfg_id == cfg_id)
        with self._engine.connect() as connection:
            return [self._to_email(row) for row in connection.execute(query)]

    def email_message_id(self, cfg_id: str, version: int) -> str | None:
        query = select(delivery_emails.c.message_id).where(*self._email(cfg_id, version))
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    # --- resolutions ----------------------------------------------------------------------------

    def resolution_by_key(self, idempotency_key: str) -> EmailResolution | None:
        query = select(email_resolutions).where(email_resolutions.c.idempotency_key == idempotency_key)
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _to_resolution(row)

    def resolutions(self, cfg_id: str, version: int | None = None) -> list[EmailResolution]:
        """The order's resolutions (of one version), oldest first."""
        query = (
            select(email_resolutions)
            .where(email_resolutions.c.cfg_id == cfg_id)
            .order_by(email_resolutions.c.id)
        )
        if version is not None:
            query = query.where(email_resolutions.c.version == version)
        with self._engine.connect() as connection:
            return [_to_resolution(row) for row in connection.execute(query)]

    def dispose(self) -> None:
        self._engine.dispose()

    @staticmethod
    def _email(cfg_id: str, version: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        return delivery_emails.c.cfg_id == cfg_id, delivery_emails.c.version == version

    def _stale_cutoff(self) -> datetime:
        return datetime.now(UTC) - self._stale_sending

    def _unknown(self) -> ColumnElement[bool]:
        """``unknown``, or ``sending`` for longer than a sender may take."""
        return or_(
            delivery_emails.c.state == EmailState.UNKNOWN.value,
            and_(
                delivery_emails.c.state == EmailState.SENDING.value,
                delivery_emails.c.claimed_at < self._stale_cutoff(),
            ),
        )

    def _to_email(self, row: Row[Any]) -> DeliveryEmail:
        claimed_at = as_utc(row.claimed_at)
        state = EmailState(row.state)
        return record_of(
            DeliveryEmail,
            row,
            state=state,
            resolution=EmailAction(row.resolution) if row.resolution else None,
            stale=state is EmailState.SENDING and claimed_at < self._stale_cutoff(),
        )

    def _resolve(
        self,
        cfg_id: str,
        version: int,
        action: EmailAction,
        to: EmailState,
        resolvable: ColumnElement[bool],
        idempotency_key: str | None,
    ) -> EmailResolution | None:
        check_idempotency_key(idempotency_key)
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "idempotency_key": idempotency_key,
            "cfg_id": cfg_id,
            "version": version,
            "action": action.value,
            "backfill_id": None,
            "created_at": now,
        }
        try:
            with self._engine.begin() as connection:
                if not self._change_state(connection, cfg_id, version, resolvable, to, action, now):
                    return None
                resolution_id = inserted_id(connection, insert(email_resolutions).values(**values))
        except IntegrityError:
            # Only the key is unique: a concurrent request stored it first; the state change rolled back.
            if idempotency_key is None:
                raise
            raise ResolutionKeyTaken(idempotency_key) from None
        return EmailResolution(id=resolution_id, **{**values, "action": action})

    @staticmethod
    def _change_state(
        connection: Connection,
        cfg_id: str,
        version: int,
        resolvable: ColumnElement[bool],
        to: EmailState,
        action: EmailAction,
        now: datetime,
    ) -> bool:
        statement = (
            update(delivery_emails)
            .where(*DeliveryRepository._email(cfg_id, version), resolvable)
            .values(state=to.value, resolution=action.value, resolved_at=now)
        )
        return bool(connection.execute(statement).rowcount)

    def _version_of_run(self, cfg_id: str, run_id: str) -> PortalVersion | None:
        query = select(portal_versions).where(
            portal_versions.c.cfg_id == cfg_id, portal_versions.c.run_id == run_id
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        return None if row is None else _to_version(row)
