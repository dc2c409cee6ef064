"""The operator's yank of a portal version from the Dagster UI: the job ``yank_portal_version``.

Launchpad: pick the order's partition (cfg_id) and give ``version``, ``reason`` (``undo: true``
un-yanks) and ``notify_customer``. It does what ``POST /orders/{cfg_id}/portal-versions/{N}/yank``
does, through the same functions.
"""

from pathlib import Path

from dagster import (
    AssetObservation,
    Config,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from contracts.records import current_version
from delivery.portal_yank import set_yank
from delivery.yank_notice import YankNoticeNotSent, compose_yank_email, send_yank_notice_once
from order_pipeline.keys import MANIFEST, YANK_JOB, orders_partitions
from resources.artifacts import ArtifactBucketResource
from resources.platform_db import PlatformDbResource
from resources.portal import PortalResource
from resources.ses import SesResource


class YankConfig(Config):
    version: int = Field(ge=1, description="The portal version to yank (or un-yank).")
    reason: str = Field(
        default="", description="Why it is withdrawn; the customer reads it. Needed unless undo."
    )
    undo: bool = Field(default=False, description="Un-yank the version instead: downloadable again.")
    notify_customer: bool = Field(
        default=False, description="Email the customer about the yank (once per version, never again)."
    )


@op(name="yank_portal_version_op")
def yank_portal_version_op(
    context: OpExecutionContext,
    config: YankConfig,
    platform_db: PlatformDbResource,
    artifacts: ArtifactBucketResource,
    ses: SesResource,
    portal: PortalResource,
) -> None:
    cfg_id = context.partition_key
    order = platform_db.orders.get(cfg_id)
    if order is None:
        raise Failure(f"no order {cfg_id} in platform_db")
    if not config.undo and not config.reason.strip():
        raise Failure("reason: a yank needs a reason the customer can read")
    try:
        changed = set_yank(
            cfg_id=cfg_id,
            version=config.version,
            reason=None if config.undo else config.reason,
            order=order.configurator_payload(),
            store=artifacts.get_store(),
            deliveries=platform_db.deliveries,
        )
    except KeyError:
        raise Failure(f"order {cfg_id} has no published portal version {config.version}") from None
    except ValueError as exc:
        raise Failure(str(exc)) from None
    current = current_version(platform_db.deliveries.portal_versions(cfg_id))
    metadata: dict[str, MetadataValue] = {
        "portal_version": MetadataValue.int(changed.version),
        "yanked": MetadataValue.bool(changed.yanked),
        "reason": MetadataValue.text(changed.yank_reason or ""),
        "current_version": MetadataValue.text(str(current.version) if current else "none"),
    }
    if changed.yanked and config.notify_customer:
        payload = order.configurator_payload()
        try:
            message_id = send_yank_notice_once(
                message=compose_yank_email(
                    sender=ses.sender,
                    order=payload,
                    yanked=changed,
                    current_version=None if current is None else current.version,
                    portal_url=portal.links_for(cfg_id, order.portal_token_generation).portal(),
                ),
                yanked=changed,
                recipient=payload.customer.email,
                sender=ses.sender,
                ses_client=ses.get_client(),
                claims=platform_db.deliveries,
                outbox_dir=Path(ses.outbox_dir) if ses.outbox_dir else None,
            )
        except YankNoticeNotSent as exc:
            raise Failure(
                f"version {changed.version} is yanked, but the customer was not told: {exc}"
            ) from None
        metadata["customer_notified"] = MetadataValue.text(
            "already told before" if message_id is None else f"sent (SES {message_id})"
        )
    # Shown on order/manifest's partition in the UI, beside the versions it published.
    context.log_event(AssetObservation(asset_key=MANIFEST, partition=cfg_id, metadata=metadata))


def build_yank_job() -> JobDefinition:
    @job(name=YANK_JOB, partitions_def=orders_partitions, description=__doc__)
    def yank_portal_version() -> None:
        yank_portal_version_op()

    return yank_portal_version
