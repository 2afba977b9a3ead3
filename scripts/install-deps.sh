#!/usr/bin/env bash
# Installs what archpack's tests and demo need on a fresh Debian machine: the Docker
# engine, skopeo/umoci/minisign, busybox-static (both arches come via apt-get download),
# jq, zstd. Safe to run again: installs only what is missing.
set -euo pipefail

need=()
for pair in dockerd:docker.io skopeo:skopeo umoci:umoci minisign:minisign \
  jq:jq zstd:zstd busybox:busybox-static; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
