# syntax=docker/dockerfile:1
# plantstream: one image for the connectors, the flows (Bytewax) and the jobs (migrations).
#
#   docker build -t plantstream:0.1.0 .
#   docker build --build-arg EXTRAS=embedded --build-arg SIMULATORS=true -t plantstream:demo .
#
# EXTRAS: optional dependency groups to add (default none: no chDB, no embedded brokers).
# SIMULATORS: also install plantstream-simulators (simulators/: the PLC and bakery line
#   simulators the demo plays); default false: the production image does not contain them.
# The container runs as uid 10001 with a read-only root filesystem: everything that writes
# (state files, .plantstream/) goes to /tmp or a mounted volume; HOME is /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: wheels for plantstream and its production dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ARG SIMULATORS=false
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY operators ./operators
COPY flows ./flows
COPY plantstream ./plantstream
COPY simulators ./simulators
RUN pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}" \
 && if [ "$SIMULATORS" = "true" ]; then pip wheel --no-deps --wheel-dir /wheels ./simulators; fi

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
    HOME=/tmp \
    PLANTSTREAM_CONFIG=/etc/plantstream/plant.yaml
RUN groupadd --system --gid 10001 plantstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin plantstream
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "plantstream${EXTRAS:+[$EXTRAS]}" \
      $(if [ "$SIMULATORS" = "true" ]; then echo plantstream-simulators; fi) \
 && rm -rf /wheels \
 && plantstream --help > /dev/null
USER 10001:10001
WORKDIR /tmp
EXPOSE 2101 3030
ENTRYPOINT ["plantstream"]
CMD ["--help"]
