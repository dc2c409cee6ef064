"""platform_db: the orders store.

Every accepted order is committed here before the API answers; the Dagster sensors read it by
its monotonically increasing ``seq``. SQLAlchemy Core only, so the same code runs on SQLite
(local, demo) and PostgreSQL (beta); the schema lives in alembic migrations
(``python -m platform_db upgrade``).
"""

from platform_db.repository import IdempotencyConflict, OrderRepository

__all__ = ["IdempotencyConflict", "OrderRepository"]
