#!/bin/sh
# The broker's configuration from the environment (RABBITMQ_DEFAULT_USER/PASS/VHOST, as the
# official image reads them), then the broker in the foreground.
set -eu
cat > "$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.default = 5672
management.tcp.port = 15672
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
cluster_partition_handling = pause_minority
log.console = true
log.file = false
CONF
exec /usr/lib/rabbitmq/bin/rabbitmq-server
