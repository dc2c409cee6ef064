# The runtime both edge images are built on (edge_gateway/Dockerfile, industrial_fixtures/Dockerfile):
# Python 3.11 and the Python packages of both (edge_gateway/requirements.txt and
# industrial_fixtures/requirements.txt, from the wheelhouse) in one layer, so an archive of both
# images holds it once. deploy/images/edge_root.py copies what a service runs on out of
# PYTHON_BASE_IMAGE (see there); the image has no shell, apt, pip or venv.
#
# Built by `make images` from the repository root:
#   docker build -f deploy/images/edge-base.Dockerfile --build-arg PYTHON_BASE_IMAGE=... -t ems-edge-base:<version> .
ARG PYTHON_BASE_IMAGE=python:3.11-slim

FROM ${PYTHON_BASE_IMAGE} AS assemble
COPY wheelhouse /wheels
COPY edge_gateway/requirements.txt /tmp/gateway-requirements.txt
COPY industrial_fixtures/requirements.txt /tmp/fixtures-requirements.txt
COPY deploy/images/edge_root.py /tmp/edge_root.py
# pip runs from a throwaway environment of this stage; the packages go to a plain folder that
# edge_root.py places at the interpreter's own site-packages.
RUN python3 -m venv /tmp/installer \
    && /tmp/installer/bin/pip install --quiet --no-index --find-links /wheels --no-cache-dir \
        --disable-pip-version-check --no-compile --target /tmp/site \
        -r /tmp/gateway-requirements.txt -r /tmp/fixtures-requirements.txt \
    && python3 /tmp/edge_root.py /tmp/site /edge-root

FROM scratch
COPY --from=assemble /edge-root /
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    PYTHONPATH=/opt/ems \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONUTF8=1
CMD ["python3"]
