"""apk_sensor: an APK from the HMI CI resumes the orders that wait for one, once per APK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.orders import OrderStatus
from order_pipeline.keys import APK, EMAIL, MANIFEST
from standins.hmi_ci import publish_sample_apk
from tests.order_lifecycle import walk_to

if TYPE_CHECKING:
    from tests.sensors.conftest import Platform


def _waiting_order(platform: Platform, target: str = "cloud") -> str:
    order = platform.submit_order(target)
    platform.add_partitions(order.cfg_id)
    walk_to(platform.orders, order.cfg_id, OrderStatus.WAITING_FOR_APK)
    return order.cfg_id


def test_no_apk_skips(platform: Platform) -> None:
    _waiting_order(platform)

    data = platform.tick("apk_sensor")

    assert data.run_requests == []
    assert data.skip_message


def test_unrelated_objects_under_apk_are_not_an_apk(platform: Platform) -> None:
    _waiting_order(platform)
    platform.s3().put_object(
        Bucket=platform.settings.artifacts.bucket, Key="apk/README.txt", Body=b"not an apk"
    )

    data = platform.tick("apk_sensor")

    assert data.run_requests == []
    assert data.skip_message


def test_an_apk_resumes_the_waiting_order(platform: Platform) -> None:
    cfg_id = _waiting_order(platform)
    key = publish_sample_apk(platform.s3(), platform.settings.artifacts.bucket, "1.0.0")

    data = platform.tick("apk_sensor")

    [request] = data.run_requests
    assert request.partition_key == cfg_id
    assert set(request.asset_selection) == {APK, MANIFEST, EMAIL}
    assert cfg_id in request.run_key and key in request.run_key


def test_orders_not_waiting_for_an_apk_are_left_alone(platform: Platform) -> None:
    waiting = _waiting_order(platform)
    pending = platform.submit_order()
    platform.add_partitions(pending.cfg_id)
    platform.orders.record_edp_job(pending.cfg_id, "job-1")
    delivered = platform.submit_order("onprem")
    platform.add_partitions(delivered.cfg_id)
    walk_to(platform.orders, delivered.cfg_id, OrderStatus.DELIVERED)
    publish_sample_apk(platform.s3(), platform.settings.artifacts.bucket, "1.0.0")

    data = platform.tick("apk_sensor")

    assert [request.partition_key for request in data.run_requests] == [waiting]


def test_the_same_apk_asks_with_the_same_run_key_and_a_newer_one_with_a_new_key(platform: Platform) -> None:
    cfg_id = _waiting_order(platform)
    bucket = platform.settings.artifacts.bucket
    old_key = publish_sample_apk(platform.s3(), bucket, "1.0.0")
    first = platform.tick("apk_sensor")

    # The daemon dedupes run keys: asking again for the same APK starts no second run.
    again = platform.tick("apk_sensor", cursor=first.cursor)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]

    new_key = publish_sample_apk(platform.s3(), bucket, "1.1.0")
    newer = platform.tick("apk_sensor", cursor=again.cursor)

    [request] = newer.run_requests
    assert request.partition_key == cfg_id
    assert new_key in request.run_key and old_key not in request.run_key
    assert request.run_key != first.run_requests[0].run_key


def test_the_highest_version_wins_over_the_latest_upload(platform: Platform) -> None:
    _waiting_order(platform)
    bucket = platform.settings.artifacts.bucket
    newest = publish_sample_apk(platform.s3(), bucket, "2.0.0")
    publish_sample_apk(platform.s3(), bucket, "1.9.9")  # a hotfix of an older line, uploaded later

    [request] = platform.tick("apk_sensor").run_requests

    assert newest in request.run_key


def test_an_apk_with_no_order_waiting_requests_nothing(platform: Platform) -> None:
    publish_sample_apk(platform.s3(), platform.settings.artifacts.bucket, "1.0.0")

    data = platform.tick("apk_sensor")

    assert data.run_requests == []
