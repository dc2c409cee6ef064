"""Fixtures for the platform_db tests.

Each test gets a fresh SQLite file. ``PLATFORM_DB_TEST_URL`` points the same tests at another
database instead (e.g. a scratch PostgreSQL); it is emptied to the base revision first.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import pytest

from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.migrate import downgrade, upgrade

# The project's example order, as the website would submit it.
EXAMPLE_ORDER = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
EXAMPLE_PAYLOAD: dict[str, Any] = json.loads(EXAMPLE_ORDER.read_text())


class Repository(Protocol):
    @classmethod
    def from_url(cls, url: str) -> Self: ...

    def dispose(self) -> None: ...


R = TypeVar("R", bound=Repository)


class Connect(Protocol):
    def __call__(self, repository_type: type[R]) -> R: ...


@pytest.fixture
def make_payload() -> Callable[..., ConfiguratorPayload]:
    """A valid payload; keyword arguments replace top-level fields of the example."""

    def make(**overrides: Any) -> ConfiguratorPayload:
        data = copy.deepcopy(EXAMPLE_PAYLOAD)
        data.update(overrides)
        return ConfiguratorPayload.model_validate(data)

    return make


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A database without any schema."""
    external = os.environ.get("PLATFORM_DB_TEST_URL")
    if external:
        downgrade(external, "base")
        return external
    return f"sqlite:///{tmp_path / 'db' / 'platform.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests of SQLite's own set-up, whatever PLATFORM_DB_TEST_URL says."""
    return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'platform.db'}"


@pytest.fixture
def migrated_url(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def connect(migrated_url: str) -> Iterator[Connect]:
    """Open a repository on its own engine, as a separate process (an API worker, a Dagster run) would.

    Every repository opened is disposed after the test.
    """
    opened: list[Repository] = []

    def open_repository(repository_type: type[R]) -> R:
        repository = repository_type.from_url(migrated_url)
        opened.append(repository)
        return repository

    yield open_repository
    for repository in opened:
        repository.dispose()


@pytest.fixture
def repo(connect: Connect) -> OrderRepository:
    return connect(OrderRepository)


@pytest.fixture
def new_order(repo: OrderRepository, make_payload: Callable[..., ConfiguratorPayload]) -> Callable[[], str]:
    """Store an order (the other tables refer to it) and return its cfg_id."""

    def make() -> str:
        order, _ = repo.submit(make_payload(), None)
        return order.cfg_id

    return make
