# syntax=docker/dockerfile:1
# plantstream: one image for the connectors, the flows (Bytewax) and the jobs (migrations).
#
#   docker build -t plantstream:0.1.0 .
#   docker build --build-arg EXTRAS=embedded --build-arg SIMULATORS=true -t plantstream:demo .
#
# Reproducible: every dependency comes from requirements/runtime.txt (with EXTRAS: lock.txt, which
#   also holds the dev tools), pinned with sha256 hashes (pip --require-hashes), installed into
#   the virtualenv /opt/plantstream that the runtime stage copies; plantstream is installed from
#   this checkout with --no-deps. Refresh the locks with `make lock` (docs/deploy.md).
# EXTRAS: optional dependency groups to add (default none: no chDB, no embedded brokers).
# SIMULATORS: also install plantstream-simulators (simulators/: the PLC and bakery line
#   simulators the demo plays); default false: the production image does not contain them.
# The container runs as uid 10001 with a read-only root filesystem: everything that writes
# (state files, .plantstream/) goes to /tmp or a mounted volume; HOME is /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with exactly the locked dependencies and plantstream ------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG SIMULATORS=false
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/plantstream/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/plantstream
COPY requirements ./requirements
# The locked pip, then every dependency (and the build backend) with its sha256 checked.
RUN lock=requirements/runtime.txt; if [ -n "$EXTRAS" ]; then lock=requirements/lock.txt; fi \
 && pip install --require-hashes -r requirements/pip.txt \
 && pip install --require-hashes -r "$lock"
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY operators ./operators
COPY flows ./flows
COPY plantstream ./plantstream
COPY simulators ./simulators
# plantstream from this checkout, nothing more: --no-deps, the locked build backend.
RUN pip install --no-deps --no-build-isolation . \
 && if [ "$SIMULATORS" = "true" ]; then pip install --no-deps --no-build-isolation ./simulators; fi \
 && pip check

# -- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG EXTRAS=""
ARG SIMULATORS=false
LABEL org.opencontainers.image.title="plantstream" \
      org.opencontainers.image.description="Streaming OEE, downtime, scrap and condition monitoring at the edge" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/plantstream/bin:$PATH \
    HOME=/tmp \
    PLANTSTREAM_CONFIG=/etc/plantstream/plant.yaml
RUN groupadd --system --gid 10001 plantstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin plantstream
COPY --from=build /opt/plantstream /opt/plantstream
RUN plantstream --help > /dev/null
USER 10001:10001
WORKDIR /tmp
# 2101 Bytewax cluster, 3030 Bytewax dataflow API, 8081 health endpoint (/healthz, /readyz).
EXPOSE 2101 3030 8081
ENTRYPOINT ["plantstream"]
CMD ["--help"]
