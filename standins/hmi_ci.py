"""Stand-in for the HMI team's CI (ems_hmi_cicd), which drops Android APKs into the artifact bucket.

The real CI uploads ``apk/<name>-<version>.apk`` after each HMI release; this stand-in uploads a
small, deterministic sample APK (a zip with a manifest and a placeholder dex) at the same place,
so the pipeline's APK handling can run without the HMI team.

Run it with ``python -m standins.hmi_ci [--version X.Y.Z] [--name NAME]``.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from typing import Any

import boto3

from platform_config.settings import ConfigError, Settings, load_settings

APK_PREFIX = "apk/"
APK_CONTENT_TYPE = "application/vnd.android.package-archive"
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Fixed entry timestamps and attributes: the same version always gives the same bytes and sha256.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o644 << 16
# The DEX magic ("dex\n035\0") in front of padding, so tools that sniff the file see a dex.
DEX_PLACEHOLDER = b"dex\n035\x00" + bytes(104)
ANDROID_PACKAGE = "com.example.ems.hmi"


def validate_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise ValueError(f"APK version {version!r} must look like 1.2.3")
    return version


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"APK name {name!r} must be lowercase letters, digits and dashes")
    return name


def apk_key(name: str, version: str) -> str:
    return f"{APK_PREFIX}{validate_name(name)}-{validate_version(version)}.apk"


def _version_code(version: str) -> int:
    major, minor, patch = (int(part) for part in version.split("."))
    return major * 1_000_000 + minor * 1_000 + patch


def build_sample_apk(version: str, name: str = "ems-hmi") -> bytes:
    """A sample APK: genuine zip layout, fake content, identical bytes for identical input."""
    validate_version(version)
    validate_name(name)
    manifest = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<manifest xmlns:android="http://schemas.android.com/apk/res/android"\n'
        f'    package="{ANDROID_PACKAGE}"\n'
        f'    android:versionCode="{_version_code(version)}"\n'
        f'    android:versionName="{version}">\n'
        '    <uses-sdk android:minSdkVersion="26" android:targetSdkVersion="34" />\n'
        f'    <application android:label="{name}" />\n'
        "</manifest>\n"
    )
    meta_manifest = (
        f"Manifest-Version: 1.0\r\nCreated-By: ems_hmi_cicd stand-in\r\nVersion: {version}\r\n\r\n"
    )
    entries = (
        ("AndroidManifest.xml", manifest.encode("utf-8")),
        ("classes.dex", DEX_PLACEHOLDER),
        ("META-INF/MANIFEST.MF", meta_manifest.encode("utf-8")),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry_name, data in entries:
            info = zipfile.ZipInfo(entry_name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = ZIP_FILE_MODE
            archive.writestr(info, data)
    return buffer.getvalue()


def publish_sample_apk(s3_client: Any, bucket: str, version: str = "1.0.0", name: str = "ems-hmi") -> str:
    """Upload the sample APK of ``version`` to ``apk/<name>-<version>.apk`` and return the key."""
    key = apk_key(name, version)
    s3_client.put_object(
        Bucket=bucket,
        Key=key,
        Body=build_sample_apk(version, name),
        ContentType=APK_CONTENT_TYPE,
        Metadata={"version": version},
    )
    return key


def embedded_stage_s3(standin: str) -> tuple[Settings, Any]:
    """The current stage's settings and an S3 client of its embedded AWS; exits on real AWS."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    if not settings.standins.aws.enabled:
        sys.exit(f"{standin} only publishes to the embedded AWS; stage {settings.stage!r} uses real AWS")
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.aws.endpoint_url,
        region_name=settings.aws.region,
        **settings.aws_credentials(),
    )
    return settings, s3


def _version_arg(value: str) -> str:
    try:
        return validate_version(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name_arg(value: str) -> str:
    try:
        return validate_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    """Publish a sample APK to the current stage's artifact bucket, as the HMI CI would."""
    parser = argparse.ArgumentParser(prog="python -m standins.hmi_ci", description=main.__doc__)
    parser.add_argument("--version", type=_version_arg, default="1.0.0", help="APK version, e.g. 1.2.3")
    parser.add_argument("--name", type=_name_arg, default="ems-hmi", help="APK name (default: ems-hmi)")
    args = parser.parse_args(argv)
    # In beta the real HMI CI owns apk/; a sample there would reach customers.
    settings, s3 = embedded_stage_s3("the HMI CI stand-in")
    key = publish_sample_apk(s3, settings.artifacts.bucket, version=args.version, name=args.name)
    print(f"s3://{settings.artifacts.bucket}/{key}")


if __name__ == "__main__":
    main()
