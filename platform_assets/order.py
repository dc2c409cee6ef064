"""The six assets of an order. Each gathers its inputs from resources and calls plain functions."""

import functools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetRecordsFilter,
    AssetsDefinition,
    Backoff,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    Output,
    RetryPolicy,
    asset,
)
from dagster._core.storage.tags import BACKFILL_ID_TAG
from pydantic import BaseModel, ConfigDict

from contracts.configurator import CloudDeployment
from contracts.orders import EmailState, OrderStatus
from contracts.records import Order
from delivery.airgap_publication import AirgapBundle, EdgeImagesMissing, wants_airgap_bundle
from delivery.apk import APK_PREFIX, newest_apk
from delivery.artifact_checks import cfn_lint_problems, seed_iso_problems
from delivery.artifact_store import ArtifactStore, StoredObject, order_key, sha256_hex
from delivery.cfn import compose_cfn_template
from delivery.edge_bundle import build_bundle, commissioning_folder, customer_config_yaml
from delivery.edp_intake import EdpArtifactError, EdpArtifacts, parse_dtm, take_over_edp_artifacts
from delivery.edp_wait import failed_job_reason, wait_for_edp_job
from delivery.email_dispatch import EmailNotSent, send_delivery_email_once
from delivery.iso import build_seed_iso
from delivery.order_config import canonical_config_json
from delivery.portal import SigningInfo
from delivery.portal_publication import (
    PortalPublication,
    PublicationRefused,
    SigningKeyRevoked,
    publish_portal_version,
)
from delivery.provenance import platform_source_revision
from delivery.redelivery_limits import (
    FLEET_CONFIRMATION_TAG,
    BackfillScope,
    RedeliveryRefused,
    check_redelivery,
)
from delivery.version_evidence import EvidenceInputs, apk_sbom_key
from order_pipeline.keys import (
    APK,
    CFN_OR_ISO,
    CONFIG,
    EDP_ARTIFACTS,
    EMAIL,
    MANIFEST,
    ORDER_PREFIX,
    orders_partitions,
)
from resources.artifacts import ArtifactBucketResource
from resources.delivery import DeliveryResource
from resources.edp import EdpError, EdpResource
from resources.platform_db import PlatformDbResource
from resources.portal import PortalResource
from resources.ses import SesResource

DEPLOYABLE = "deployable"
ARTIFACTS_MATCH = "artifacts_match_manifest"
AIRGAP_BUNDLE_MATCHES = "airgap_bundle_matches_manifest"
EMAIL_SENT = "email_sent"
ASSET_ARGS: dict[str, Any] = {
    "key_prefix": ORDER_PREFIX,
    "partitions_def": orders_partitions,
    "group_name": "order",
}


def step_retry_policy(retries: int, first_delay_seconds: float) -> RetryPolicy:
    """Retries of the steps safe to repeat, so they ride out a transient S3 or EDP outage.

    Every write of those steps is keyed (S3 keys, the EDP Idempotency-Key, the portal version
    claimed per run), so a repeat changes nothing already done. Delays double: 5 retries from 5 s
    wait 5, 10, 20, 40, 80 s (+/- jitter), about 2.5 minutes in all. The email step has none: SES
    is called at most once (delivery.email_dispatch).
    """
    return RetryPolicy(
        max_retries=retries, delay=first_delay_seconds, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
    )


class BuiltArtifact(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["cfn", "iso"]
    artifact: StoredObject
    bundle: list[StoredObject]


class ChosenApk(BaseModel):
    model_config = ConfigDict(frozen=True)

    artifact: StoredObject
    version: str


class ApkChoice(BaseModel):
    """What ``apk`` hands on: the newest APK, or none yet (then the run publishes nothing)."""

    model_config = ConfigDict(frozen=True)

    chosen: ChosenApk | None


def edp_idempotency_key(cfg_id: str, attempt: int) -> str:
    """The EDP Idempotency-Key of an order's job: a retried step gets the job it already made,
    a retry after a failed job (a new attempt) gets a new one."""
    return cfg_id if attempt == 0 else f"{cfg_id}:attempt-{attempt}"


def _stored_order(platform_db: PlatformDbResource, cfg_id: str) -> Order:
    order = platform_db.orders.get(cfg_id)
    if order is None:
        raise Failure(f"order {cfg_id} is not in platform_db", allow_retries=False)
    return order


def _edp_unavailable(
    context: AssetExecutionContext, platform_db: PlatformDbResource, error: EdpError
) -> Failure:
    """The step's Failure when EDP is down or answers 5xx: retried by the policy until the last try,
    which also fails the order with EDP's reason (not only the run failure sensor, later)."""
    policy = context.op_def.retry_policy
    retries = policy.max_retries if policy is not None else 0
    if context.retry_number < retries:
        context.log.warning(f"{error}; retry {context.retry_number + 1} of {retries} follows")
        return Failure(str(error))
    platform_db.orders.fail(context.partition_key, str(error))
    return Failure(str(error), allow_retries=False)


def _object_metadata(obj: StoredObject) -> dict[str, MetadataValue]:
    return {
        "key": MetadataValue.text(obj.key),
        "size": MetadataValue.int(obj.size),
        "sha256": MetadataValue.text(obj.sha256),
    }


def config(
    context: AssetExecutionContext,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    edp: EdpResource,
) -> MaterializeResult:
    # No output: what comes after reads the EDP job from platform_db and the files from S3.
    cfg_id = context.partition_key
    stored = _stored_order(platform_db, cfg_id)
    order = stored.configurator_payload()
    store = artifacts.get_store()
    config_json = store.put(
        order_key(cfg_id, "config.json"), canonical_config_json(cfg_id, order), "application/json"
    )
    customer_yml = store.put(
        order_key(cfg_id, "cfg.customer.yml"),
        customer_config_yaml(cfg_id=cfg_id, order=order, flags={}),
        "application/yaml",
    )
    try:
        accepted = edp.get_client().submit_job(
            order, idempotency_key=edp_idempotency_key(cfg_id, stored.edp_attempt)
        )
    except EdpError as exc:
        # EDP down or answering 5xx: the retry policy tries again with the same key.
        raise _edp_unavailable(context, platform_db, exc) from None
    platform_db.orders.record_edp_job(cfg_id, accepted.job_id)
    return MaterializeResult(
        metadata={
            "target": order.target,
            "edp_job_id": accepted.job_id,
            "config_json": MetadataValue.text(config_json.key),
            "config_json_sha256": config_json.sha256,
            "cfg_customer_yml": MetadataValue.text(customer_yml.key),
        },
    )


def edp_artifacts(
    context: AssetExecutionContext,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    edp: EdpResource,
) -> Iterator[Output[EdpArtifacts]]:
    cfg_id = context.partition_key
    client = edp.get_client()
    downloader = edp.artifact_downloader()
    # The job comes from platform_db (config has no output): a config run killed after EDP took the
    # job still leaves the order's build its input.
    stored = platform_db.orders.get(cfg_id)
    if stored is None or stored.edp_job_id is None:
        raise Failure(f"order {cfg_id} has no EDP job yet: order/config submits it", allow_retries=False)
    job_id = stored.edp_job_id
    try:
        job = wait_for_edp_job(
            client.get_job, job_id, wait_seconds=edp.job_wait_seconds, transient=(EdpError,)
        )
    except EdpError as exc:
        raise _edp_unavailable(context, platform_db, exc) from None
    if job is None:
        # Nothing materialized, so the rest of this run is skipped; the order stays edp_pending and
        # edp_sensor starts the build once the job is done.
        context.log.info(
            f"EDP job {job_id} still runs after {edp.job_wait_seconds:g} s; edp_sensor takes it from here"
        )
        return
    if job.status == "failed":
        reason = failed_job_reason(job_id, job)
        platform_db.orders.fail(cfg_id, reason)
        raise Failure(reason, allow_retries=False)
    # A delivered order being rebuilt (a backfill) stays delivered: the lifecycle refuses the move.
    platform_db.orders.move(cfg_id, OrderStatus.BUILDING)
    try:
        taken = take_over_edp_artifacts(
            cfg_id=cfg_id,
            job_id=job_id,
            job=job,
            policy=downloader.policy,
            download=downloader.download,
            store=artifacts.get_store(),
        )
    # Built without URLs' queries or EDP's bodies, and capped: fit for last_error. What EDP made is
    # wrong (a failed job, an invalid dtm.json): repeating the step would get the same.
    except EdpArtifactError as exc:
        platform_db.orders.fail(cfg_id, str(exc))
        raise Failure(str(exc), allow_retries=False) from None
    yield Output(
        taken,
        metadata={
            "edp_job_id": taken.job_id,
            "flags": MetadataValue.json(taken.flags),
            "artifacts": MetadataValue.json([obj.model_dump() for obj in taken.objects]),
        },
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
    stored = _stored_order(platform_db, cfg_id)
    order = stored.configurator_payload()
    # The order's current commissioning token; a rotated one is stored beside the earlier ones.
    generation = stored.commissioning_token_generation
    folder = commissioning_folder(generation)
    store = artifacts.get_store()
    dtm_bytes = store.get(edp_artifacts.dtm.key)
    dtm = parse_dtm(dtm_bytes)
    bundle_files = build_bundle(
        cfg_id=cfg_id,
        order=order,
        dtm=dtm,
        flags=edp_artifacts.flags,
        images=delivery.edge_images(store),
        fixtures=delivery.industrial_fixtures(),
        commissioning_token=portal.commissioning_token(cfg_id, generation),
        dtm_bytes=dtm_bytes,
    )
    bundle = [
        store.put(order_key(cfg_id, *folder, "bundle", name), data) for name, data in bundle_files.items()
    ]
    # The one place that says which delivery path the order takes: what is built, and its check.
    deployment = order.deployment
    kind: Literal["cfn", "iso"]
    problems_of: Callable[[bytes], list[str]]
    if isinstance(deployment, CloudDeployment):
        kind = "cfn"
        template = compose_cfn_template(
            cfg_id=cfg_id,
            order=order,
            bucket=artifacts.bucket,
            bundle_prefix=order_key(cfg_id, *folder, "bundle") + "/",
            bundle_sha256={obj.name: obj.sha256 for obj in bundle},
        )
        built = store.put(order_key(cfg_id, *folder, "cfn", "cfn.yaml"), template, "application/yaml")
        problems_of = functools.partial(cfn_lint_problems, region=deployment.region)
    else:
        kind = "iso"
        image = build_seed_iso(cfg_id=cfg_id, order=order, bundle=bundle_files)
        built = store.put(order_key(cfg_id, *folder, "iso", "iso.img"), image, "application/octet-stream")
        problems_of = seed_iso_problems
    yield Output(
        BuiltArtifact(kind=kind, artifact=built, bundle=bundle),
        metadata={
            "target": deployment.target,
            "kind": kind,
            # The number, never the token.
            "commissioning_token_generation": generation,
            **_object_metadata(built),
        },
    )
    # Checked on the bytes read back from the bucket: what the customer downloads.
    problems = problems_of(store.get(built.key))
    yield AssetCheckResult(
        check_name=DEPLOYABLE,
        passed=not problems,
        metadata={"kind": kind, "problems": MetadataValue.json(problems)},
    )


def apk(context: AssetExecutionContext, artifacts: ArtifactBucketResource) -> Output[ApkChoice]:
    # Always an output, even without an APK: a skipped optional output next to a failed step makes
    # the in-process executor spin forever (tests/platform_assets/test_no_apk_yet.py).
    store = artifacts.get_store()
    candidate = newest_apk(store.keys(APK_PREFIX))
    if candidate is None:
        context.log.info("no HMI APK under apk/ yet; the order waits for the HMI CI")
        return Output(ApkChoice(chosen=None), metadata={"version": "none yet"})
    data = store.get(candidate.key)
    chosen = ChosenApk(
        artifact=StoredObject(key=candidate.key, size=len(data), sha256=sha256_hex(data)),
        version=candidate.version,
    )
    return Output(
        ApkChoice(chosen=chosen), metadata={"version": candidate.version, **_object_metadata(chosen.artifact)}
    )


def manifest(
    context: AssetExecutionContext,
    edp_artifacts: EdpArtifacts,
    cfn_or_iso: BuiltArtifact,
    apk: ApkChoice,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    portal: PortalResource,
    delivery: DeliveryResource,
) -> Iterator[Output[PortalPublication] | AssetCheckResult]:
    cfg_id = context.partition_key
    stored = _stored_order(platform_db, cfg_id)
    if apk.chosen is None:
        # apk_sensor resumes the order when the HMI CI publishes one; a delivered order being
        # re-delivered stays delivered (the lifecycle refuses the move).
        platform_db.orders.move(cfg_id, OrderStatus.WAITING_FOR_APK)
        context.log.info("no HMI APK yet: no portal version is published and no email sent")
        # A check's result is due whenever the step ends; it says that nothing was published.
        for check in (ARTIFACTS_MATCH, AIRGAP_BUNDLE_MATCHES):
            yield AssetCheckResult(
                check_name=check, passed=True, metadata={"published": False, "reason": "no HMI APK yet"}
            )
        return
    try:
        # Before anything is written: a refused re-delivery publishes nothing and emails nobody.
        check_redelivery(
            cfg_id=cfg_id,
            run_id=context.run.run_id,
            published=platform_db.deliveries.portal_versions(cfg_id),
            now=datetime.now(UTC),
            limits=delivery.redelivery_limits(),
            backfill=_backfill_scope(context),
        )
    except RedeliveryRefused as exc:
        # The same answer on a retry; an operator raises a limit or confirms the fleet re-delivery.
        raise Failure(str(exc), allow_retries=False) from None
    payload = stored.configurator_payload()
    with_bundle = wants_airgap_bundle(payload)
    listed = [*edp_artifacts.objects, cfn_or_iso.artifact, apk.chosen.artifact]
    if with_bundle:
        listed.extend(cfn_or_iso.bundle)
    store = artifacts.get_store()
    missing = [obj.key for obj in listed if store.head(obj.key) is None]
    if missing:
        # Publishing would give the customer links that answer 404; rebuilding is an operator's call.
        raise Failure(
            f"{len(missing)} artifact(s) of this delivery are gone from the bucket ({', '.join(missing[:3])}); "
            "nothing was published: rebuild them with a backfill from order/edp_artifacts",
            allow_retries=False,
        )
    signer = portal.manifest_signer()
    bundle = None
    if with_bundle:
        try:
            bundle = AirgapBundle.prepare(
                store=store,
                cfg_id=cfg_id,
                order=payload,
                stack=cfn_or_iso.bundle,
                images=delivery.edge_images(store),
                release=delivery.edge_release(store),
                images_version=delivery.release_version,
                require_images=delivery.require_edge_images,
                signing=SigningInfo(key_id=signer.key_id, fingerprint=signer.fingerprint),
            )
        except EdgeImagesMissing as exc:
            # The same answer until an operator publishes the images: no retry.
            raise Failure(str(exc), allow_retries=False) from None
        if bundle.images_archive is None:
            context.log.warning(
                "no edge images archive is published: the air-gap bundle is built without the images"
            )
    evidence = EvidenceInputs(
        config=_stored_object(store, order_key(cfg_id, "config.json")),
        edp_job_id=edp_artifacts.job_id,
        dtm=edp_artifacts.dtm,
        apk=apk.chosen.artifact,
        apk_sbom=_optional_object(store, apk_sbom_key(apk.chosen.artifact.key)),
        edge_sbom=delivery.edge_sbom(store),
        image_references=delivery.image_references(store),
        platform_version=delivery.release_version,
        source_revision=platform_source_revision(),
        run_ids=_build_run_ids(context),
        builder_id=f"urn:platform-api:{delivery.stage}:order-pipeline",
    )
    try:
        publication = publish_portal_version(
            cfg_id=cfg_id,
            run_id=context.run.run_id,
            order=payload,
            flags=edp_artifacts.flags,
            artifacts=[
                *(("edp", obj) for obj in edp_artifacts.objects),
                (cfn_or_iso.kind, cfn_or_iso.artifact),
                ("apk", apk.chosen.artifact),
            ],
            store=store,
            deliveries=platform_db.deliveries,
            signer=signer,
            bundle=bundle,
            evidence=evidence,
        )
    except (PublicationRefused, SigningKeyRevoked) as exc:
        # The same answer on a retry: the operator rebuilds the artifact or replaces the key.
        platform_db.orders.fail(cfg_id, str(exc))
        raise Failure(str(exc), allow_retries=False) from None
    # Keys, never links: a link carries the customer's token.
    yield Output(
        publication,
        metadata={
            "portal_version": publication.version,
            "manifest_key": MetadataValue.text(publication.manifest_key),
            "signing_key_id": MetadataValue.text(publication.signing_key_id or ""),
            "airgap_bundle_key": MetadataValue.text(publication.bundle_key or "none"),
            "artifacts": MetadataValue.json(
                [
                    {"kind": a.kind, "key": a.key, "size": a.size, "sha256": a.sha256}
                    for a in publication.manifest.artifacts
                ]
            ),
        },
    )
    # Both ran inside publish_portal_version, before the version was listed: a version that
    # failed either is never listed, so a published one has passed them.
    checked = {"checked": "read back from the bucket before the version was listed"}
    yield AssetCheckResult(
        check_name=ARTIFACTS_MATCH,
        passed=True,
        metadata={**checked, "artifacts": len(publication.manifest.artifacts)},
    )
    yield AssetCheckResult(
        check_name=AIRGAP_BUNDLE_MATCHES,
        passed=True,
        metadata=(
            {**checked, "bundle_key": publication.bundle_key}
            if publication.bundle_key is not None
            else {"bundle": "none: a cloud order without the airgap_bundle option"}
        ),
    )


def _backfill_scope(context: AssetExecutionContext) -> BackfillScope | None:
    """The backfill this run belongs to (its size from the instance), or None for a run of its own."""
    backfill_id = context.run.tags.get(BACKFILL_ID_TAG)
    if backfill_id is None:
        return None
    return BackfillScope(
        backfill_id=backfill_id,
        orders=_backfill_orders(context, backfill_id),
        # A backfill's tags are its runs' tags; a re-execution may add it too.
        confirmation=context.run.tags.get(FLEET_CONFIRMATION_TAG),
    )


def _backfill_orders(context: AssetExecutionContext, backfill_id: str) -> int | None:
    """How many orders (partitions) the backfill covers; None when the instance cannot tell."""
    backfill = context.instance.get_backfill(backfill_id)
    if backfill is None:
        return None
    if not backfill.is_asset_backfill:
        return len(set(backfill.partition_names)) if backfill.partition_names else None
    data = backfill.asset_backfill_data
    if data is None:
        # Stored in the older serialized form, which only the asset graph reads.
        try:
            data = backfill.get_asset_backfill_data(context.repository_def.asset_graph)
        except Exception:  # noqa: BLE001 - e.g. the definitions changed since the launch; counted as unknown
            context.log.warning(f"backfill {backfill_id}: its partitions could not be read")
            return None
    targets = data.target_subset
    orders = {
        key
        for subset in targets.partitions_subsets_by_asset_key.values()
        for key in subset.get_partition_keys()
    }
    return len(orders) or None


def _stored_object(store: ArtifactStore, key: str) -> StoredObject:
    size, sha256 = store.digest(key)
    return StoredObject(key=key, size=size, sha256=sha256)


def _optional_object(store: ArtifactStore, key: str) -> bytes | None:
    return store.get(key) if store.head(key) is not None else None


def _build_run_ids(context: AssetExecutionContext) -> list[str]:
    """The runs that built this version's inputs (their latest materializations), this run first."""
    run_ids = [context.run.run_id]
    for key in (CONFIG, EDP_ARTIFACTS, CFN_OR_ISO, APK):
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
        ).records
        if records and records[0].run_id not in run_ids:
            run_ids.append(records[0].run_id)
    return run_ids


def email(
    context: AssetExecutionContext,
    manifest: PortalPublication,
    platform_db: PlatformDbResource,
    ses: SesResource,
    portal: PortalResource,
) -> MaterializeResult:
    cfg_id = context.partition_key
    stored = _stored_order(platform_db, cfg_id)
    # The link of the token valid now: one rotated since the manifest step retired the published one.
    portal_url = portal.links_for(cfg_id, stored.portal_token_generation).portal()
    try:
        outcome = send_delivery_email_once(
            publication=manifest,
            portal_url=portal_url,
            order=stored.configurator_payload(),
            sender=ses.sender,
            ses_client=ses.get_client(),
            deliveries=platform_db.deliveries,
            outbox_dir=Path(ses.outbox_dir) if ses.outbox_dir else None,
            policy=ses.send_policy(),
        )
    except EmailNotSent as exc:
        # Nothing was sent (SES refused it, or throttled every attempt): SES's reason, no retry.
        raise Failure(str(exc), allow_retries=False) from None
    version = manifest.version
    if outcome.state is EmailState.SENDING:
        # Another attempt holds a fresh claim and is sending: not this step's email to decide on.
        raise Failure(f"portal version {version}: {outcome.reason}", allow_retries=False)
    known = outcome.state in (EmailState.SENT, EmailState.MARKED_SENT)
    if known:
        platform_db.orders.move(cfg_id, OrderStatus.DELIVERED)
    else:
        # Never resent on its own: an operator resolves it (POST /orders/{cfg_id}/email).
        platform_db.orders.move(
            cfg_id, OrderStatus.EMAIL_UNKNOWN, error=f"portal version {version}: {outcome.reason}"
        )
        context.log.warning(
            f"portal version {version}: whether SES sent the email is unknown: {outcome.reason}"
        )
    if known and not outcome.sent_now:
        context.log.info(f"portal version {version} was already emailed; nothing sent again")
    return MaterializeResult(
        metadata={
            "portal_version": version,
            "email_state": outcome.state.value,
            "ses_message_id": outcome.message_id or "",
            "sent_now": outcome.sent_now,
        },
        # Non-blocking: the materialization stands (the portal is published); the failed check is
        # what the Dagster UI shows for an email an operator must resolve.
        check_results=[
            AssetCheckResult(
                check_name=EMAIL_SENT,
                passed=known,
                metadata={"email_state": outcome.state.value, "reason": outcome.reason or ""},
            )
        ],
    )


def build_order_assets(step_retries: RetryPolicy) -> list[AssetsDefinition]:
    """The six assets of an order; ``step_retries`` on every step but the email (settings pipeline.step_*)."""
    retried: dict[str, Any] = {**ASSET_ARGS, "retry_policy": step_retries}
    return [
        asset(
            **retried, description="Canonical config.json and cfg.customer.yml in S3; the EDP job submitted."
        )(config),
        asset(
            **retried,
            deps=[CONFIG],
            # Nothing while the EDP job still runs after the wait: the rest of the run is skipped.
            output_required=False,
            description="Every EDP artifact copied into S3 with its sha256; dtm.json validated.",
        )(edp_artifacts),
        asset(
            **retried,
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
        )(cfn_or_iso),
        asset(
            **retried,
            description="The newest HMI APK under apk/ (written by the HMI CI), or none yet: then the order waits.",
        )(apk),
        asset(
            **retried,
            # Nothing is published while there is no APK; the email step is then skipped too.
            output_required=False,
            check_specs=[
                AssetCheckSpec(
                    ARTIFACTS_MATCH,
                    asset=MANIFEST,
                    blocking=True,
                    description="every listed object exists with its recorded sha256",
                ),
                AssetCheckSpec(
                    AIRGAP_BUNDLE_MATCHES,
                    asset=MANIFEST,
                    blocking=True,
                    description="the air-gap bundle holds every artifact its manifest lists, with its sha256, and the signed manifest",
                ),
            ],
            description=(
                "Portal version N: the signed manifest.json + index.html (and the air-gap bundle of an "
                "on-prem order), and the order's portal index."
            ),
        )(manifest),
        asset(
            **ASSET_ARGS,
            check_specs=[
                AssetCheckSpec(
                    EMAIL_SENT,
                    asset=EMAIL,
                    description="SES confirmed the email (or an operator did); fails while its outcome is unknown",
                )
            ],
            description="The delivery email with the portal link, at most once per portal version.",
        )(email),
    ]
