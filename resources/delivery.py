"""Stage-wide values the delivery assets need, as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from contracts.fixtures import Fixture
from delivery.edge_bundle import EdgeImages
from industrial_fixtures import load_manifest


class DeliveryResource(ConfigurableResource):
    stage: str = Field(description="The stage (local, demo, beta).")
    edge_registry: str = Field(
        description="Registry the delivered stack pulls the edge images from ('': local names)."
    )
    release_version: str = Field(description="The platform's version, the tag of the edge images.")
    require_edge_images: bool = Field(
        default=False,
        description="An air-gap bundle without a published edge images archive fails instead of being built without it.",
    )

    def edge_images(self) -> EdgeImages:
        return EdgeImages.release(self.edge_registry, self.release_version)

    def industrial_fixtures(self) -> list[Fixture]:
        """The simulated devices every delivered stack declares (behind the ``fixtures`` profile)."""
        return load_manifest().fixtures
