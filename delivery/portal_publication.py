"""Publishing one portal version of an order: the signed manifest.json, its page and the order's index.

What is stored holds no link under the customer's token (the token rotates): the manifest lists
each artifact's name, key, size and sha256, and the pages link relatively (``FolderLinks``). The
API renders the pages with the links (``api.portal``) and serves manifest.json as stored: it is signed.

Each version folder holds ``manifest.json``, ``manifest.json.sig`` (Ed25519 over the exact bytes
of manifest.json) and ``signing-key.pem`` (the public key that signed), so a copy of the folder can
be checked offline with openssl alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from contracts.records import PortalVersion, SigningKey, current_version
from delivery.airgap import bundle_problems
from delivery.artifact_checks import manifest_artifact_problems
from delivery.artifact_store import ArtifactStore, StoredObject, portal_key
from delivery.manifest_signing import PUBLIC_KEY_NAME, SIGNATURE_NAME, ManifestSigner, fingerprint_of
from delivery.portal import (
    MANIFEST_NAME,
    PAGE_NAME,
    FolderLinks,
    PageLinks,
    PortalVersionSummary,
    SigningInfo,
    manifest_json,
    render_portal_index,
    render_version_page,
)
from delivery.portal_links import PortalLinks
from delivery.version_evidence import EvidenceInputs, store_version_evidence

HTML = "text/html; charset=utf-8"


class PortalVersions(Protocol):
    """Where an order's portal versions are numbered (``platform_db.deliveries.DeliveryRepository``)."""

    def claim_portal_version(self, cfg_id: str, run_id: str) -> PortalVersion: ...
    def portal_versions(self, cfg_id: str) -> Sequence[PortalVersion]: ...
    def record_publication(
        self, cfg_id: str, version: int, *, manifest_key: str, artifact_count: int, signing_key_id: str | None
    ) -> None: ...
    def record_signing_key(self, key_id: str, public_key_pem: str) -> None: ...
    def signing_keys(self) -> Sequence[SigningKey]: ...


class BundleBuilder(Protocol):
    """Builds a version's air-gap bundle (``delivery.airgap_publication``)."""

    def extra_artifacts(self) -> Sequence[tuple[ArtifactKind, StoredObject]]:
        """What the bundle adds to the version beside the bundle itself (the edge images archive)."""
        ...

    def build(self, *, claimed: PortalVersion, manifest: Manifest, signer: ManifestSigner) -> StoredObject:
        """The bundle, stored: ``manifest``'s artifacts and its own signed manifest of everything in it."""
        ...


class PublicationRefused(Exception):
    """A version failed a check before it was listed: nothing of it is visible or emailed.

    The message names each file that failed; it is the order's error as the operator reads it.
    """

    def __init__(self, cfg_id: str, version: int, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"portal version {version} of order {cfg_id} was not published: " + "; ".join(self.problems[:5])
        )


class SigningKeyRevoked(Exception):
    """MANIFEST_SIGNING_KEY holds a key that was revoked: nothing is signed with it any more."""


class PortalPublication(BaseModel):
    """What ``manifest`` hands on to ``email``: the published version, and no link under the token
    (the email step makes the order's link when it sends: the token may be rotated in between)."""

    model_config = ConfigDict(frozen=True)

    cfg_id: str
    version: int
    manifest_key: str
    manifest: Manifest
    signing_key_id: str | None = None
    # The air-gap bundle's key when the version has one.
    bundle_key: str | None = None


def summary_of(version: PortalVersion, links: PageLinks) -> PortalVersionSummary:
    return PortalVersionSummary(
        version=version.version,
        created_at=version.created_at,
        artifact_count=version.artifact_count or 0,
        page_url=links.version_page(version.version),
        yanked_at=version.yanked_at,
        yank_reason=version.yank_reason,
    )


def history_of(published: Sequence[PortalVersion], links: PageLinks) -> list[PortalVersionSummary]:
    return [summary_of(version, links) for version in published]


def signing_info(version: PortalVersion, keys: Sequence[SigningKey]) -> SigningInfo | None:
    """How the version's manifest was signed; ``None`` for a version published before signing."""
    key = next((k for k in keys if k.key_id == version.signing_key_id), None)
    if key is None:
        return None
    return SigningInfo(key_id=key.key_id, fingerprint=fingerprint_of(key.public_key_pem.encode()))


def with_links(manifest: Manifest, links: PortalLinks) -> Manifest:
    """A schema version 1 manifest as the portal serves it: each artifact's download link under ``links``."""
    artifacts = [
        a.model_copy(update={"url": links.artifact(manifest.version, a.name)}) for a in manifest.artifacts
    ]
    return manifest.model_copy(update={"artifacts": artifacts})


def load_manifest(store: ArtifactStore, cfg_id: str, version: int) -> Manifest:
    """A stored manifest of any schema version, as stored now (links of earlier versions dropped)."""
    return Manifest.model_validate_json(store.get(portal_key(cfg_id, version, MANIFEST_NAME))).as_stored()


def store_signed_manifest(
    store: ArtifactStore, manifest: Manifest, signer: ManifestSigner, *, name: str = MANIFEST_NAME
) -> tuple[StoredObject, bytes]:
    """manifest.json with its signature and the public key beside it; the stored manifest and its signature."""
    data = manifest_json(manifest)
    signature = signer.sign(data)
    stored = store.put(portal_key(manifest.cfg_id, manifest.version, name), data, "application/json")
    store.put(portal_key(manifest.cfg_id, manifest.version, SIGNATURE_NAME), signature)
    store.put(
        portal_key(manifest.cfg_id, manifest.version, PUBLIC_KEY_NAME),
        signer.public_pem(),
        "application/x-pem-file",
    )
    return stored, signature


def publish_portal_version(
    *,
    cfg_id: str,
    run_id: str,
    order: ConfiguratorPayload,
    flags: dict[str, Any],
    artifacts: Sequence[tuple[ArtifactKind, StoredObject]],
    store: ArtifactStore,
    deliveries: PortalVersions,
    signer: ManifestSigner,
    bundle: BundleBuilder | None = None,
    evidence: EvidenceInputs | None = None,
) -> PortalPublication:
    """Publish version N (previous + 1; a retry of the same run republishes the same N), signed.

    With ``evidence`` the version also gets its SBOM and signed provenance; with ``bundle`` an
    air-gap bundle that holds the version's artifacts and a signed manifest of everything in it
    (the *inner* manifest); the version's manifest.json lists the same artifacts and the bundle,
    which no file can list about itself.

    The version is listed (numbered in platform_db, on the pages, emailed by the next step) only
    once every check of it has passed: each listed object read back from the bucket with its size
    and sha256, and the bundle read back against its signed manifest. A failed check raises
    ``PublicationRefused`` naming the files, and leaves nothing visible.
    """
    _refuse_revoked(signer, deliveries)
    listed = [*artifacts, *(bundle.extra_artifacts() if bundle is not None else ())]
    _refuse_duplicates([obj.name for _, obj in listed])
    claimed = deliveries.claim_portal_version(cfg_id, run_id)
    if evidence is not None:
        listed.extend(
            store_version_evidence(
                store=store, cfg_id=cfg_id, claimed=claimed, artifacts=listed, inputs=evidence, signer=signer
            )
        )
        _refuse_duplicates([obj.name for _, obj in listed])
    manifest = Manifest(
        cfg_id=cfg_id,
        version=claimed.version,
        created_at=claimed.created_at,
        deployment_target=order.target,
        flags=flags,
        artifacts=[
            ManifestArtifact(kind=kind, name=obj.name, key=obj.key, size=obj.size, sha256=obj.sha256)
            for kind, obj in listed
        ],
        apk_sbom=None if evidence is None else ("included" if evidence.apk_sbom else "none published"),
    )
    bundle_key = None
    if bundle is not None:
        try:
            built = bundle.build(claimed=claimed, manifest=manifest, signer=signer)
        except ValueError as error:
            # An artifact that no longer is what the manifest lists (changed in the bucket since
            # it was built): the bundle's writer names it.
            raise PublicationRefused(cfg_id, claimed.version, [str(error)]) from None
        bundle_key = built.key
        bundle_entry = ManifestArtifact(
            kind="bundle", name=built.name, key=built.key, size=built.size, sha256=built.sha256
        )
        manifest = manifest.model_copy(update={"artifacts": [*manifest.artifacts, bundle_entry]})
    public_pem = signer.public_pem()
    # Recorded before anything names the key: the API serves every key that ever signed.
    deliveries.record_signing_key(signer.key_id, public_pem.decode("ascii"))
    stored_manifest, _ = store_signed_manifest(store, manifest, signer)
    problems = manifest_artifact_problems(manifest, store)
    if bundle_key is not None and not problems:
        with closing(store.open(bundle_key)) as archive:
            problems = [
                f"{bundle_key.rsplit('/', 1)[-1]}: {p}"
                for p in bundle_problems(archive, manifest, public_pem)
            ]
    if problems:
        raise PublicationRefused(cfg_id, claimed.version, problems)
    deliveries.record_publication(
        cfg_id,
        claimed.version,
        manifest_key=stored_manifest.key,
        artifact_count=len(manifest.artifacts),
        signing_key_id=signer.key_id,
    )
    store_portal_pages(
        cfg_id=cfg_id,
        order=order,
        store=store,
        deliveries=deliveries,
        versions=[claimed.version],
        manifests={claimed.version: manifest},
    )
    return PortalPublication(
        cfg_id=cfg_id,
        version=claimed.version,
        manifest_key=stored_manifest.key,
        manifest=manifest,
        signing_key_id=signer.key_id,
        bundle_key=bundle_key,
    )


def _refuse_duplicates(names: Sequence[str]) -> None:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # A download link is /v<N>/<name>, and a file of a copied version folder is <name>, so a
        # name must be unique within a version.
        raise ValueError(f"artifact names must be unique in a portal version: {', '.join(duplicates)}")


def _refuse_revoked(signer: ManifestSigner, deliveries: PortalVersions) -> None:
    known = next((k for k in deliveries.signing_keys() if k.key_id == signer.key_id), None)
    if known is not None and known.revoked_at is not None:
        # Its signatures would be refused by every customer's verifier: publish nothing.
        raise SigningKeyRevoked(
            f"the manifest signing key {signer.key_id} was revoked at {known.revoked_at.isoformat()}: "
            "set MANIFEST_SIGNING_KEY to a new key, then retry the order"
        )


def store_portal_pages(
    *,
    cfg_id: str,
    order: ConfiguratorPayload,
    store: ArtifactStore,
    deliveries: PortalVersions,
    versions: Iterable[int],
    manifests: dict[int, Manifest] | None = None,
) -> None:
    """Render the stored pages again: ``v<N>/index.html`` of ``versions``, and the order's index.

    After a publication, a yank or an un-yank: the index shows the current version (the newest not
    yanked; a retried step of an older run never becomes current again) and every version's state.
    """
    known = dict(manifests or {})

    def manifest_of(version: int) -> Manifest:
        if version not in known:
            known[version] = load_manifest(store, cfg_id, version)
        return known[version]

    published = list(deliveries.portal_versions(cfg_id))
    keys = deliveries.signing_keys()
    by_number = {v.version: v for v in published}
    for number in versions:
        entry = by_number[number]
        page = render_version_page(
            manifest=manifest_of(number),
            order=order,
            links=FolderLinks(number),
            history=None,
            signing=signing_info(entry, keys),
            yanked=summary_of(entry, FolderLinks(number)),
        )
        store.put(portal_key(cfg_id, number, PAGE_NAME), page.encode(), HTML)
    order_folder = FolderLinks()
    current = current_version(published)
    index = render_portal_index(
        latest=None if current is None else manifest_of(current.version),
        order=order,
        links=order_folder,
        history=history_of(published, order_folder),
        signing=None if current is None else signing_info(current, keys),
    )
    store.put(portal_key(cfg_id, None, PAGE_NAME), index.encode(), HTML)
