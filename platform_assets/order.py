"""The six assets of an order. Each gathers its inputs from resources and calls plain functions."""


from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import BaseModel, ConfigDict

from contracts.configurator import CloudDeployment, ConfiguratorPayload
from contracts.orders import OrderStatus
from delivery.apk import APK_PREFIX, newest_apk
from delivery.artifact_checks import cfn_lint_problems, manifest_artifact_problems, seed_iso_problems
from delivery.artifact_store import StoredObject, order_key, sha256_hex
from delivery.cfn import compose_cfn_template
from delivery.edge_bundle import build_bundle, customer_config_yaml
from delivery.edp_intake import EdpArtifactError, EdpArtifacts, parse_dtm, take_over_edp_artifacts
from delivery.email_dispatch import send_delivery_email_once
from delivery.iso import build_seed_iso
from delivery.order_config import canonical_config_json
from delivery.portal_publication import PortalPublication, publish_portal_version
from platform_assets.partitions import CFN_OR_ISO, CONFIG, MANIFEST, ORDER_PREFIX, orders_partitions
from resources.artifacts import ArtifactBucketResource
from resources.delivery import DeliveryResource
from resources.edp import EdpError, EdpResource
from resources.platform_db import PlatformDbResource
from resources.portal import PortalResource
from resources.ses import SesResource

DEPLOYABLE = "deployable"
ARTIFACTS_MATCH = "artifacts_match_manifest"
ASSET_ARGS = {"key_prefix": ORDER_PREFIX, "partitions_def": orders_partitions, "group_name": "order"}


class OrderConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    config_json: StoredObject
    customer_yml: StoredObject
    edp_job_id: str


class BuiltArtifact(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    artifact: StoredObject
    bundle: list[StoredObject]


class ChosenApk(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: StoredObject
    version: str


def _order(platform_db: PlatformDbResource, cfg_id: str) -> ConfiguratorPayload:
    order = platform_db.orders.get(cfg_id)
    if order is None:
        raise Failure(f"order {cfg_id} is not in platform_db")
    return order.configurator_payload()


def _object_metadata(obj: StoredObject) -> dict[str, MetadataValue]:
    return {
        "key": MetadataValue.text(obj.key),
        "size": MetadataValue.int(obj.size),
        "sha256": MetadataValue.text(obj.sha256),
    }


@asset(**ASSET_ARGS, description="Canonical config.json and cfg.customer.yml in S3; the EDP job submitted.")
def config(
    context: AssetExecutionContext,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    edp: EdpResource,
) -> Output[OrderConfig]:
    cfg_id = context.partition_key
    order = _order(platform_db, cfg_id)
    store = artifacts.get_store()
    config_json = store.put(order_key(cfg_id, "config.json"), canonical_config_json(cfg_id, order), "application/json")
    customer_yml = store.put(
        order_key(cfg_id, "cfg.customer.yml"),
        customer_config_yaml(cfg_id=cfg_id, order=order, flags={}),
        "application/yaml",
    )
    try:
        # Idempotency-Key = cfg_id: a retried step gets the job it already made, never a second one.
        accepted = edp.get_client().submit_job(order, idempotency_key=cfg_id)
    except EdpError as exc:
        raise Failure(str(exc)) from None
    platform_db.orders.record_edp_job(cfg_id, accepted.job_id)
    return Output(
        OrderConfig(config_json=config_json, customer_yml=customer_yml, edp_job_id=accepted.job_id),
        metadata={
            "target": order.target,
            "edp_job_id": accepted.job_id,
            "config_json": MetadataValue.text(config_json.key),
            "config_json_sha256": config_json.sha256,
            "cfg_customer_yml": MetadataValue.text(customer_yml.key),
        },
    )


# "config" is a reserved parameter name in Dagster (run config), so the upstream asset comes in as order_config.
@asset(
    **ASSET_ARGS,
    ins={"order_config": AssetIn(key=CONFIG)},
    description="Every EDP artifact copied into S3 with its sha256; dtm.json validated.",
)
def edp_artifacts(
    context: AssetExecutionContext,
    order_config: OrderConfig,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    edp: EdpResource,
) -> Output[EdpArtifacts]:
    cfg_id = context.partition_key
    client = edp.get_client()
    downloader = edp.artifact_downloader()
    # apk runs beside this step and may already have found no APK: "waiting_for_apk" must stay,
    # or the order would sit in "building" and apk_sensor would never resume it.
    platform_db.orders.set_status_unless(cfg_id, OrderStatus.BUILDING, unless=[OrderStatus.WAITING_FOR_APK])
    try:
        taken = take_over_edp_artifacts(
            cfg_id=cfg_id,
            job_id=order_config.edp_job_id,
            job=client.get_job(order_config.edp_job_id),
            policy=downloader.policy,
            download=downloader.download,
            store=artifacts.get_store(),
        )
    # Both kinds are built without URLs' queries or EDP's bodies, and capped: fit for last_error.
    except (EdpArtifactError, EdpError) as exc:
        platform_db.orders.set_status(cfg_id, OrderStatus.FAILED, error=str(exc))
        raise Failure(str(exc)) from None
    return Output(
        taken,
        metadata={
            "edp_job_id": taken.job_id,
            "flags": MetadataValue.json(taken.flags),
            "artifacts": MetadataValue.json([obj.model_dump() for obj in taken.objects]),
        },
    )


@asset(
    **ASSET_ARGS,
    # Blocking: an artifact its consumer would reject is never published or emailed.
    check_specs=[
        AssetCheckSpec(
            DEPLOYABLE,
            asset=CFN_OR_ISO,
            blocking=True,
            description="cfn.yaml is cfn-lint clean; iso.img reads back as a seed",
        )
    ],
    description="cfn.yaml (cloud) or iso.img (on-prem), composed from dtm.json, plus the stack bundle.",
)
def cfn_or_iso(
    context: AssetExecutionContext,
    edp_artifacts: EdpArtifacts,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    delivery: DeliveryResource,
    portal: PortalResource,
) -> Iterator[Output[BuiltArtifact] | AssetCheckResult]:
    cfg_id = context.partition_key
    order = _order(platform_db, cfg_id)
    store = artifacts.get_store()
    dtm_bytes = store.get(edp_artifacts.dtm.key)
    dtm = parse_dtm(dtm_bytes)
    bundle_files = build_bundle(
        cfg_id=cfg_id,
        order=order,
        dtm=dtm,
        flags=edp_artifacts.flags,
        images=delivery.edge_images(),
        commissioning_token=portal.commissioning_token(cfg_id),
        dtm_bytes=dtm_bytes,
    )
    bundle = [store.put(order_key(cfg_id, "bundle", name), data) for name, data in bundle_files.items()]
    if order.target == "cloud":
        kind = "cfn"
        template = compose_cfn_template(
            cfg_id=cfg_id, order=order, bucket=artifacts.bucket, bundle_prefix=order_key(cfg_id, "bundle") + "/"
        )
        built = store.put(order_key(cfg_id, "cfn", "cfn.yaml"), template, "application/yaml")
    else:
        kind = "iso"
        image = build_seed_iso(cfg_id=cfg_id, order=order, bundle=bundle_files)
        built = store.put(order_key(cfg_id, "iso", "iso.img"), image, "application/octet-stream")
    yield Output(
        BuiltArtifact(kind=kind, artifact=built, bundle=bundle),
        metadata={"target": order.target, "kind": kind, **_object_metadata(built)},
    )
    # Checked on the bytes read back from the bucket: what the customer downloads.
    stored = store.get(built.key)
    if isinstance(order.deployment, CloudDeployment):
        problems = cfn_lint_problems(stored, order.deployment.region)
    else:
        problems = seed_iso_problems(stored)
    yield AssetCheckResult(
        check_name=DEPLOYABLE,
        passed=not problems,
        metadata={"kind": kind, "problems": MetadataValue.json(problems)},
    )


@asset(
    **ASSET_ARGS,
    output_required=False,
    description="The newest HMI APK under apk/ (written by the HMI CI); without one the order waits.",
)
def apk(
    context: AssetExecutionContext, platform_db: PlatformDbResource, artifacts: ArtifactBucketResource
) -> Iterator[Output[ChosenApk]]:
    cfg_id = context.partition_key
    store = artifacts.get_store()
    candidate = newest_apk(store.keys(APK_PREFIX))
    if candidate is None:
        # No output: manifest and email of this run are skipped; apk_sensor resumes the order.
        platform_db.orders.set_status(cfg_id, OrderStatus.WAITING_FOR_APK)
        context.log.info("no HMI APK under apk/ yet; the order waits for the HMI CI")
        return
    data = store.get(candidate.key)
    chosen = ChosenApk(artifact=StoredObject(key=candidate.key, size=len(data), sha256=sha256_hex(data)), version=candidate.version)
    yield Output(chosen, metadata={"version": candidate.version, **_object_metadata(chosen.artifact)})


@asset(
    **ASSET_ARGS,
    check_specs=[
        AssetCheckSpec(
            ARTIFACTS_MATCH,
            asset=MANIFEST,
            blocking=True,
            description="every listed object exists with its recorded sha256",
        )
    ],
    description="Portal version N: manifest.json + index.html, and the order's portal index.",
)
def manifest(
    context: AssetExecutionContext,
    edp_artifacts: EdpArtifacts,
    cfn_or_iso: BuiltArtifact,
    apk: ChosenApk,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    portal: PortalResource,
) -> Iterator[Output[PortalPublication] | AssetCheckResult]:
    cfg_id = context.partition_key
    stored = platform_db.orders.get(cfg_id)
    if stored is None:
        raise Failure(f"order {cfg_id} is not in platform_db")
    publication = publish_portal_version(
        cfg_id=cfg_id,
        run_id=context.run.run_id,
        order=stored.configurator_payload(),
        flags=edp_artifacts.flags,
        artifacts=[
            *(("edp", obj) for obj in edp_artifacts.objects),
            (cfn_or_iso.kind, cfn_or_iso.artifact),
            ("apk", apk.artifact),
        ],
        store=artifacts.get_store(),
        deliveries=platform_db.deliveries,
        links=portal.links_for(cfg_id, stored.portal_token_generation),
    )
    # The links carry the customer's token, so metadata names keys, not URLs.
    yield Output(
        publication,
        metadata={
            "portal_version": publication.version,
            "manifest_key": MetadataValue.text(publication.manifest_key),
            "artifacts": MetadataValue.json(
                [{"kind": a.kind, "key": a.key, "size": a.size, "sha256": a.sha256} for a in publication.manifest.artifacts]
            ),
        },
    )
    problems = manifest_artifact_problems(publication.manifest, artifacts.get_store())
    yield AssetCheckResult(
        check_name=ARTIFACTS_MATCH, passed=not problems, metadata={"problems": MetadataValue.json(problems)}
    )


@asset(**ASSET_ARGS, description="The delivery email with the portal link, at most once per portal version.")
def email(
    context: AssetExecutionContext,
    manifest: PortalPublication,
    platform_db: PlatformDbResource,
    ses: SesResource,
) -> MaterializeResult:
    cfg_id = context.partition_key
    order = _order(platform_db, cfg_id)
    message_id, sent_now = send_delivery_email_once(
        publication=manifest,
        order=order,
        sender=ses.sender,
        ses_client=ses.get_client(),
        deliveries=platform_db.deliveries,
        outbox_dir=Path(ses.outbox_dir) if ses.outbox_dir else None,
    )
    platform_db.orders.set_status(cfg_id, OrderStatus.DELIVERED)
    if not sent_now:
        context.log.info(f"portal version {manifest.version} was already emailed; nothing sent again")
    return MaterializeResult(
        metadata={
            "portal_version": manifest.version,
            "ses_message_id": message_id or "",
            "sent_now": sent_now,
        },
    )
