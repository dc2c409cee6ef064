# One image for every long-running part of the platform: the order intake API, the Dagster code
# location (gRPC), the Dagster webserver and daemon, and the run workers (subprocesses of the code
# location under compose, ECS tasks under the ECS run launcher). docker-compose.yml picks the
# command per service. No secret is baked in: they arrive at run time from secrets.env (compose's
# env_file) or from the task definition.
FROM python:3.11-slim

# The settings loader reads cfg.defaults.yml beside the packages, so the source tree in
# /opt/platform is the one imported (PYTHONPATH); the install below brings the dependencies and
# the console scripts (dagster, dagster-webserver, dagster-daemon).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/platform \
    DAGSTER_HOME=/opt/dagster/home \
    ENV=beta

RUN groupadd --system --gid 10001 platform \
    && useradd --system --uid 10001 --gid platform --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin platform

WORKDIR /opt/platform

COPY pyproject.toml ./
COPY api ./api
COPY contracts ./contracts
COPY delivery ./delivery
COPY local_stack ./local_stack
COPY platform_assets ./platform_assets
COPY platform_db ./platform_db
COPY resources ./resources
COPY sensors ./sensors
COPY standins ./standins
COPY edge_gateway ./edge_gateway
COPY industrial_fixtures ./industrial_fixtures
RUN pip install . \
    && rm -rf build ./*.egg-info

COPY cfg.defaults.yml workspace.yaml ./
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
