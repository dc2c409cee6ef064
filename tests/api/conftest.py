import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from platform_db import OrderRepository
from platform_db.migrate import upgrade
from resources.settings import Secrets, Settings, load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cloud_order() -> dict[str, Any]:
    return json.loads((EXAMPLES / "order-cloud.json").read_text())


@pytest.fixture
def onprem_order() -> dict[str, Any]:
    return json.loads((EXAMPLES / "order-onprem.json").read_text())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    local = load_settings("local", secrets_path=tmp_path / "none.env", environ={})
    return local.model_copy(
        update={
            "platform_db": local.platform_db.model_copy(update={"url": f"sqlite:///{tmp_path / 'platform.db'}"}),
            "portal": local.portal.model_copy(update={"local_key_file": str(tmp_path / "portal_token.key")}),
        }
    )


def build_client(settings: Settings) -> TestClient:
    upgrade(settings.platform_db_url())
    return TestClient(create_app(settings, OrderRepository.from_url(settings.platform_db_url())))


@pytest.fixture
def make_client() -> Callable[[Settings], TestClient]:
    return build_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with build_client(settings) as client:
        yield client


@pytest.fixture
def beta_client(settings: Settings) -> Iterator[TestClient]:
    guarded = settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"require_token": True}),
            "secrets": Secrets(API_TOKEN="the-token"),
        }
    )
    with build_client(guarded) as client:
        yield client
