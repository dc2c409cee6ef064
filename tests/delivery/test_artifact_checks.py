import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest, ManifestArtifact
from delivery.artifact_checks import cfn_lint_problems, manifest_artifact_problems, seed_iso_problems
from delivery.artifact_store import ArtifactStore, order_key, sha256_hex
from delivery.cfn import compose_cfn_template
from delivery.edge_bundle import BUNDLE_FILES
from delivery.iso import build_seed_iso

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CFG_ID = "6f1c1f8e-3d2a-4f55-9a57-0c2b1d7e9a10"


def order(name: str) -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(json.loads((EXAMPLES / f"order-{name}.json").read_text()))


def test_a_composed_template_passes_and_a_broken_one_is_reported() -> None:
    template = compose_cfn_template(
        cfg_id=CFG_ID,
        order=order("cloud"),
        bucket="artifacts",
        bundle_prefix=f"orders/{CFG_ID}/bundle/",
        bundle_sha256={name: sha256_hex(name.encode()) for name in BUNDLE_FILES},
    )
    assert cfn_lint_problems(template, "eu-central-1") == []
    broken = b"Resources:\n  Box:\n    Type: AWS::EC2::Instance\n    Properties:\n      Colour: red\n"
    problems = cfn_lint_problems(broken, "eu-central-1")
    assert problems and any("Colour" in problem for problem in problems)


def test_a_built_seed_iso_passes_and_garbage_is_reported() -> None:
    bundle = {
        "cfg.customer.yml": b"site: {}\n",
        "dtm.json": b"{}",
        "compose.yaml": b"services: {}\n",
        "secrets.env": b"",
    }
    image = build_seed_iso(cfg_id=CFG_ID, order=order("onprem"), bundle=bundle)
    assert seed_iso_problems(image) == []
    assert seed_iso_problems(b"\0" * 70000)


@pytest.mark.slow
def test_manifest_problems_name_missing_and_changed_objects(store: ArtifactStore) -> None:
    kept = store.put(order_key(CFG_ID, "edp", "dtm.json"), b'{"devices": []}')
    changed = store.put(order_key(CFG_ID, "cfn", "cfn.yaml"), b"Resources: {}\n")
    manifest = Manifest(
        cfg_id=CFG_ID,
        version=1,
        created_at=datetime.now(UTC),
        deployment_target="cloud",
        artifacts=[
            ManifestArtifact(
                kind=kind, name=obj.name, key=obj.key, size=obj.size, sha256=obj.sha256, url="https://x/y"
            )
            for kind, obj in (("edp", kept), ("cfn", changed))
        ],
    )
    assert manifest_artifact_problems(manifest, store) == []
    store.put(changed.key, b"Resources: {Changed: 1}\n")
    store.client.delete_object(Bucket=store.bucket, Key=kept.key)
    problems = manifest_artifact_problems(manifest, store)
    assert len(problems) == 3
    assert any("dtm.json" in p and "does not exist" in p for p in problems)
    assert any("cfn.yaml: sha256 differs" in p for p in problems)
