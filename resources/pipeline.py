"""The pipeline's resources, built from the layered settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    InitResourceContext,
    IOManagerDefinition,
    ResourceDefinition,
)

from platform_config.settings import PROJECT_VERSION, STANDIN_AWS_KEY, Settings
from resources.artifacts import ArtifactBucketResource
from resources.delivery import DeliveryResource
from resources.edp import EdpResource
from resources.platform_db import PlatformDbResource
from resources.portal import PortalResource
from resources.s3 import S3PickleIOManager, S3Resource
from resources.ses import SesResource

# Assets hand each other references (keys, digests), pickled into the artifact bucket, so a run
# never depends on another run's local disk.
IO_PREFIX = "dagster-io"


def bound_to_settings(resource: ConfigurableResource) -> ResourceDefinition:
    """``resource`` as the settings built it, with an empty config schema.

    A Pythonic resource's fields are launch-time config: the launchpad could send a run with
    another ``portal.public_url`` (mailing the real token to another host) or another EDP URL.
    With no schema, such run config is refused ("unexpected config entry") before the run starts.
    """

    def resource_fn(context: InitResourceContext) -> Iterator[ConfigurableResource]:
        # A copy per initialisation: sensors and runs set resources up concurrently, and
        # setup_for_execution keeps per-use state (platform_db's engine) on the instance.
        instance = resource.model_copy()
        instance.setup_for_execution(context)
        try:
            yield instance
        finally:
            instance.teardown_after_execution(context)

    return ResourceDefinition(resource_fn=resource_fn, config_schema={}, description=type(resource).__doc__)


def io_manager_bound_to_settings(factory: ConfigurableIOManagerFactory) -> IOManagerDefinition:
    """The IO manager ``factory`` makes, with an empty config schema (see ``bound_to_settings``)."""
    return IOManagerDefinition(
        resource_fn=factory.create_io_manager, config_schema={}, description=type(factory).__doc__
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    """Every resource of the pipeline, fixed by the settings: a run cannot override any of them."""
    return {
        name: io_manager_bound_to_settings(resource)
        if isinstance(resource, ConfigurableIOManagerFactory)
        else bound_to_settings(resource)
        for name, resource in configurable_resources(settings).items()
    }


def configurable_resources(
    settings: Settings,
) -> dict[str, ConfigurableResource | ConfigurableIOManagerFactory]:
    # Only the embedded stand-in gets explicit (placeholder) keys: real keys would show in the
    # Dagster UI, so beta takes them from the environment or the instance/task role.
    standin_key = STANDIN_AWS_KEY if settings.aws.endpoint_url else None
    s3 = S3Resource(
        region_name=settings.aws.region,
        endpoint_url=settings.aws.endpoint_url,
        aws_access_key_id=standin_key,
        aws_secret_access_key=standin_key,
    )
    return {
        "s3": s3,
        "artifacts": ArtifactBucketResource(
            s3=s3,
            bucket=settings.artifacts.bucket,
        ),
        "ses": SesResource(
            region_name=settings.aws.region,
            endpoint_url=settings.aws.endpoint_url,
            sender=settings.email.sender,
            outbox_dir=settings.email.outbox_dir,
            send_attempts=settings.email.send_attempts,
            send_backoff_seconds=settings.email.send_backoff_seconds,
            connect_timeout_seconds=settings.email.connect_timeout_seconds,
            read_timeout_seconds=settings.email.read_timeout_seconds,
            aws_access_key_id=standin_key,
            aws_secret_access_key=standin_key,
        ),
        "edp": EdpResource(
            base_url=settings.edp.base_url,
            timeout_seconds=settings.edp.timeout_seconds,
            job_wait_seconds=settings.pipeline.edp_wait_in_run_seconds,
            retries=settings.edp.retries,
            artifact_hosts=list(settings.edp.artifact_hosts),
            allow_private_artifact_hosts=settings.edp.allow_private_artifact_hosts,
            max_artifacts=settings.edp.max_artifacts,
            max_artifact_bytes=settings.edp.max_artifact_bytes,
            max_dtm_bytes=settings.edp.max_dtm_bytes,
            max_job_bytes=settings.edp.max_job_bytes,
            max_artifact_redirects=settings.edp.max_artifact_redirects,
            download_deadline_seconds=settings.edp.download_deadline_seconds,
            max_job_answer_bytes=settings.edp.max_job_answer_bytes,
        ),
        "platform_db": PlatformDbResource(url=settings.platform_db.url),
        "portal": PortalResource(
            public_url=settings.api.public_url,
            local_key_file=settings.portal.local_key_file,
            local_signing_key_file=settings.portal.local_signing_key_file,
        ),
        "delivery": DeliveryResource(
            stage=settings.stage,
            edge_registry=settings.edge.registry,
            release_version=PROJECT_VERSION,
            require_edge_images=settings.airgap.require_edge_images,
            max_redeliveries_per_order=settings.api.max_redeliveries_per_order,
            max_redeliveries_per_order_per_day=settings.api.max_redeliveries_per_order_per_day,
            max_redelivery_backfill_orders=settings.pipeline.max_redelivery_backfill_orders,
        ),
        "io_manager": S3PickleIOManager(
            s3_resource=s3, s3_bucket=settings.artifacts.bucket, s3_prefix=IO_PREFIX
        ),
    }
