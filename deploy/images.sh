#!/usr/bin/env bash
# Builds the three service images (and RabbitMQ and PostgreSQL) with buildah (no Docker engine needed): `make images`.
#
# No registry is needed either: the Python base is made here from Debian's own packages
# (debootstrap bookworm, minbase + python3 3.11) and passed to the Dockerfiles as BASE_IMAGE;
# with a registry at hand, `docker build` uses their default, python:3.11-slim-bookworm.
# Builds run with --isolation chroot (works unprivileged in a container, no runc/netns needed)
# and --layers, so the three images share their build stage and a rebuild takes seconds.
#
# Environment: TAG (default dev), BASE_IMAGE (skip making the Debian base), IMAGES_WORKDIR.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-dev}
BASE=${BASE_IMAGE:-localhost/switchboard-python:3.11-bookworm}
WORK=${IMAGES_WORKDIR:-var/images}
# The three services, and RabbitMQ and PostgreSQL from Debian's packages on the same base (for
# `make up`, which has no registry to pull them from). IMAGES picks some.
read -r -a SERVICES <<< "${IMAGES:-gateway router notifier rabbitmq postgres}"

need() {
  local missing=()
  for tool in buildah debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

make_base() {
  if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    return
  fi
  echo "making the base image $BASE with debootstrap (about a minute)"
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
  # What a slim image leaves out too: package lists and caches, docs, man pages.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  local ctr
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  rm -rf "$rootfs"
}

build() {
  local svc=$1 secret=()
  # Behind a TLS-inspecting proxy pip inside the build needs this machine's CA bundle.
  if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
    secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
  fi
  echo "building localhost/switchboard-$svc:$TAG"
  buildah bud --quiet --isolation chroot --layers --format docker "${secret[@]}" \
    --build-arg BASE_IMAGE="$BASE" -f "deploy/docker/$svc.Dockerfile" -t "localhost/switchboard-$svc:$TAG" . >/dev/null
}

need
make_base
for svc in "${SERVICES[@]}"; do build "$svc"; done
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E 'switchboard-(gateway|router|notifier|rabbitmq|postgres|python)' || true
