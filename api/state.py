"""What the API's endpoints share: settings and the order repository."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from platform_db import OrderRepository
from resources.settings import Settings


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    orders: OrderRepository

    @property
    def bearer_token(self) -> SecretStr | None:
        return self.settings.secrets.API_TOKEN if self.settings.api.require_token else None
