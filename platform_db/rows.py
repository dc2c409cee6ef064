"""Rows of platform_db read back into the records the repositories return."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Insert, Row

from service_kit.timestamps import as_utc

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def record_of(record: type[R], row: Row[Any], **converted: Any) -> R:
    """``record`` (a dataclass) from the row's columns of the same names, timestamps in UTC.

    ``converted`` gives the fields whose stored value is not the record's (an enum's value, a JSON
    list kept as a tuple, what is no column at all); columns the record has no field for are left out.
    """
    columns = row._mapping
    stored = {field.name: _read(columns[field.name]) for field in fields(record) if field.name in columns}
    return record(**{**stored, **converted})


def _read(value: Any) -> Any:
    return as_utc(value) if isinstance(value, datetime) else value


def inserted_id(connection: Connection, statement: Insert) -> int:
    """Run an INSERT of one row; the primary key the database gave it."""
    key = connection.execute(statement).inserted_primary_key
    if key is None:
        raise RuntimeError("the database gave the inserted row no primary key")
    return int(key[0])
