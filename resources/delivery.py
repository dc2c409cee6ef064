"""Stage-wide values the delivery assets need, as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from contracts.fixtures import Fixture
from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import EdgeImages
from delivery.edge_release import EdgeRelease, load_edge_release, release_sbom, released_edge_images
from delivery.redelivery_limits import RedeliveryLimits
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
    max_redeliveries_per_order: int = Field(
        default=20,
        description="Portal versions after an order's first at most (api.max_redeliveries_per_order).",
    )
    max_redeliveries_per_order_per_day: int = Field(
        default=5,
        description="Portal versions after an order's first within 24 hours at most (api.max_redeliveries_per_order_per_day).",
    )
    max_redelivery_backfill_orders: int = Field(
        default=10,
        description="Orders a backfill re-delivers to without the confirmation tag (pipeline.max_redelivery_backfill_orders).",
    )

    def redelivery_limits(self) -> RedeliveryLimits:
        return RedeliveryLimits(
            per_order=self.max_redeliveries_per_order,
            per_order_per_day=self.max_redeliveries_per_order_per_day,
            fleet_backfill_orders=self.max_redelivery_backfill_orders,
        )

    def edge_release(self, store: ArtifactStore) -> EdgeRelease | None:
        """The release record of the platform's version in the stage's bucket, if the images were released."""
        return load_edge_release(store, self.release_version)

    def edge_images(self, store: ArtifactStore | None = None) -> EdgeImages:
        """The images delivered stacks name: pinned by digest when ``store`` holds the version's
        release record, else the plain tags (without a store, or before a release)."""
        release = None if store is None else self.edge_release(store)
        return released_edge_images(release, self.edge_registry, self.release_version)

    def image_references(self, store: ArtifactStore) -> dict[str, str]:
        """Image role -> the reference a delivered compose.yaml names (for the version's provenance)."""
        images = self.edge_images(store)
        return {"gateway": images.gateway, "fixtures": images.fixtures}

    def edge_sbom(self, store: ArtifactStore) -> bytes | None:
        """The SBOM the edge images' release published (CycloneDX JSON); None without one."""
        release = self.edge_release(store)
        return None if release is None else release_sbom(store, release)

    def industrial_fixtures(self) -> list[Fixture]:
        """The simulated devices every delivered stack declares (behind the ``fixtures`` profile)."""
        return load_manifest().fixtures
