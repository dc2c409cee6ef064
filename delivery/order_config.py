"""The order's canonical configuration, as stored next to its artifacts."""

from __future__ import annotations

import json

from contracts.configurator import ConfiguratorPayload


def canonical_config_json(cfg_id: str, order: ConfiguratorPayload) -> bytes:
    """config.json: the order as validated, with its cfg_id; byte-stable for the same order."""
    document = {"cfg_id": cfg_id, "order": order.model_dump(mode="json")}
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
