"""Stage-wide values the delivery assets need, as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from delivery.edge_bundle import EdgeImages


class DeliveryResource(ConfigurableResource):
    stage: str = Field(description="The stage (local, demo, beta).")
    gateway_image: str = Field(description="Image of the edge gateway the delivered stack runs.")

    def edge_images(self) -> EdgeImages:
        return EdgeImages(gateway=self.gateway_image)
