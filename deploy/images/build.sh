#!/usr/bin/env bash
# `make images`: every image of the project, from a wheelhouse made on this host.
#
#   platform-api:<version>            Dockerfile                  api, Dagster code location, webserver, daemon
#   ems-edge-base:<version>           deploy/images/edge-base.Dockerfile  the edge images' shared runtime
#   ems-edge-gateway:<version>        edge_gateway/Dockerfile     the delivered stack's gateway
#   ems-industrial-fixtures:<version> industrial_fixtures/Dockerfile  the delivered stack's `fixtures` profile
#
# <version> is pyproject.toml's project version. Environment:
#   BASE_IMAGES        auto (default): the public base images when present or pullable, else local
#                      ones built from Debian packages; public; local
#   PYTHON_BASE_IMAGE  public Python base (default python:3.11-slim)
#   POSTGRES_IMAGE     public PostgreSQL image compose runs (default postgres:15)
#   EDGE_REGISTRY      also tag the edge images <registry>/<name>:<version> (see README, publishing)
#   PYTHON             the Python that runs `pip wheel` (default .venv/bin/python)
#
# It writes build/images.env: the image names chosen, for `docker compose --env-file`.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
BASE_IMAGES=${BASE_IMAGES:-auto}
PYTHON_BASE_IMAGE=${PYTHON_BASE_IMAGE:-python:3.11-slim}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:15}
LOCAL_DEBIAN_ROOT=platform-local/debian:bookworm
LOCAL_PYTHON_BASE=platform-local/python:3.11-bookworm
LOCAL_POSTGRES=platform-local/postgres:15-bookworm
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
mkdir -p build

stage_started=0
stage() { stage_started=$(date +%s); printf 'images: %s\n' "$*"; }
stage_done() { printf 'images:   %s s\n' "$(( $(date +%s) - stage_started ))"; }

have_image() { docker image inspect "$1" >/dev/null 2>&1 || docker pull --quiet "$1" >/dev/null 2>&1; }

build() {  # build TAG DOCKERFILE [BUILD-ARG...]
  local tag=$1 dockerfile=$2; shift 2
  local args=()
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  # The classic builder: the engine this targets need not have BuildKit's buildx plugin.
  DOCKER_BUILDKIT=0 docker build --quiet --file "$dockerfile" "${args[@]}" --tag "$tag" . >build/docker-build.log 2>&1 \
    || { tail -30 build/docker-build.log >&2; exit 1; }
}

case "$BASE_IMAGES" in
  public) ;;
  local) ;;
  auto)
    if have_image "$PYTHON_BASE_IMAGE" && have_image "$POSTGRES_IMAGE"; then BASE_IMAGES=public; else BASE_IMAGES=local; fi ;;
  *) echo "BASE_IMAGES must be auto, public or local, not $BASE_IMAGES" >&2; exit 2 ;;
esac

if [ "$BASE_IMAGES" = local ]; then
  if ! docker image inspect "$LOCAL_DEBIAN_ROOT" >/dev/null 2>&1; then
    stage "Debian bookworm root (debootstrap) -> $LOCAL_DEBIAN_ROOT"
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    rootfs=$(mktemp -d build/debian-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >build/debootstrap.log 2>&1 \
      || { tail -20 build/debootstrap.log >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$LOCAL_DEBIAN_ROOT" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    stage_done
  fi
  stage "local base images $LOCAL_PYTHON_BASE, $LOCAL_POSTGRES (Debian packages)"
  build "$LOCAL_PYTHON_BASE" deploy/images/python-base.Dockerfile "DEBIAN_ROOT_IMAGE=$LOCAL_DEBIAN_ROOT"
  build "$LOCAL_POSTGRES" deploy/images/postgres.Dockerfile "DEBIAN_ROOT_IMAGE=$LOCAL_DEBIAN_ROOT"
  stage_done
  PYTHON_BASE_IMAGE=$LOCAL_PYTHON_BASE
  POSTGRES_IMAGE=$LOCAL_POSTGRES
fi

stage "wheelhouse (pip wheel on this host)"
mkdir -p wheelhouse
# The platform's dependencies as a requirements file: the project's own code is copied as source,
# and the wheelhouse holds only what is downloaded, so its bytes (and the image layers installed
# from it) stay the same from build to build until a dependency changes.
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
  >wheelhouse/platform-requirements.txt
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheelhouse \
  -r wheelhouse/platform-requirements.txt -r edge_gateway/requirements.txt -r industrial_fixtures/requirements.txt \
  >build/wheelhouse.log 2>&1 || { tail -30 build/wheelhouse.log >&2; exit 1; }
stage_done

PLATFORM_IMAGE=platform-api:$VERSION
EDGE_BASE_IMAGE=ems-edge-base:$VERSION
GATEWAY_IMAGE=ems-edge-gateway:$VERSION
FIXTURES_IMAGE=ems-industrial-fixtures:$VERSION
for spec in "$PLATFORM_IMAGE Dockerfile" "$EDGE_BASE_IMAGE deploy/images/edge-base.Dockerfile"; do
  read -r tag dockerfile <<<"$spec"
  stage "$tag ($dockerfile, base $PYTHON_BASE_IMAGE)"
  build "$tag" "$dockerfile" "PYTHON_BASE_IMAGE=$PYTHON_BASE_IMAGE"
  stage_done
done
# Both edge images on the one runtime image: an archive of the two holds its layer once.
for spec in "$GATEWAY_IMAGE edge_gateway/Dockerfile" "$FIXTURES_IMAGE industrial_fixtures/Dockerfile"; do
  read -r tag dockerfile <<<"$spec"
  stage "$tag ($dockerfile, base $EDGE_BASE_IMAGE)"
  build "$tag" "$dockerfile" "EDGE_BASE_IMAGE=$EDGE_BASE_IMAGE"
  stage_done
done
docker tag "$PLATFORM_IMAGE" platform-api:local
if [ -n "${EDGE_REGISTRY:-}" ]; then
  for image in "$GATEWAY_IMAGE" "$FIXTURES_IMAGE"; do docker tag "$image" "$EDGE_REGISTRY/$image"; done
fi

cat >build/images.env <<ENV
PLATFORM_IMAGE=$PLATFORM_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
PYTHON_BASE_IMAGE=$PYTHON_BASE_IMAGE
EDGE_GATEWAY_IMAGE=$GATEWAY_IMAGE
INDUSTRIAL_FIXTURES_IMAGE=$FIXTURES_IMAGE
ENV
for image in "$PLATFORM_IMAGE" "$EDGE_BASE_IMAGE" "$GATEWAY_IMAGE" "$FIXTURES_IMAGE" "$POSTGRES_IMAGE"; do
  printf 'images: %-40s %s MB\n' "$image" "$(( $(docker image inspect --format '{{.Size}}' "$image") / 1000000 ))"
done
