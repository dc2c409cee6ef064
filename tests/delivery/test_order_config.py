from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.configurator import ConfiguratorPayload
from delivery.order_config import canonical_config_json

CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"


def example_data() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_same_order_gives_identical_bytes() -> None:
    first = canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(example_data()))
    second = canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(example_data()))

    assert first == second


def test_key_order_of_the_submitted_json_does_not_change_the_bytes() -> None:
    data = example_data()
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["customer"] = {key: data["customer"][key] for key in reversed(list(data["customer"]))}
    reordered["options"] = {key: data["options"][key] for key in reversed(list(data["options"]))}

    assert canonical_config_json(
        CFG_ID, ConfiguratorPayload.model_validate(reordered)
    ) == canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(data))


def test_document_holds_cfg_id_and_the_validated_order() -> None:
    order = ConfiguratorPayload.model_validate(example_data())

    document = json.loads(canonical_config_json(CFG_ID, order))

    assert document["cfg_id"] == CFG_ID
    assert ConfiguratorPayload.model_validate(document["order"]) == order
    assert document["order"]["deployment"]["region"] == "eu-central-1"
    assert [device["id"] for device in document["order"]["devices"]] == ["meter-main", "pv-roof", "battery-1"]


def test_different_cfg_id_or_order_gives_different_bytes() -> None:
    order = ConfiguratorPayload.model_validate(example_data())
    other = example_data()
    other["site"]["name"] = "Plant Süd"

    base = canonical_config_json(CFG_ID, order)
    assert canonical_config_json("9d1c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e", order) != base
    assert canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(other)) != base


def test_non_ascii_text_is_kept_as_utf8_not_escaped() -> None:
    data = example_data()
    data["customer"]["name"] = "Jürgen Weiß"
    data["site"]["name"] = "Werk Köln – Halle 3 東京"

    raw = canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(data))

    text = raw.decode("utf-8")
    assert "Jürgen Weiß" in text
    assert "Werk Köln – Halle 3 東京" in text
    assert "\\u" not in text
    assert json.loads(raw)["order"]["site"]["name"] == "Werk Köln – Halle 3 東京"


def test_ends_with_one_newline() -> None:
    raw = canonical_config_json(CFG_ID, ConfiguratorPayload.model_validate(example_data()))

    assert raw.endswith(b"}\n")
    assert not raw.endswith(b"\n\n")
