"""The HMI CI stand-in: a deterministic sample APK at apk/<name>-<version>.apk."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from platform_config.settings import Settings
from standins.aws import start_aws_standin
from standins.hmi_ci import APK_CONTENT_TYPE, build_sample_apk, main, publish_sample_apk

BUCKET = "platform-artifacts-test"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client(
            "s3", region_name="eu-central-1", aws_access_key_id="standin", aws_secret_access_key="standin"
        )
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield client


def test_sample_apk_is_a_genuine_zip_with_manifest_and_dex() -> None:
    data = build_sample_apk("1.2.3")
    with zipfile.ZipFile(io.BytesIO(data)) as apk:
        assert apk.testzip() is None
        assert set(apk.namelist()) == {"AndroidManifest.xml", "classes.dex", "META-INF/MANIFEST.MF"}
        manifest = apk.read("AndroidManifest.xml").decode()
        assert 'android:versionName="1.2.3"' in manifest
        assert 'android:versionCode="1002003"' in manifest
        assert apk.read("classes.dex").startswith(b"dex\n035\x00")


def test_same_version_gives_same_bytes() -> None:
    assert build_sample_apk("1.0.0") == build_sample_apk("1.0.0")
    assert build_sample_apk("1.0.0") != build_sample_apk("1.0.1")


def test_publish_uploads_under_apk_prefix(s3: Any) -> None:
    key = publish_sample_apk(s3, BUCKET, version="2.4.0")
    assert key == "apk/ems-hmi-2.4.0.apk"
    stored = s3.get_object(Bucket=BUCKET, Key=key)
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(build_sample_apk("2.4.0")).hexdigest()
    assert stored["ContentType"] == APK_CONTENT_TYPE
    assert stored["Metadata"] == {"version": "2.4.0"}

    assert (
        publish_sample_apk(s3, BUCKET, version="2.4.0", name="ems-hmi-tablet")
        == "apk/ems-hmi-tablet-2.4.0.apk"
    )


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-beta", "1.0.0/../../x", "", "1..0"])
def test_invalid_versions_are_rejected(s3: Any, version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        publish_sample_apk(s3, BUCKET, version=version)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


@pytest.mark.parametrize("name", ["EMS", "ems hmi", "../ems", "-ems", ""])
def test_invalid_names_are_rejected(s3: Any, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        publish_sample_apk(s3, BUCKET, name=name)


@pytest.mark.slow
def test_cli_publishes_to_the_embedded_aws(
    make_settings: Callable[[dict[str, Any]], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings({})
    server = start_aws_standin(settings)
    try:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ENV", "local")
        # make_settings wrote the customer file that points at this server's port.
        monkeypatch.setenv("CFG_CUSTOMER_PATH", str(tmp_path / "cfg.customer.yml"))
        monkeypatch.setenv("SECRETS_PATH", str(tmp_path / "no-secrets.env"))
        main(["--version", "3.1.4"])
        assert capsys.readouterr().out.strip() == f"s3://{settings.artifacts.bucket}/apk/ems-hmi-3.1.4.apk"
        s3 = boto3.client(
            "s3",
            endpoint_url=settings.aws.endpoint_url,
            region_name=settings.aws.region,
            **settings.aws_credentials(),
        )
        body = s3.get_object(Bucket=settings.artifacts.bucket, Key="apk/ems-hmi-3.1.4.apk")["Body"].read()
        assert body == build_sample_apk("3.1.4")

        with pytest.raises(SystemExit):
            main(["--version", "3.1"])
    finally:
        server.stop()
