# One image for every long-running part of the platform: the order intake API, the Dagster code
# location (gRPC), the Dagster webserver and daemon, and the run workers (subprocesses of the code
# location under compose, ECS tasks under the ECS run launcher). docker-compose.yml picks the
# command per service. No secret is baked in: they arrive at run time from secrets.env (compose's
# env_file) or from the task definition.
#
# Built by `make images` from the repository root: Python packages come from the wheelhouse that
# `pip wheel` made on the build host, so nothing here reaches a package index (air-gapped sites;
# hosts whose containers cannot use the index over HTTPS). The base image is a build argument.
ARG PYTHON_BASE_IMAGE=python:3.11-slim

FROM ${PYTHON_BASE_IMAGE} AS install
COPY wheelhouse /wheels
# The dependencies only (pyproject.toml's, written there by deploy/images/build.sh): the code runs
# from the source tree in /opt/platform, where the settings loader finds cfg.defaults.yml beside it.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --no-cache-dir --disable-pip-version-check \
        -r /wheels/platform-requirements.txt

FROM ${PYTHON_BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/platform \
    DAGSTER_HOME=/opt/dagster/home \
    ENV=beta

RUN groupadd --system --gid 10001 platform \
    && useradd --system --uid 10001 --gid platform --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin platform

COPY --from=install /opt/venv /opt/venv
WORKDIR /opt/platform
COPY pyproject.toml cfg.defaults.yml workspace.yaml ./
COPY api ./api
COPY contracts ./contracts
COPY delivery ./delivery
COPY local_stack ./local_stack
COPY order_pipeline ./order_pipeline
COPY platform_assets ./platform_assets
COPY platform_db ./platform_db
COPY platform_config ./platform_config
COPY platform_instance ./platform_instance
COPY portal_verify ./portal_verify
COPY resources ./resources
COPY sensors ./sensors
COPY service_kit ./service_kit
COPY standins ./standins
COPY edge_gateway ./edge_gateway
COPY industrial_fixtures ./industrial_fixtures
COPY deploy ./deploy

# The Dagster instance: PostgreSQL storage and the run queue (deploy/dagster.beta.yaml). An
# operator who launches runs on ECS mounts or bakes deploy/dagster.ecs.yaml here instead.
# DAGSTER_HOME/storage (compute logs, local artifacts) is the only place the platform writes to.
RUN mkdir -p "$DAGSTER_HOME/storage" \
    && cp deploy/dagster.beta.yaml "$DAGSTER_HOME/dagster.yaml" \
    && chown -R platform:platform /opt/dagster

USER platform

EXPOSE 8000 3000 4000

CMD ["python", "-m", "api"]
