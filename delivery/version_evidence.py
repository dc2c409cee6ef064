"""What each portal version says about itself beside its artifacts: the SBOM and the provenance.

- ``sbom.cdx.json``: a CycloneDX 1.6 SBOM of what the site runs, the edge images' Debian and Python
  packages (from the SBOM the edge images' release published) and the HMI APK's own SBOM when its
  CI published one beside it (``apk/<name>-<version>.cdx.json``).
- ``provenance.intoto.jsonl``: an in-toto Statement v1 with a SLSA Provenance v1 predicate, one
  DSSE envelope signed with the manifest signing key. Its subjects are every artifact of the
  version (the SBOM included) with its sha256; its inputs the order's config, the EDP job and its
  dtm.json, the APK, the platform's version and source revision, and the images' digests.

Both are artifacts of the version like any other: listed in the signed manifest, in the air-gap
bundle, downloadable from the portal, and checked by ``portal_verify``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.manifest import ArtifactKind
from contracts.records import PortalVersion
from delivery.artifact_store import ArtifactStore, StoredObject, portal_key
from delivery.manifest_signing import ManifestSigner
from delivery.provenance import dsse_envelope, provenance_statement
from delivery.sbom import version_sbom

SBOM_NAME = "sbom.cdx.json"
PROVENANCE_NAME = "provenance.intoto.jsonl"
SBOM_CONTENT_TYPE = "application/vnd.cyclonedx+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
DSSE_CONTENT_TYPE = "application/vnd.dsse.envelope.v1+json"
# Where the HMI CI publishes an APK's own SBOM: beside the APK, ``.apk`` replaced.
APK_SBOM_SUFFIX = ".cdx.json"


def apk_sbom_key(apk_key: str) -> str:
    """``apk/<name>-<version>.cdx.json`` for ``apk/<name>-<version>.apk``."""
    return apk_key.removesuffix(".apk") + APK_SBOM_SUFFIX


@dataclass(frozen=True)
class EvidenceInputs:
    """What a version's SBOM and provenance are made of, gathered by the manifest step."""

    config: StoredObject
    edp_job_id: str
    dtm: StoredObject
    apk: StoredObject | None
    # The APK's own SBOM (CycloneDX JSON) when the HMI CI published one.
    apk_sbom: bytes | None
    # The edge images release's SBOM (CycloneDX JSON) when the images were released with one.
    edge_sbom: bytes | None
    # Image role ("gateway", "fixtures") -> the reference the delivered compose.yaml names.
    image_references: Mapping[str, str]
    platform_version: str
    source_revision: str
    run_ids: Sequence[str]
    builder_id: str


def store_version_evidence(
    *,
    store: ArtifactStore,
    cfg_id: str,
    claimed: PortalVersion,
    artifacts: Sequence[tuple[ArtifactKind, StoredObject]],
    inputs: EvidenceInputs,
    signer: ManifestSigner,
) -> list[tuple[ArtifactKind, StoredObject]]:
    """Store the version's SBOM and signed provenance next to its manifest; both as artifacts."""
    version = claimed.version
    sbom = version_sbom(
        cfg_id=cfg_id,
        version=version,
        created_at=claimed.created_at,
        edge_sbom=inputs.edge_sbom,
        apk_sbom=inputs.apk_sbom,
        apk_name=None if inputs.apk is None else inputs.apk.name,
    )
    stored_sbom = store.put(portal_key(cfg_id, version, SBOM_NAME), sbom, SBOM_CONTENT_TYPE)
    subjects = [(obj.name, obj.sha256) for _, obj in artifacts] + [(SBOM_NAME, stored_sbom.sha256)]
    statement = provenance_statement(
        subjects=subjects,
        cfg_id=cfg_id,
        version=version,
        created_at=claimed.created_at,
        config_sha256=inputs.config.sha256,
        edp_job_id=inputs.edp_job_id,
        dtm_sha256=inputs.dtm.sha256,
        apk_key=None if inputs.apk is None else inputs.apk.key,
        apk_sha256=None if inputs.apk is None else inputs.apk.sha256,
        platform_version=inputs.platform_version,
        source_revision=inputs.source_revision,
        image_references=inputs.image_references,
        run_ids=inputs.run_ids,
        builder_id=inputs.builder_id,
    )
    # One envelope on one line: the .intoto.jsonl form attestation tools read.
    envelope = dsse_envelope(statement, IN_TOTO_PAYLOAD_TYPE, signer).rstrip(b"\n") + b"\n"
    stored_provenance = store.put(portal_key(cfg_id, version, PROVENANCE_NAME), envelope, DSSE_CONTENT_TYPE)
    return [("sbom", stored_sbom), ("provenance", stored_provenance)]
