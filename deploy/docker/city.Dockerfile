# syntax=docker/dockerfile:1
# CityFed city image: one city's flower-supernode, with the flags of
# `cityfed city start`, in the foreground.
#
# Build from the repository root:
#   docker build -f deploy/docker/city.Dockerfile -t cityfed-city:0.1.0 .
#
# Mounts (all read-only): the city's folder with city.toml and its CSV at /data,
# the federation's ca.pem at /etc/cityfed/certs/ca.pem, the city's NAME.node.key at
# /etc/cityfed/keys/node.key. Required setting: CITYFED_COORDINATOR=HOST:PORT of
# the coordinator's front (a name in the coordinator's certificate).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- 1. the cityfed wheel, built from the repository ---------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cityfed ./cityfed
COPY server ./server
COPY client ./client
# server/cityfed_server and client/cityfed_client are packages of their own
# (see pyproject.toml); the wheel ships them beside cityfed.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- 2. the runtime image -------------------------------------------------------
FROM ${PYTHON_IMAGE}
# tini: PID 1 that reaps the ClientApp processes the SuperNode starts.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cityfed \
 && useradd --system --uid 10001 --gid cityfed --home-dir /home/cityfed --create-home \
        --shell /usr/sbin/nologin cityfed

COPY --from=wheel /wheels /tmp/wheels
RUN python -m venv /opt/cityfed \
 && /opt/cityfed/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
COPY --chmod=0755 deploy/docker/entrypoint.py /opt/cityfed/bin/cityfed-entrypoint

RUN mkdir -p /var/lib/cityfed-node /data /etc/cityfed/certs /etc/cityfed/keys \
 && chown cityfed:cityfed /var/lib/cityfed-node

ENV PATH=/opt/cityfed/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_HOME=/var/lib/cityfed-node/flwr \
    CITYFED_CITY_CONFIG=/data/city.toml \
    CITYFED_CA=/etc/cityfed/certs/ca.pem \
    CITYFED_NODE_KEY=/etc/cityfed/keys/node.key \
    CITYFED_RUNTIME_PORT=9094 \
    CITYFED_NODE_STATE=/var/lib/cityfed-node

USER cityfed
WORKDIR /var/lib/cityfed-node
VOLUME ["/var/lib/cityfed-node"]
# No port: the node dials out to the coordinator; its runtime API stays on 127.0.0.1.
# Healthy while the coordinator's front answers over TLS signed by the federation CA.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["cityfed-entrypoint", "health"]
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "cityfed-entrypoint"]
CMD ["city"]
