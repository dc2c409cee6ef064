"""manifest.json: what one portal version delivers. Versioned; its JSON schema is published in the repo.

Stored (``portal/<cfg_id>/v<N>/manifest.json``, and in any copy of that folder) it holds only what
stays true: each artifact's kind, name, key, size and sha256. It is signed (``manifest.json.sig``
beside it), so the portal serves the stored bytes: an artifact's download link is its name beside
the manifest's URL, under the order's current token. Version 1 stored the links as well; such
manifests still read, their links dropped (a rotated token made them dead), and are served with
``url`` set to the current links. Version 3 added the SBOM and provenance artifacts and, in an
air-gap bundle's own manifest, ``bundle_files``: every other file of the bundle, so that nothing in
it but the signature and the public key is outside the signature.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.s3_layout import ArtifactName

MANIFEST_SCHEMA_VERSION: Final = 3

# "images": the edge images archive (docker save); "bundle": the air-gap bundle of the version;
# "sbom": the CycloneDX SBOM of what the site runs; "provenance": the signed in-toto statement
# tying the artifacts to their inputs.
ArtifactKind = Literal["edp", "cfn", "iso", "apk", "images", "sbom", "provenance", "bundle"]
# Written anew for each portal version (each names its version): a re-delivery of the same order
# carries the same other artifacts, byte for byte, and new ones of these kinds.
PER_VERSION_KINDS: Final[frozenset[str]] = frozenset({"sbom", "provenance", "bundle"})
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# A file of an air-gap bundle beside its artifacts: one segment, or one folder and a segment
# (``stack/compose.yaml``), each segment an artifact name (no dot-dot, no hidden files).
BUNDLE_PATH_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ManifestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestArtifact(ManifestModel):
    kind: ArtifactKind
    name: Annotated[
        ArtifactName,
        Field(
            description="File name, unique within the version: the file's path in a copy of the version folder"
        ),
    ]
    key: Annotated[str, Field(description="S3 key in the stage's artifact bucket")]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256
    url: Annotated[
        str | None,
        Field(
            description="Download link for the customer: only in a schema version 1 manifest as the portal serves it, never stored"
        ),
    ] = None


class BundleFile(ManifestModel):
    """A file of the air-gap bundle that is not an artifact of the version: its README, its page
    and the delivered stack (``stack/``). Listed so that every byte the site takes from the bundle
    is covered by the signature."""

    path: Annotated[
        str,
        Field(
            pattern=BUNDLE_PATH_PATTERN,
            description="Path inside the bundle's directory, '/' between a folder and the name",
        ),
    ]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256


class Manifest(ManifestModel):
    schema_version: Literal[1, 2, 3] = MANIFEST_SCHEMA_VERSION
    cfg_id: str
    version: Annotated[int, Field(ge=1)]
    created_at: datetime
    deployment_target: Literal["cloud", "onprem"]
    flags: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ManifestArtifact]
    apk_sbom: Annotated[
        Literal["included", "none published"] | None,
        Field(
            description="Whether the SBOM (kind sbom) holds the HMI APK's own SBOM: none when the HMI CI published none"
        ),
    ] = None
    bundle_files: list[BundleFile] = Field(
        default_factory=list,
        description="Only in an air-gap bundle's own manifest: its files beside the artifacts (README, page, stack)",
    )

    def as_stored(self) -> Manifest:
        """This manifest as it is stored now: the current schema version and no links."""
        return self.model_copy(
            update={
                "schema_version": MANIFEST_SCHEMA_VERSION,
                "artifacts": [a.model_copy(update={"url": None}) for a in self.artifacts],
            }
        )
