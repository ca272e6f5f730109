# syntax=docker/dockerfile:1
# plantstream: one image for the connectors, the flows (Bytewax) and the jobs (migrations).
#
#   docker build -t plantstream:0.1.0 .
#   docker build --build-arg EXTRAS=embedded --build-arg SIMULATORS=true -t plantstream:demo .
#
# EXTRAS: optional dependency groups to add (default none: no chDB, no embedded brokers).
# SIMULATORS: keep simulators (the PLC and bakery line simulators); default false.
# The container runs as uid 10001 with a read-only root filesystem: everything that writes
# (state files, .plantstream/) goes to /tmp or a mounted volume; HOME is /tmp.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: wheels for plantstream and its production dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY operators ./operators
COPY flows ./flows
COPY plantstream ./plantstream
RUN pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

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
 && rm -rf /wheels \
 && if [ "$SIMULATORS" != "true" ]; then \
      rm -rf "$(python -c 'import plantstream.connectors as c, os; print(os.path.dirname(c.__file__))')/simulators"; \
    fi \
 && plantstream --help > /dev/null
USER 10001:10001
WORKDIR /tmp
EXPOSE 2101 3030
ENTRYPOINT ["plantstream"]
CMD ["--help"]
