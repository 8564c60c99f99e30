# syntax=docker/dockerfile:1
# PostgreSQL 15 for `make up`, from Debian's own package on the same Debian base as the services.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# No cluster from the package: the entrypoint makes one in the volume on first start.
# A fixed uid made before the package (whose postinst reuses an existing user), so USER is numeric.
# hadolint ignore=DL3008
RUN groupadd --system --gid 10003 postgres \
    && useradd --system --no-log-init --uid 10003 --gid postgres --home-dir /var/lib/postgresql --shell /bin/sh postgres \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common \
    && sed -i 's/^#\?create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY deploy/docker/postgres-start.sh /usr/local/bin/postgres-start
ENV PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/15/bin:$PATH
USER 10003:10003
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=12 \
    CMD ["pg_isready", "-h", "127.0.0.1", "-q"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-start"]
