"""What the API's endpoints share: settings, platform_db, the artifact bucket, portal tokens and Dagster."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3
from botocore.config import Config

from api.asset_status import AssetStatusReader
from api.auth import ApiCredentials
from api.dagster_graphql import DagsterGraphQL
from api.download_record import DownloadRecorder
from api.order_runs import FirstRunStarter
from contracts.records import Order
from delivery.artifact_store import ArtifactStore
from delivery.portal_links import PortalLinks, PortalTokens
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.downloads import DownloadRepository
from platform_db.operator_calls import OperatorCallRepository
from platform_db.order_retries import OrderRetryRepository
from platform_db.redeliveries import RedeliveryRepository


def _s3_client(settings: Settings, endpoint_url: str | None) -> Any:
    return boto3.session.Session().client(
        "s3", region_name=settings.aws.region, endpoint_url=endpoint_url, **settings.aws_credentials()
    )


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    orders: OrderRepository
    deliveries: DeliveryRepository
    store: ArtifactStore
    # Presigned URLs must name the endpoint the customer's browser reaches, and signature v4
    # signs the host, so they come from a client of that endpoint.
    presigner: ArtifactStore
    tokens: PortalTokens
    redeliveries: RedeliveryRepository
    order_retries: OrderRetryRepository
    # The other state-changing operator calls, by Idempotency-Key (api/operator_calls.py).
    operator_calls: OperatorCallRepository
    # Re-deliveries and retries are Dagster backfills launched through the webserver's GraphQL API ...
    backfills: DagsterGraphQL
    # An order's first run is queued right after its commit, over the same GraphQL API.
    first_runs: FirstRunStarter
    # ... and the assets' status is asked of the same webserver.
    asset_status: AssetStatusReader
    # The portal's download record: read by GET /orders/{cfg_id}, written by the portal's handlers.
    downloads: DownloadRepository
    download_record: DownloadRecorder
    # None where the stage needs no credential (local, demo: loopback only).
    credentials: ApiCredentials | None

    @classmethod
    def build(cls, settings: Settings, orders: OrderRepository) -> ApiState:
        bucket = settings.artifacts.bucket
        graphql_url = settings.dagster.webserver_graphql_url()
        dagster = DagsterGraphQL(graphql_url)
        downloads = DownloadRepository(orders.engine)
        return cls(
            settings=settings,
            orders=orders,
            deliveries=DeliveryRepository(orders.engine),
            store=ArtifactStore(_s3_client(settings, settings.aws.endpoint_url), bucket),
            presigner=ArtifactStore(
                _s3_client(settings, settings.aws.public_endpoint_url or settings.aws.endpoint_url), bucket
            ),
            tokens=PortalTokens(settings.portal_token_key()),
            redeliveries=RedeliveryRepository(orders.engine),
            order_retries=OrderRetryRepository(orders.engine),
            operator_calls=OperatorCallRepository(orders.engine),
            backfills=dagster,
            first_runs=FirstRunStarter(orders, dagster, settings.pipeline.edp_wait_in_run_seconds),
            asset_status=AssetStatusReader.for_url(graphql_url),
            downloads=downloads,
            download_record=DownloadRecorder(downloads, timedelta(days=settings.portal.download_record_days)),
            credentials=ApiCredentials.from_settings(settings),
        )

    @functools.cached_property
    def _ses(self) -> Any:
        email = self.settings.email
        # One attempt per request: botocore's retry would send the email again when SES took it
        # and only its answer was lost.
        config = Config(
            retries={"total_max_attempts": 1},
            connect_timeout=email.connect_timeout_seconds,
            read_timeout=email.read_timeout_seconds,
        )
        return boto3.session.Session().client(
            "sesv2",
            region_name=self.settings.aws.region,
            endpoint_url=self.settings.aws.endpoint_url,
            config=config,
            **self.settings.aws_credentials(),
        )

    def ses_client(self) -> Any:
        """SES for the emails the API sends itself (a yank's notice to the customer)."""
        return self._ses

    def portal_links(self, order: Order) -> PortalLinks:
        token = self.tokens.token(order.cfg_id, order.portal_token_generation)
        return PortalLinks(base_url=self.settings.api.public_url, token=token)
