# syntax=docker/dockerfile:1
# CityFed coordinator image: flower-superlink (bound to 127.0.0.1), the nginx
# TLS front and CityFed's gRPC service, run as three containers of this one image
# that share a network namespace (compose: network_mode "service:superlink";
# Kubernetes: one pod).
#
# Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t cityfed-coordinator:0.1.0 .
#
# Commands (see deploy/docker/entrypoint.py):
#   superlink (default)  flower-superlink with the flags of `cityfed coordinator start`
#   front                nginx -c /etc/cityfed/nginx/nginx.conf (deploy/nginx/nginx.conf)
#   service              the gRPC service on 0.0.0.0:9444 (mutual TLS, CITYFED_SERVICE)
#   health-service       exit 0 when the gRPC service completes a TLS handshake
#   health [HOST:PORT]   exit 0 when /health answers over TLS
#   backup DEST          consistent copy of /var/lib/cityfed
# and, through `docker exec`, every `cityfed` command (enrol, revoke, status, run).
#
# Mounts: /etc/cityfed/certs/{ca.pem,coordinator.pem,coordinator.key} (read-only),
# /etc/cityfed/federation.toml (read-only), /etc/cityfed/nginx/nginx.conf (front),
# /var/lib/cityfed (state: SuperLink database, enrolment, model store).

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
# nginx: Debian 12's package, the one the deployment tests run against.
# tini: PID 1 that reaps the ServerApp processes the SuperLink starts.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx tini \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default \
 && groupadd --system --gid 10001 cityfed \
 && useradd --system --uid 10001 --gid cityfed --home-dir /home/cityfed --create-home \
        --shell /usr/sbin/nologin cityfed

COPY --from=wheel /wheels /tmp/wheels
RUN python -m venv /opt/cityfed \
 && /opt/cityfed/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
COPY --chmod=0755 deploy/docker/entrypoint.py /opt/cityfed/bin/cityfed-entrypoint

# The nginx front writes its pid and temporary files under /run/cityfed-nginx and
# logs to /var/log/cityfed-nginx, whose files lead to the container's output.
RUN mkdir -p /var/lib/cityfed /etc/cityfed/certs /etc/cityfed/nginx \
        /run/cityfed-nginx/tmp /var/log/cityfed-nginx \
 && ln -sf /dev/stdout /var/log/cityfed-nginx/nginx-access.log \
 && ln -sf /dev/stderr /var/log/cityfed-nginx/nginx-error.log \
 && chown -R cityfed:cityfed /var/lib/cityfed /run/cityfed-nginx /var/log/cityfed-nginx

ENV PATH=/opt/cityfed/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    CITYFED_STATE=/var/lib/cityfed \
    CITYFED_CERTS=/etc/cityfed/certs \
    CITYFED_FEDERATION=/etc/cityfed/federation.toml \
    CITYFED_SUPERLINK_PORT=9092 \
    CITYFED_FRONT=localhost:9443 \
    CITYFED_SERVICE=0.0.0.0:9444 \
    CITYFED_NGINX_CONF=/etc/cityfed/nginx/nginx.conf

USER cityfed
WORKDIR /var/lib/cityfed
VOLUME ["/var/lib/cityfed"]
# The front's port and the gRPC service's; the SuperLink listens on 127.0.0.1:9092
# and is never published.
EXPOSE 9443 9444
# The SuperLink's own /health (the front container overrides it with localhost:9443).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["cityfed-entrypoint", "health"]
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "cityfed-entrypoint"]
CMD ["superlink"]
