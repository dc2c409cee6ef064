"""``python -m api``: migrate platform_db and serve the API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app
from api.server import uvicorn_config
from platform_config.settings import ConfigError, load_settings
from platform_db import OrderRepository
from platform_db.migrate import upgrade


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    url = settings.platform_db_url()
    # Idempotent: a fresh database gets its schema, an older one is upgraded before serving.
    upgrade(url)
    app = create_app(settings, OrderRepository.from_url(url))
    uvicorn.Server(uvicorn_config(settings, app)).run()


if __name__ == "__main__":
    main()
