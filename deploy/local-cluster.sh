#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server, for CLUSTER=1 chaos and
# bench and the cluster integration tests. Never touches the machine's own broker (5672, node
# rabbit@localhost, /var/lib/rabbitmq and its cookie): every node here has its own node name,
# AMQP port, distribution port, data and log directory under var/cluster/, its own epmd on its own
# port, and a cookie in var/cluster/home (HOME for these nodes and their CLI calls only).
#
#   deploy/local-cluster.sh up        start (or restart) the three nodes, cluster them, wait
#   deploy/local-cluster.sh down      stop them, remove var/cluster and the partition rules
#   deploy/local-cluster.sh url       the kombu failover BROKER_URL of the three nodes
#   deploy/local-cluster.sh start N | stop N | kill N | ctl N ARGS...   one node (the chaos suite)
#   deploy/local-cluster.sh cut N | heal           partition node N from the other two (iptables)
#
# Why each node has its own loopback address (127.22.48.11-13 by default, long node names): a partition needs
# to drop the distribution traffic between one node and the other two and nothing else. Each node
# listens for and opens distribution connections from its own address, so one iptables rule per
# pair of addresses cuts exactly the node-to-node links; clients on 127.0.0.1 are not affected
# (under pause_minority, the cut-off node closes them itself).
#
# Ports (CLUSTER_PORT_BASE, default 5680): AMQP base+1..3, distribution 20000+base+1..3, epmd
# base-1300; set CLUSTER_PORT_BASE for a second clone's cluster on the same machine.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${CLUSTER_PORT_BASE:-5680}"
DIR="${CLUSTER_DIR:-$ROOT/var/cluster}"
EPMD_PORT=$((BASE - 1300))          # 4380 by default: not the machine's epmd (4369)
NODES=(1 2 3)
SBIN=/usr/lib/rabbitmq/bin          # the real scripts: /usr/sbin's wrappers su to the rabbitmq user and its cookie
CHAIN="SBCLUSTER${BASE}"

# 127.<base>.1N: each port base (each clone's cluster) has addresses of its own, so a partition
# made in one never cuts another's nodes.
ip_of()   { echo "127.$(( (BASE >> 8) & 255 )).$(( BASE & 255 )).$((10 + $1))"; }
name_of() { echo "sb$1@$(ip_of "$1")"; }
amqp_of() { echo $((BASE + $1)); }
dist_of() { echo $((20000 + BASE + $1)); }

env_of() {
  # The environment one node (or a CLI call aimed at it) runs in; nothing inherited from
  # /etc/rabbitmq (RABBITMQ_CONF_ENV_FILE would otherwise set NODENAME=rabbit@localhost).
  local n=$1 ip
  ip=$(ip_of "$n")
  local ipt=${ip//./,}
  echo HOME="$DIR/home" \
    ERL_EPMD_PORT="$EPMD_PORT" \
    RABBITMQ_USE_LONGNAME=true \
    RABBITMQ_NODENAME="$(name_of "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_of "$n")" \
    RABBITMQ_DIST_PORT="$(dist_of "$n")" \
    RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$DIR/node$n/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$DIR/node$n/data" \
    RABBITMQ_MNESIA_DIR="$DIR/node$n/data/$(name_of "$n")" \
    RABBITMQ_LOG_BASE="$DIR/node$n/log" \
    RABBITMQ_PID_FILE="$DIR/node$n/pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="'-kernel inet_dist_use_interface {$ipt} -kernel inet_dist_connect_options [{ip,{$ipt}}]'"
}

ctl() {  # ctl N rabbitmqctl-args...: a CLI call aimed at node N with the cluster's cookie
  local n=$1; shift
  eval "env $(env_of "$n") $SBIN/rabbitmqctl --longnames -n $(name_of "$n") \"\$@\""
}

running() { ctl "$1" -q status >/dev/null 2>&1; }

pid_of() { cat "$DIR/node$1/beam.pid" 2>/dev/null || true; }

# alive PID: the process exists and is not a zombie. `kill -0` is not enough: a killed node is
# reparented to PID 1, and where PID 1 does not reap (a container's init that is not an init),
# the zombie answers kill -0 for ever, and a restart would wait for a node that never boots.
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$state" ] && [[ $state != Z* ]]
}

need_iptables() {
  # The partition (cut) needs iptables: a Debian package, installed when missing.
  if ! command -v iptables >/dev/null; then
    echo "local-cluster: installing iptables (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  fi
}

prepare() {
  mkdir -p "$DIR/home"
  if [ ! -f "$DIR/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/home/.erlang.cookie"
    chmod 400 "$DIR/home/.erlang.cookie"
  fi
  : > "$DIR/rabbitmq-env.conf"
  echo '[].' > "$DIR/enabled_plugins"
  if ! ss -ltn | grep -q "127.0.0.1:$EPMD_PORT "; then
    # Our own epmd, on our addresses only; nodes register with it instead of the machine's.
    ERL_EPMD_ADDRESS="127.0.0.1,$(ip_of 1),$(ip_of 2),$(ip_of 3)" epmd -port "$EPMD_PORT" -daemon
  fi
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/node$n/data" "$DIR/node$n/log"
    cat > "$DIR/node$n/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_of "$n")
# pause_minority: with three nodes, the side of a partition that sees only one node stops serving
# (closes its clients' connections, which then fail over) and resumes by itself when it sees the
# others again. The majority keeps every quorum queue available, and no side ever accepts writes
# the other side will throw away (autoheal would pick a winner and restart the loser, losing what
# the loser accepted into classic queues; ignore would let both sides diverge).
cluster_partition_handling = pause_minority
# A cut-off node is noticed within ~15-20 s (net_ticktime 60 s by default would leave a 20 s
# partition unnoticed); clients see a dead node by their heartbeats.
net_ticktime = 15
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
EOF
  done
}

start_node() {
  local n=$1
  if running "$n"; then return 0; fi
  local p
  p=$(pid_of "$n")
  if [ -n "$p" ] && alive "$p"; then return 0; fi   # still booting
  if ss -ltn | grep -qE "127.0.0.1:$(amqp_of "$n") |:$(dist_of "$n") "; then
    echo "local-cluster: port $(amqp_of "$n") or $(dist_of "$n") is taken (another clone's cluster?):" \
      "set CLUSTER_PORT_BASE" >&2
    return 1
  fi
  # setsid: the node outlives this script and is not in the caller's process group (make, pytest).
  eval "env $(env_of "$n") setsid $SBIN/rabbitmq-server > \"$DIR/node$n/log/stdout.log\" 2>&1 < /dev/null &"
  echo $! > "$DIR/node$n/beam.pid"
}

wait_node() {
  local n=$1 i p restarts=0
  for i in $(seq 1 120); do
    if ctl "$n" -q await_startup --timeout 5 >/dev/null 2>&1; then return 0; fi
    p=$(pid_of "$n")
    if [ "$restarts" -lt 2 ] && { [ -z "$p" ] || ! alive "$p"; }; then
      # The VM died while booting (a port still held by the killed node, say): start it again.
      restarts=$((restarts + 1))
      echo "local-cluster: node $(name_of "$n") exited while booting; starting it again" >&2
      start_node "$n" || true
    fi
    sleep 1
  done
  echo "local-cluster: node $(name_of "$n") did not start; see $DIR/node$n/log" >&2
  tail -n 30 "$DIR/node$n/log/stdout.log" >&2 2>/dev/null || true   # the reason, in CI's output too
  return 1
}

members() { ctl "$1" -q eval 'rabbit_nodes:all_running().' 2>/dev/null || true; }

up() {
  prepare
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do wait_node "$n"; done
  local first
  first=$(name_of 1)
  for n in 2 3; do
    if ! ctl "$n" -q cluster_status 2>/dev/null | grep -q "$first"; then
      ctl "$n" -q stop_app
      ctl "$n" -q join_cluster "$first"
      ctl "$n" -q start_app
    fi
  done
  for i in $(seq 1 60); do
    local m
    m=$(members 1)
    if [[ $m == *"$(name_of 1)"* && $m == *"$(name_of 2)"* && $m == *"$(name_of 3)"* ]]; then
      echo "local-cluster: 3 nodes running; BROKER_URL=$(url)"
      return 0
    fi
    sleep 1
  done
  echo "local-cluster: the nodes did not form one cluster: $(members 1)" >&2
  return 1
}

stop_node() {  # an orderly stop (the rolling restart)
  local n=$1 p
  ctl "$n" -q stop >/dev/null 2>&1 || true
  p=$(pid_of "$n")
  if [ -n "$p" ]; then
    for _ in $(seq 1 30); do alive "$p" || break; sleep 1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null || true
  fi
}

kill_node() {  # SIGKILL the node's Erlang VM, nothing else
  local n=$1 os_pid
  os_pid=$(cat "$DIR/node$n/pid" 2>/dev/null || true)
  if [ -n "$os_pid" ]; then kill -KILL "$os_pid" 2>/dev/null || true; fi
  local p
  p=$(pid_of "$n")
  if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
}

cut() {
  need_iptables
  local n=$1 ip other
  ip=$(ip_of "$n")
  iptables -N "$CHAIN" 2>/dev/null || true
  iptables -C OUTPUT -j "$CHAIN" 2>/dev/null || iptables -I OUTPUT -j "$CHAIN"
  for other in "${NODES[@]}"; do
    [ "$other" = "$n" ] && continue
    iptables -A "$CHAIN" -s "$ip" -d "$(ip_of "$other")" -j DROP
    iptables -A "$CHAIN" -s "$(ip_of "$other")" -d "$ip" -j DROP
  done
}

heal() {
  command -v iptables >/dev/null || return 0
  if iptables -L "$CHAIN" >/dev/null 2>&1; then
    iptables -D OUTPUT -j "$CHAIN" 2>/dev/null || true
    iptables -F "$CHAIN"
    iptables -X "$CHAIN"
  fi
}

down() {
  heal
  local n p
  for n in "${NODES[@]}"; do kill_node "$n"; done
  for n in "${NODES[@]}"; do  # epmd refuses to stop while a node is still registered
    p=$(cat "$DIR/node$n/pid" 2>/dev/null || true)
    for _ in $(seq 1 50); do [ -n "$p" ] && alive "$p" || break; sleep 0.1; done
  done
  # Our epmd only (its own port); the machine's epmd on 4369 is left alone.
  for _ in $(seq 1 20); do
    epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    ss -ltn | grep -q "127.0.0.1:$EPMD_PORT " || break
    sleep 0.5
  done
  rm -rf "$DIR"
}

url() {
  local out="" n
  for n in "${NODES[@]}"; do out+="${out:+;}amqp://guest:guest@127.0.0.1:$(amqp_of "$n")//"; done
  echo "$out"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up ;;
  down) down ;;
  url) url ;;
  start) prepare; start_node "$1"; wait_node "$1" ;;
  stop) stop_node "$1" ;;
  kill) kill_node "$1" ;;
  ctl) ctl "$@" ;;
  cut) cut "$1" ;;
  heal) heal ;;
  *) echo "usage: $0 up|down|url|start N|stop N|kill N|ctl N ARGS|cut N|heal" >&2; exit 2 ;;
esac
