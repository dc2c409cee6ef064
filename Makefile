# The two commands: `make run` (the platform, locally) and `make test` (the whole suite).
# Each creates or refreshes .venv itself; `make test` also installs the Debian tools the tests
# run (xorriso and cloud-init check the seed ISO the way its consumer does; iproute2 gives the
# end-to-end scenarios their network namespaces; docker.io and debootstrap give the container tiers an
# engine and, where no registry is reachable, local base images).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# command:package pairs the tests need on the machine.
TEST_TOOLS := xorriso:xorriso cloud-init:cloud-init ip:iproute2 dockerd:docker.io debootstrap:debootstrap docker-registry:docker-registry
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint venv test-tools e2e e2e-docker images edge-images

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test-tools:
	@missing=""; for pair in $(TEST_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run: venv
	$(PY) -m local_stack

# Lint, formatting and types over the code (settings in pyproject.toml), then the suite.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv test-tools lint
	$(PY) -m pytest

# Every image (platform, edge gateway, industrial fixtures) from a wheelhouse made on this host;
# see deploy/images/build.sh for BASE_IMAGES, PYTHON_BASE_IMAGE, POSTGRES_IMAGE, EDGE_REGISTRY.
images: venv
	bash deploy/images/build.sh

# The edge images of `make images`, saved and published to the stage's embedded S3 (ENV, with `make run`
# up): on-prem air-gap bundles carry them from then on.
edge-images: venv
	$(PY) -m standins.edge_image_ci

# The delivered stack's scenarios on their own (root: each run gets its own network namespace).
e2e: venv test-tools
	$(SUDO) $(PY) -m e2e

# The same scenarios on the delivered containers: docker compose of each bundle (a Docker engine and
# the images of `make images`; no root, nothing pulled).
e2e-docker: venv
	$(PY) -m e2e --docker
