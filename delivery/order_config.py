"""The order's canonical configuration, as stored next to its artifacts."""

from __future__ import annotations

from contracts.configurator import ConfiguratorPayload
from service_kit.canonical_json import canonical_json


def canonical_config_json(cfg_id: str, order: ConfiguratorPayload) -> bytes:
    """config.json: the order as validated, with its cfg_id; byte-stable for the same order."""
    document = {"cfg_id": cfg_id, "order": order.model_dump(mode="json")}
    return canonical_json(document)
