# syntax=docker/dockerfile:1
# RabbitMQ for `make up`, from Debian's own package on the same Debian base as the services (no
# registry needed: `make images` makes the base with debootstrap and passes it as BASE_IMAGE).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# A fixed uid made before the package (whose postinst reuses an existing user), so USER is numeric.
# hadolint ignore=DL3008
RUN groupadd --system --gid 10002 rabbitmq \
    && useradd --system --no-log-init --uid 10002 --gid rabbitmq --home-dir /var/lib/rabbitmq --shell /bin/sh rabbitmq \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && echo '[rabbitmq_management].' > /etc/rabbitmq/enabled_plugins \
    && : > /etc/rabbitmq/rabbitmq-env.conf
COPY deploy/docker/rabbitmq-start.sh /usr/local/bin/rabbitmq-start
# The node name is rabbit@<hostname>: compose fixes the hostname so the data directory survives
# a re-created container. HOME holds the cookie the CLI (the healthcheck) shares with the node.
ENV HOME=/var/lib/rabbitmq \
    RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/rabbitmq.conf \
    PATH=/usr/lib/rabbitmq/bin:$PATH
WORKDIR /var/lib/rabbitmq
USER 10002:10002
EXPOSE 5672 15672
HEALTHCHECK --interval=5s --timeout=10s --start-period=30s --retries=12 \
    CMD ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rabbitmq-start"]
