"""``python -m platform_db upgrade``: migrate the stage's platform_db to the newest schema."""

from __future__ import annotations

import argparse
import logging
import sys

from sqlalchemy.exc import SQLAlchemyError

from platform_config.settings import ConfigError, load_settings
from platform_db.migrate import current_revision, upgrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m platform_db", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="apply every pending migration (ENV selects the stage)")
    parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    url = settings.platform_db_url()
    # alembic reports each migration it applies through logging.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shown = url.render_as_string(hide_password=True)
    print(f"upgrading platform_db at {shown}")
    try:
        upgrade(url)
        revision = current_revision(url)
    except SQLAlchemyError as exc:
        # One line naming the database is what an operator needs; drivers keep passwords out of it.
        print(f"platform_db at {shown} could not be upgraded: {exc}", file=sys.stderr)
        return 1
    print(f"platform_db at {shown} is at revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
