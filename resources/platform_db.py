"""platform_db as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy.engine import make_url

from platform_config.settings import load_secrets
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.order_retries import OrderRetryRepository
from platform_db.repository import create_platform_db_engine


class PlatformDbResource(ConfigurableResource):
    """Orders, portal versions and delivery emails.

    The URL carries no password: it would show in the Dagster UI. PLATFORM_DB_PASSWORD is read
    from secrets.env (or the environment) when the resource starts.
    """

    url: str = Field(description="SQLAlchemy URL of platform_db, without password.")

    _orders: OrderRepository | None = PrivateAttr(default=None)
    _deliveries: DeliveryRepository | None = PrivateAttr(default=None)
    _order_retries: OrderRetryRepository | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = make_url(self.url)
        password = load_secrets().PLATFORM_DB_PASSWORD
        if password is not None and url.host:
            url = url.set(password=password.get_secret_value())
        engine = create_platform_db_engine(url)
        self._orders = OrderRepository(engine)
        self._deliveries = DeliveryRepository(engine)
        self._order_retries = OrderRetryRepository(engine)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._orders is not None:
            self._orders.dispose()

    @property
    def orders(self) -> OrderRepository:
        if self._orders is None:
            raise RuntimeError("PlatformDbResource used outside of a run or sensor")
        return self._orders

    @property
    def order_retries(self) -> OrderRetryRepository:
        if self._order_retries is None:
            raise RuntimeError("PlatformDbResource used outside of a run or sensor")
        return self._order_retries

    @property
    def deliveries(self) -> DeliveryRepository:
        if self._deliveries is None:
            raise RuntimeError("PlatformDbResource used outside of a run or sensor")
        return self._deliveries
