from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DeviceTopologyModel
from edge_gateway.topology import STORED_TOPOLOGY_NAME, TopologyError, TopologyStore, write_durably
from tests.edge_gateway.conftest import device_document, dtm_document


def dtm(site: str = "Plant Nord", port: int | None = None) -> DeviceTopologyModel:
    return DeviceTopologyModel.model_validate(
        dtm_document([device_document("meter-1", list(POINT_CATALOG["power_meter"]), port=port)], site=site)
    )


def write_dtm(path: Path, topology: DeviceTopologyModel) -> Path:
    path.write_text(json.dumps(topology.model_dump(mode="json")))
    return path


def test_without_anything_stored_the_delivered_dtm_runs(tmp_path: Path) -> None:
    delivered = write_dtm(tmp_path / "dtm.json", dtm())
    loaded = TopologyStore(tmp_path / "data", delivered).load()
    assert (loaded.source, loaded.topology) == ("dtm_path", dtm())


def test_without_dtm_path_and_nothing_stored_there_is_no_topology(tmp_path: Path) -> None:
    loaded = TopologyStore(tmp_path / "data", None).load()
    assert (loaded.source, loaded.topology) == ("none", None)


def test_a_stored_topology_wins_over_the_same_delivered_dtm(tmp_path: Path) -> None:
    delivered = write_dtm(tmp_path / "dtm.json", dtm())
    store = TopologyStore(tmp_path / "data", delivered)
    store.load()
    store.save(dtm(port=1502))
    loaded = TopologyStore(tmp_path / "data", delivered).load()
    assert (loaded.source, loaded.topology) == ("stored", dtm(port=1502))


def test_a_newly_delivered_dtm_supersedes_an_older_stored_topology(tmp_path: Path) -> None:
    delivered = write_dtm(tmp_path / "dtm.json", dtm())
    store = TopologyStore(tmp_path / "data", delivered)
    store.load()
    store.save(dtm(port=1502))
    write_dtm(delivered, dtm(site="Plant Süd"))
    loaded = TopologyStore(tmp_path / "data", delivered).load()
    assert (loaded.source, loaded.topology) == ("dtm_path", dtm(site="Plant Süd"))


def test_a_broken_dtm_names_the_file_and_the_field(tmp_path: Path) -> None:
    document = dtm().model_dump(mode="json")
    document["devices"][0]["points"][0]["data_type"] = "float32"
    delivered = tmp_path / "dtm.json"
    delivered.write_text(json.dumps(document))
    with pytest.raises(
        TopologyError, match=rf"{delivered} is not a valid DTM: devices\[0\]\.points\[0\]\.data_type: "
    ):
        TopologyStore(tmp_path / "data", delivered).load()
    delivered.write_text("{not json")
    with pytest.raises(TopologyError, match="is not valid JSON"):
        TopologyStore(tmp_path / "data", delivered).load()
    with pytest.raises(TopologyError, match=r"DTM_PATH .* does not exist"):
        TopologyStore(tmp_path / "data", tmp_path / "missing.json").load()


def test_a_damaged_stored_topology_stops_the_start_instead_of_being_ignored(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / STORED_TOPOLOGY_NAME).write_text('{"format": 1, "topology": {"schema_version": 1}}')
    with pytest.raises(TopologyError, match=r"holds no valid DTM: site: Field required"):
        TopologyStore(tmp_path / "data", None).load()


def test_durable_write_replaces_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "topology.json"
    write_durably(target, b"first")
    write_durably(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["topology.json"]
