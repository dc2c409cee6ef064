"""Taking over a finished EDP job's artifacts: verified, stored, and the DTM validated."""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.dtm import DeviceTopologyModel
from contracts.edp import EdpArtifact, EdpJob
from delivery.artifact_store import ArtifactStore, StoredObject, order_key, sha256_hex
from delivery.edp_artifact_policy import DTM_NAME, ByteLimit, EdpArtifactError, EdpArtifactPolicy

# The artifact and the most bytes it may have -> its bytes (EdpArtifactDownloader.download).
Download = Callable[[EdpArtifact, ByteLimit], bytes]

__all__ = ["DTM_NAME", "Download", "EdpArtifactError", "EdpArtifacts", "parse_dtm", "take_over_edp_artifacts"]


class EdpArtifacts(BaseModel):
    """What ``edp_artifacts`` hands on: the stored copies and EDP's flags."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    flags: dict[str, object]
    objects: list[StoredObject]

    @property
    def dtm(self) -> StoredObject:
        return next(obj for obj in self.objects if obj.name == DTM_NAME)


def parse_dtm(data: bytes) -> DeviceTopologyModel:
    try:
        return DeviceTopologyModel.model_validate(json.loads(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdpArtifactError(f"{DTM_NAME} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise EdpArtifactError(f"{DTM_NAME} is not a valid device topology model: {problems}") from None


def take_over_edp_artifacts(
    *,
    cfg_id: str,
    job_id: str,
    job: EdpJob,
    policy: EdpArtifactPolicy,
    download: Download,
    store: ArtifactStore,
) -> EdpArtifacts:
    """Copy every artifact of a complete job into ``orders/<cfg_id>/edp/`` with its sha256, under ``policy``."""
    if job.status != "complete":
        raise EdpArtifactError(f"EDP job {job_id} is {job.status}, not complete")
    names = [artifact.name for artifact in job.edp_artifacts]
    if DTM_NAME not in names:
        raise EdpArtifactError(
            f"EDP job {job_id} delivered no {DTM_NAME} (artifacts: {', '.join(names) or 'none'})"
        )
    # The whole list first: a job the policy refuses leaves nothing fetched and nothing stored.
    policy.check_listing(job_id, job.edp_artifacts)
    objects: list[StoredObject] = []
    job_bytes = 0
    for artifact in job.edp_artifacts:
        limit = policy.byte_limit(artifact.name, job_bytes)
        data = download(artifact, limit)
        # The downloader stops at the limit already; this holds for any download function.
        if len(data) > limit.max_bytes:
            raise limit.refusal(artifact.name)
        job_bytes += len(data)
        if artifact.sha256 is not None and sha256_hex(data) != artifact.sha256:
            raise EdpArtifactError(f"EDP artifact {artifact.name}: sha256 does not match what EDP announced")
        if artifact.name == DTM_NAME:
            parse_dtm(data)
        content_type = "application/json" if artifact.name.endswith(".json") else "application/octet-stream"
        objects.append(store.put(order_key(cfg_id, "edp", artifact.name), data, content_type))
    return EdpArtifacts(job_id=job_id, flags=dict(job.flags), objects=objects)
