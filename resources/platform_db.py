"""platform_db as a Dagster resource."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy.engine import make_url

from platform_config.settings import load_secrets
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.downloads import DownloadRepository
from platform_db.order_retries import OrderRetryRepository
from platform_db.repository import create_platform_db_engine


@dataclass(frozen=True)
class _Repositories:
    orders: OrderRepository
    deliveries: DeliveryRepository
    order_retries: OrderRetryRepository
    downloads: DownloadRepository


class PlatformDbResource(ConfigurableResource):
    """Orders, portal versions, delivery emails and the portal's download record.

    The URL carries no password: it would show in the Dagster UI. PLATFORM_DB_PASSWORD is read
    from secrets.env (or the environment) when the resource starts.
    """

    url: str = Field(description="SQLAlchemy URL of platform_db, without password.")

    _repositories: _Repositories | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        url = make_url(self.url)
        password = load_secrets().PLATFORM_DB_PASSWORD
        if password is not None and url.host:
            url = url.set(password=password.get_secret_value())
        engine = create_platform_db_engine(url)
        self._repositories = _Repositories(
            orders=OrderRepository(engine),
            deliveries=DeliveryRepository(engine),
            order_retries=OrderRetryRepository(engine),
            downloads=DownloadRepository(engine),
        )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # The repositories share one engine: disposing it once closes every connection.
        if self._repositories is not None:
            self._repositories.orders.dispose()

    @property
    def orders(self) -> OrderRepository:
        return self._started().orders

    @property
    def order_retries(self) -> OrderRetryRepository:
        return self._started().order_retries

    @property
    def deliveries(self) -> DeliveryRepository:
        return self._started().deliveries

    @property
    def downloads(self) -> DownloadRepository:
        """The portal's download record."""
        return self._started().downloads

    def _started(self) -> _Repositories:
        if self._repositories is None:
            raise RuntimeError("PlatformDbResource used outside of a run or sensor")
        return self._repositories
