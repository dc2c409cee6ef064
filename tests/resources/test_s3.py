"""The pipeline's S3 resource and IO manager, against the embedded S3 (moto's server)."""

from __future__ import annotations

import uuid

import pytest
from dagster import DynamicPartitionsDefinition, asset, instance_for_test, materialize

from platform_config.settings import STANDIN_AWS_KEY
from resources.s3 import S3PickleIOManager, S3Resource

orders = DynamicPartitionsDefinition(name="orders")


@asset(key_prefix="order", partitions_def=orders)
def produced() -> dict[str, str]:
    return {"key": "orders/x/cfn/cfn.yaml"}


@asset(key_prefix="order", partitions_def=orders)
def consumed(produced: dict[str, str]) -> str:
    return produced["key"]


@pytest.fixture
def s3(aws_endpoint: str) -> S3Resource:
    return S3Resource(
        region_name="eu-central-1",
        endpoint_url=aws_endpoint,
        aws_access_key_id=STANDIN_AWS_KEY,
        aws_secret_access_key=STANDIN_AWS_KEY,
    )


@pytest.fixture
def bucket(s3: S3Resource) -> str:
    name = f"io-{uuid.uuid4().hex[:20]}"
    s3.get_client().create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    return name


def test_an_output_is_kept_under_dagster_aws_keys_and_read_by_a_later_run(
    s3: S3Resource, bucket: str
) -> None:
    io_manager = S3PickleIOManager(s3_resource=s3, s3_bucket=bucket, s3_prefix="dagster-io")
    with_partition = {"partition_key": "cfg-1"}

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("orders", ["cfg-1"])
        first = materialize(
            [produced], resources={"io_manager": io_manager}, instance=instance, **with_partition
        )
        assert first.success
        # The key layout dagster-aws's S3PickleIOManager used: outputs stored before still load.
        keys = [obj["Key"] for obj in s3.get_client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["dagster-io/order/produced/cfg-1"]

        second = materialize(
            [produced.to_source_asset(), consumed],
            resources={"io_manager": io_manager},
            instance=instance,
            **with_partition,
        )
        assert second.success
        assert second.output_for_node("order__consumed") == "orders/x/cfn/cfn.yaml"


def test_a_missing_output_names_the_key(s3: S3Resource, bucket: str) -> None:
    io_manager = S3PickleIOManager(s3_resource=s3, s3_bucket=bucket, s3_prefix="dagster-io")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("orders", ["cfg-2"])
        result = materialize(
            [produced.to_source_asset(), consumed],
            resources={"io_manager": io_manager},
            instance=instance,
            partition_key="cfg-2",
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "dagster-io/order/produced/cfg-2" in str(failure.step_failure_data.error)


def test_clients_are_made_once_per_configuration(s3: S3Resource) -> None:
    assert s3.get_client() is s3.get_client()
    other = s3.model_copy(update={"max_attempts": 2})
    assert other.get_client() is not s3.get_client()
