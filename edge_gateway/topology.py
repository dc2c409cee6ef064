"""Which topology the gateway runs: the DTM delivered with the stack, or one posted since.

A topology posted to ``POST /topology`` (commissioning) is written next to the database and wins
over ``DTM_PATH`` on every restart, as long as ``DTM_PATH`` still holds the file it was posted
over. A changed ``DTM_PATH`` means a newer delivery of the stack, and a newly engineered DTM
supersedes an older commissioning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from contracts.dtm import DeviceTopologyModel
from contracts.field_errors import field_errors
from service_kit.canonical_json import canonical_json

STORED_TOPOLOGY_NAME = "topology.json"
STORED_FORMAT = 1

log = logging.getLogger(__name__)

TopologySource = Literal["stored", "dtm_path", "none"]


class TopologyError(ValueError):
    """A topology file cannot be used; the message names the file and the fields."""


@dataclass(frozen=True)
class LoadedTopology:
    topology: DeviceTopologyModel | None
    source: TopologySource


def describe_validation_error(exc: ValidationError, data: Any) -> str:
    return "; ".join(f"{error['field']}: {error['message']}" for error in field_errors(exc, data))


def _parse_dtm(raw: bytes, origin: Path) -> DeviceTopologyModel:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopologyError(f"{origin} is not valid JSON: {exc}") from None
    try:
        return DeviceTopologyModel.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(f"{origin} is not a valid DTM: {describe_validation_error(exc, data)}") from None


def write_durably(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: after a crash the old file or the new one is
    there, whole, and once this returns the new one survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class TopologyStore:
    def __init__(self, data_dir: Path, dtm_path: Path | None) -> None:
        self.stored_path = data_dir / STORED_TOPOLOGY_NAME
        self.dtm_path = dtm_path
        self._delivered_sha256: str | None = None

    def load(self) -> LoadedTopology:
        """The topology to run at start; raises TopologyError rather than guess at a broken file."""
        delivered: bytes | None = None
        if self.dtm_path is not None:
            try:
                delivered = self.dtm_path.read_bytes()
            except FileNotFoundError:
                raise TopologyError(f"DTM_PATH {self.dtm_path} does not exist") from None
            self._delivered_sha256 = hashlib.sha256(delivered).hexdigest()

        if self.stored_path.is_file():
            stored, based_on = self._read_stored()
            if delivered is None or based_on == self._delivered_sha256:
                return LoadedTopology(stored, "stored")
            log.warning(
                "%s changed since the topology in %s was posted: running the newly delivered DTM",
                self.dtm_path,
                self.stored_path,
            )
        if delivered is not None and self.dtm_path is not None:
            return LoadedTopology(_parse_dtm(delivered, self.dtm_path), "dtm_path")
        return LoadedTopology(None, "none")

    def save(self, topology: DeviceTopologyModel) -> None:
        document = {
            "format": STORED_FORMAT,
            "stored_at": datetime.now(UTC).isoformat(),
            # Which delivered DTM this topology replaced: a different one at start supersedes it.
            "delivered_dtm_sha256": self._delivered_sha256,
            "topology": topology.model_dump(mode="json"),
        }
        write_durably(self.stored_path, canonical_json(document))

    def _read_stored(self) -> tuple[DeviceTopologyModel, str | None]:
        try:
            document = json.loads(self.stored_path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TopologyError(f"{self.stored_path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != STORED_FORMAT:
            raise TopologyError(f"{self.stored_path} is not a stored topology of format {STORED_FORMAT}")
        data = document.get("topology")
        try:
            topology = DeviceTopologyModel.model_validate(data)
        except ValidationError as exc:
            raise TopologyError(
                f"{self.stored_path} holds no valid DTM: {describe_validation_error(exc, data)}"
            ) from None
        based_on = document.get("delivered_dtm_sha256")
        return topology, based_on if isinstance(based_on, str) else None
