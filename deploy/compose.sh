#!/usr/bin/env bash
# `make up` / `make down` / `make logs`: the compose stack on this machine's Docker engine, with
# images built locally (nothing is pulled from a registry).
#
#   deploy/compose.sh up      build the images (deploy/images.sh, buildah), load any the engine lacks,
#                             start the stack and wait until every container is healthy
#   deploy/compose.sh down    stop and remove the containers (volumes are kept; DOWN_VOLUMES=1 drops them)
#   deploy/compose.sh logs    follow the logs
#   deploy/compose.sh engine-up | engine-down    start / stop a dockerd of our own when none answers
#
# Compose: the `docker compose` plugin when it works, else Debian's docker-compose 1.29 (with
# --compatibility, so that deploy.replicas is honoured). Environment: TAG (default dev),
# COMPOSE_PROJECT (default switchboard), UP_TIMEOUT (seconds to become healthy, default 300).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TAG=${TAG:-dev}
PROJECT=${COMPOSE_PROJECT:-switchboard}
FILE=deploy/docker-compose.yml
IMAGES=(gateway router notifier rabbitmq postgres)
ENGINE_DIR="$ROOT/var/docker"

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -p "$PROJECT" -f "$FILE" "$@"
  elif command -v docker-compose >/dev/null; then
    docker-compose --compatibility -p "$PROJECT" -f "$FILE" "$@"
  else
    echo "compose: neither 'docker compose' nor 'docker-compose' (apt-get install docker-compose)" >&2
    return 1
  fi
}

engine_up() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
  if ((${#missing[@]})); then
    echo "compose: installing ${missing[*]} (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if docker info >/dev/null 2>&1; then return 0; fi
  mkdir -p "$ENGINE_DIR"
  echo "compose: no Docker engine answers; starting dockerd (log: $ENGINE_DIR/dockerd.log)"
  setsid dockerd > "$ENGINE_DIR/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$ENGINE_DIR/dockerd.pid"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "compose: dockerd did not start; see $ENGINE_DIR/dockerd.log" >&2
  return 1
}

engine_down() {  # only the dockerd this script started
  local pid state
  pid=$(cat "$ENGINE_DIR/dockerd.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  # a zombie (PID 1 here may not reap) counts as gone
  for _ in $(seq 1 30); do state=$(ps -o stat= -p "$pid" 2>/dev/null || true); [ -n "$state" ] && [[ $state != Z* ]] || break; sleep 1; done
  rm -f "$ENGINE_DIR/dockerd.pid"
}

load_images() {
  TAG="$TAG" bash deploy/images.sh
  for img in "${IMAGES[@]}"; do
    local id
    id=$(buildah inspect --type image --format '{{.FromImageID}}' "localhost/switchboard-$img:$TAG")
    # Load only what changed: the engine's copy carries the same image id.
    if [ "$(docker image inspect --format '{{.Id}}' "switchboard-$img:$TAG" 2>/dev/null)" != "sha256:$id" ]; then
      echo "loading switchboard-$img:$TAG into the Docker engine"
      buildah push --quiet "localhost/switchboard-$img:$TAG" "docker-daemon:switchboard-$img:$TAG" >/dev/null
    fi
  done
}

wait_healthy() {
  local deadline=$((SECONDS + ${UP_TIMEOUT:-300})) ids states
  while :; do
    ids=$(compose ps -q)
    states=$(for id in $ids; do docker inspect --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"; done)
    if [ -n "$ids" ] && ! grep -qv ' healthy$' <<<"$states"; then
      echo "compose: every container healthy:"; sed 's/^/  /' <<<"$states"
      return 0
    fi
    if ((SECONDS > deadline)); then
      echo "compose: not healthy in time:" >&2; sed 's/^/  /' <<<"$states" >&2
      compose logs --tail=30 >&2 || true
      return 1
    fi
    sleep 3
  done
}

case "${1:-}" in
  up) engine_up; load_images; TAG="$TAG" compose up --detach --no-build; wait_healthy ;;
  down) if [ "${DOWN_VOLUMES:-0}" = 1 ]; then compose down --volumes; else compose down; fi ;;
  logs) compose logs --follow --tail=100 ;;
  ps) compose ps ;;
  engine-up) engine_up ;;
  engine-down) engine_down ;;
  *) echo "usage: $0 up|down|logs|ps|engine-up|engine-down" >&2; exit 2 ;;
esac
