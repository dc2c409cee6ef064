"""Moments as UTC, whatever store or library handed them over."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    # A moment without a zone was written by the platform itself, which works in UTC throughout
    # (SQLite, for one, stores no offset and hands back naive values).
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
