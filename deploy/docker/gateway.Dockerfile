# syntax=docker/dockerfile:1
# Switchboard gateway: webhooks in, normalised messages onto RabbitMQ (spooled to disk while it is down).
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile .
# (`make images` builds all three with buildah, from a locally made Debian base: BASE_IMAGE.)
ARG BASE_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the pinned dependencies and Switchboard itself ------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/switchboard
COPY deploy/requirements.lock /tmp/requirements.lock
# The secret "ca" is the build host's CA bundle, for hosts behind a TLS-inspecting proxy; optional.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/switchboard/bin/pip install --require-virtualenv -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
# --no-deps: every dependency is already pinned above; this adds only Switchboard's own code.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/switchboard/bin/pip install --require-virtualenv --no-deps /src

# -- runtime: the same base, the virtualenv, no compilers, no pip cache, not root -------------
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --no-log-init --uid 10001 --gid switchboard --home-dir /app --create-home switchboard \
    && mkdir -p /var/lib/switchboard/spool \
    && chown -R switchboard:switchboard /var/lib/switchboard
COPY --from=build /opt/switchboard /opt/switchboard
COPY deploy/switchboard.yaml /etc/switchboard/switchboard.yaml
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.yaml \
    SWITCHBOARD_SPOOL_DIR=/var/lib/switchboard/spool \
    GATEWAY_PORT=8080
WORKDIR /app
USER 10001:10001
# The spool: messages accepted while the broker was unreachable wait here; keep it across restarts.
VOLUME ["/var/lib/switchboard"]
EXPOSE 8080
# /healthz: the process answers (liveness). Readiness (/readyz) is the orchestrator's business.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GATEWAY_PORT'], timeout=2)"]
# SIGTERM: stop taking work, finish what is in hand, close connections (shared/runtime.py).
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "services.gateway"]
