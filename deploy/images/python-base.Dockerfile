# A local equivalent of python:3.11-slim, for hosts that cannot pull public images: Debian
# bookworm's own Python 3.11 on a debootstrap root (deploy/images/build.sh imports it as
# DEBIAN_ROOT_IMAGE). apt works inside the build; the Python packages come from the wheelhouse.
ARG DEBIAN_ROOT_IMAGE=platform-local/debian:bookworm
FROM ${DEBIAN_ROOT_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python-is-python3 ca-certificates tzdata \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
CMD ["python3"]
