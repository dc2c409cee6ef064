"""Stand-in for the edge images' release CI, which pushes, pins and publishes the edge images.

A release pushes the delivered stack's images to the stage's registry (``edge.registry``), saves
exactly the pushed images into ``edge-images/edge-images-<version>.tar``, and publishes that
archive, its SBOM and the release record delivered compose files take their digest-pinned
references from (``python -m delivery.edge_image_archive --bucket ... --registry ...`` with the
release's credentials). Locally that is this command, with ``make run`` up: it releases the images
`make images` built on this engine into the stage's embedded S3, as the HMI CI stand-in does with
an APK. Run it with ``python -m standins.edge_image_ci`` (or ``make edge-images``).

Local and demo name no registry (``edge.registry: ''``): the release then pushes to a registry of
its own on loopback (``LoopbackRegistry``, Debian's ``docker-registry``) that lives for the release
only. The push leaves the digest references on this engine, so the pinned references of the
record resolve here afterwards (and nowhere else, which a local stage does not need).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import EdgeImages
from delivery.edge_image_archive import release_edge_images
from platform_config.settings import PROJECT_VERSION
from standins.hmi_ci import embedded_stage_s3

REGISTRY_BINARY = "docker-registry"
REGISTRY_START_SECONDS = 20.0
REGISTRY_STOP_SECONDS = 10.0
DOCKER_TAG_SECONDS = 60.0
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}
  secret: {secret}
"""


class RegistryError(RuntimeError):
    """The loopback registry did not start; the message says why."""


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LoopbackRegistry:
    """A distribution registry (``docker-registry``) on 127.0.0.1, its storage in a temporary folder.

    Docker talks plain HTTP to registries on 127.0.0.0/8, so nothing needs configuring on the
    engine. Use as a context manager: the process and its storage go at the end.
    """

    def __init__(self, port: int = 0, binary: str = REGISTRY_BINARY) -> None:
        self.port = port or _free_loopback_port()
        self.binary = binary
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: the registry part of image names pushed here."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackRegistry:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if shutil.which(self.binary) is None:
            raise RegistryError(f"{self.binary} is not installed (apt-get install docker-registry)")
        self._folder = Path(tempfile.mkdtemp(prefix="edge-registry-"))
        config = self._folder / "config.yml"
        config.write_text(
            REGISTRY_CONFIG.format(
                storage=self._folder / "storage", address=self.address, secret=secrets.token_hex(16)
            )
        )
        log = self._folder / "registry.log"
        with log.open("wb") as out:
            self._process = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + REGISTRY_START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        tail = log.read_text(errors="replace")[-2000:]
        self.stop()
        raise RegistryError(
            f"{self.binary} did not answer on {self.address} within {REGISTRY_START_SECONDS:.0f} s: {tail}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=REGISTRY_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=REGISTRY_STOP_SECONDS)
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def tag_for_registry(built: EdgeImages, registry: str, version: str, docker: str = "docker") -> EdgeImages:
    """``docker tag`` the local build with the names under ``registry``, as ``EDGE_REGISTRY=... make images`` does."""
    named = EdgeImages.release(registry, version)
    for source, target in ((built.gateway, named.gateway), (built.fixtures, named.fixtures)):
        result = subprocess.run(
            [docker, "tag", source, target],
            capture_output=True,
            text=True,
            timeout=DOCKER_TAG_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise RegistryError(
                f"docker tag {source} {target}: {result.stderr.strip() or 'failed'} (make images first)"
            )
    return named


def main(argv: list[str] | None = None) -> None:
    """Push, pin and publish the edge images built here to the current stage's artifact bucket."""
    parser = argparse.ArgumentParser(prog="python -m standins.edge_image_ci", description=main.__doc__)
    parser.add_argument("--docker", default="docker", help="the docker client (default: docker)")
    args = parser.parse_args(argv)
    # In beta the release CI owns edge-images/: an archive of a developer's images would reach customers.
    settings, s3 = embedded_stage_s3("the edge images stand-in")
    store = ArtifactStore(s3, settings.artifacts.bucket)
    if settings.edge.registry:
        images = EdgeImages.release(settings.edge.registry, PROJECT_VERSION)
        release_edge_images(images, store, PROJECT_VERSION, args.docker)
        return
    try:
        with LoopbackRegistry() as registry:
            images = tag_for_registry(
                EdgeImages.release("", PROJECT_VERSION), registry.address, PROJECT_VERSION, args.docker
            )
            release_edge_images(images, store, PROJECT_VERSION, args.docker)
    except RegistryError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
