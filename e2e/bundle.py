"""The bundle an e2e run deploys: produced from an order by the delivery code, or taken as given.

Both delivery paths are followed to the file the customer's machine ends up with:

- cloud: the bundle files are stored in S3 under the order's prefix (the embedded S3, moto's server on a loopback port), the
  order's CloudFormation template is composed, and each file is fetched the way its UserData
  fetches it: from the bucket and prefix substituted into the script, for each name it lists;
- on-prem: the seed ISO is built and the files are extracted again from the ``write_files`` of
  its ``user-data``, as cloud-init writes them.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import pycdlib
import yaml
from cfnlint.decode.decode import decode_str
from dotenv import dotenv_values
from moto.server import ThreadedMotoServer

from contracts.configurator import CloudDeployment, ConfiguratorPayload
from contracts.dtm import DeviceTopologyModel
from delivery.artifact_store import ArtifactStore, order_key
from delivery.cfn import compose_cfn_template
from delivery.edge_bundle import (
    BUNDLE_FILES,
    COMPOSE_NAME,
    DTM_NAME,
    SECRETS_NAME,
    STACK_DIR,
    EdgeImages,
    build_bundle,
)
from delivery.iso import USER_DATA_NAME, build_seed_iso
from industrial_fixtures import fixture_dtm_bytes, load_fixture_dtm, load_manifest
from platform_config.settings import PROJECT_VERSION, STANDIN_AWS_KEY
from standins.edp import build_dtm, build_flags

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples"
DeliveryPath = Literal["cloud", "onprem"]
DtmSource = Literal["order", "fixtures"]
DELIVERY_PATHS: tuple[DeliveryPath, ...] = ("cloud", "onprem")
# Customer-shape orders: devices without connections, the shape of a bare deploy.
DEFAULT_ORDERS: dict[DeliveryPath, Path] = {
    "cloud": EXAMPLES / "order-cloud-bare.json",
    "onprem": EXAMPLES / "order-onprem-bare.json",
}
E2E_BUCKET = "platform-artifacts-e2e"


class BundleError(RuntimeError):
    """A bundle could not be produced or read; the message says which file and why."""


@dataclass(frozen=True)
class Bundle:
    """The bundle files side by side in ``directory``, and where they came from."""

    directory: Path
    origin: str
    # "cloud" or "onprem" when produced here, "given" for an existing bundle directory.
    delivery: str = "given"

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def dtm(self) -> DeviceTopologyModel:
        return DeviceTopologyModel.model_validate(json.loads(self.read(DTM_NAME)))

    def commissioning_headers(self) -> dict[str, str]:
        """The bearer token the bundle's gateway requires for GET and POST /topology and GET /status."""
        token = dotenv_values(self.directory / SECRETS_NAME).get("COMMISSIONING_TOKEN")
        if not token:
            raise BundleError(f"{self.directory / SECRETS_NAME} holds no COMMISSIONING_TOKEN")
        return {"Authorization": f"Bearer {token}"}

    def compose(self) -> dict[str, Any]:
        document = yaml.safe_load(self.read(COMPOSE_NAME))
        if not isinstance(document, dict):
            raise BundleError(f"{self.directory / COMPOSE_NAME} is not a compose mapping")
        return document


def edge_images(stage: str = "beta") -> EdgeImages:
    """The edge images the platform's orders name in ``stage`` (the delivered stack runs beta's)."""
    defaults = yaml.safe_load((PROJECT_ROOT / "cfg.defaults.yml").read_text())
    return EdgeImages.release(str(defaults[stage].get("edge", {}).get("registry", "")), PROJECT_VERSION)


def load_order(path: Path) -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(json.loads(Path(path).read_bytes()))


def bundle_files_for(
    order: ConfiguratorPayload, *, cfg_id: str, dtm_source: DtmSource, images: EdgeImages | None = None
) -> dict[str, bytes]:
    """The files the pipeline puts into the order's bundle.

    ``dtm_source="order"``: the DTM EDP engineers from the order (``build_dtm``);
    ``"fixtures"``: EDP's dtm.json is ``industrial-fixtures.json``, which points the gateway at the
    industrial fixtures. ``images``: what the compose file names (default: beta's plain tags; a
    container run passes the references its release pinned).
    """
    if dtm_source == "fixtures":
        dtm, dtm_bytes = load_fixture_dtm(), fixture_dtm_bytes()
    else:
        dtm, dtm_bytes = build_dtm(order), None
    return build_bundle(
        cfg_id=cfg_id,
        order=order,
        dtm=dtm,
        flags=build_flags(order),
        images=images or edge_images(),
        fixtures=load_manifest().fixtures,
        # The scenarios commission with the token the bundle carries, as a customer would.
        commissioning_token=secrets.token_urlsafe(16),
        dtm_bytes=dtm_bytes,
    )


def fetch_as_user_data(
    *, cfg_id: str, order: ConfiguratorPayload, files: Mapping[str, bytes]
) -> dict[str, bytes]:
    """Cloud path: store the bundle in S3, compose the template, fetch what its UserData fetches."""
    deployment = order.deployment
    if not isinstance(deployment, CloudDeployment):
        raise BundleError(f"the cloud path needs a cloud order, this one targets {deployment.target!r}")
    port = _free_loopback_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "s3",
            region_name=deployment.region,
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=STANDIN_AWS_KEY,
            aws_secret_access_key=STANDIN_AWS_KEY,
        )
        # moto keeps its buckets per process, across servers: each run gets a bucket of its own.
        bucket = f"{E2E_BUCKET}-{uuid.uuid4().hex[:12]}"
        if deployment.region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": deployment.region}
            )
        store = ArtifactStore(client, bucket)
        stored = [store.put(order_key(cfg_id, "bundle", name), data) for name, data in files.items()]
        text = compose_cfn_template(
            cfg_id=cfg_id,
            order=order,
            bucket=bucket,
            bundle_prefix=order_key(cfg_id, "bundle") + "/",
            bundle_sha256={obj.name: obj.sha256 for obj in stored},
        ).decode("utf-8")
        # CloudFormation YAML (short-form intrinsics such as !Equals), read as CloudFormation reads it.
        template, errors = decode_str(text)
        if errors or template is None:
            raise BundleError(f"the CloudFormation template does not parse: {errors}")
        variables = _user_data_variables(template)
        if variables.get("StackDir") != STACK_DIR:
            raise BundleError(f"UserData writes the bundle to {variables.get('StackDir')!r}, not {STACK_DIR}")
        fetched: dict[str, bytes] = {}
        for name in str(variables["BundleFiles"]).split():
            key = f"{variables['BundlePrefix']}{name}"
            fetched[name] = client.get_object(Bucket=variables["BundleBucket"], Key=key)["Body"].read()
    finally:
        server.stop()
    return fetched


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _user_data_variables(template: Mapping[str, Any]) -> dict[str, Any]:
    """The values substituted into the UserData script (``Fn::Base64`` of ``Fn::Sub``)."""
    for resource in template.get("Resources", {}).values():
        data = resource.get("Properties", {}).get("LaunchTemplateData", {})
        user_data = data.get("UserData")
        if user_data is None:
            continue
        script, variables = user_data["Fn::Base64"]["Fn::Sub"]
        for name in ("BundleBucket", "BundlePrefix", "BundleFiles"):
            if f"${{{name}}}" not in script:
                raise BundleError(f"the UserData script does not use ${{{name}}}")
        return dict(variables)
    raise BundleError("the template has no launch template with UserData")


def extract_from_seed_iso(image: bytes) -> dict[str, bytes]:
    """On-prem path: the bundle files as cloud-init writes them from the seed image's user-data."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{USER_DATA_NAME}")
    finally:
        iso.close()
    text = out.getvalue().decode("utf-8")
    if not text.startswith("#cloud-config\n"):
        raise BundleError("the seed image's user-data is not a #cloud-config document")
    document = yaml.safe_load(text)
    files: dict[str, bytes] = {}
    for entry in document.get("write_files", []):
        path = str(entry["path"])
        if not path.startswith(f"{STACK_DIR}/"):
            continue
        if entry.get("encoding") not in ("b64", "base64"):
            raise BundleError(f"write_files entry {path} is not base64-encoded")
        files[path.removeprefix(f"{STACK_DIR}/")] = base64.b64decode(entry["content"], validate=True)
    return files


def write_bundle(files: Mapping[str, bytes], directory: Path, origin: str, delivery: str = "given") -> Bundle:
    missing = [name for name in BUNDLE_FILES if name not in files]
    if missing:
        raise BundleError(f"{origin}: the bundle lacks {', '.join(missing)}")
    directory.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        (directory / name).write_bytes(files[name])
    return Bundle(directory=directory, origin=origin, delivery=delivery)


def produce_bundle(
    path: DeliveryPath,
    *,
    directory: Path,
    dtm_source: DtmSource = "order",
    order_path: Path | None = None,
    images: EdgeImages | None = None,
) -> Bundle:
    """The bundle ``path`` delivers for the order (default: that path's bare example order)."""
    order_path = Path(order_path or DEFAULT_ORDERS[path])
    order = load_order(order_path)
    cfg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ems-e2e:{path}:{order_path.name}:{dtm_source}"))
    files = bundle_files_for(order, cfg_id=cfg_id, dtm_source=dtm_source, images=images)
    try:
        shown = order_path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        shown = order_path
    if path == "cloud":
        delivered = fetch_as_user_data(cfg_id=cfg_id, order=order, files=files)
        origin = f"cloud: {shown} -> S3 -> UserData fetch"
    else:
        delivered = extract_from_seed_iso(build_seed_iso(cfg_id=cfg_id, order=order, bundle=files))
        origin = f"onprem: {shown} -> seed ISO -> user-data write_files"
    if dtm_source == "fixtures":
        origin += " (dtm.json: industrial-fixtures.json)"
    bundle = write_bundle(delivered, directory, origin, path)
    # What arrived must be what the pipeline built: a lossy delivery path is a finding of its own.
    for name in BUNDLE_FILES:
        if delivered[name] != files[name]:
            raise BundleError(f"{origin}: {name} arrived changed")
    return bundle


def existing_bundle(directory: Path) -> Bundle:
    directory = Path(directory)
    missing = [name for name in BUNDLE_FILES if not (directory / name).is_file()]
    if missing:
        raise BundleError(f"{directory} lacks {', '.join(missing)}")
    return Bundle(directory=directory.resolve(), origin=f"bundle dir {directory}")
