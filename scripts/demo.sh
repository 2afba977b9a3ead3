#!/usr/bin/env bash
# The whole job, end to end, on a fresh Debian machine: two throwaway Docker engines
# play the build host and the air-gapped target.
#
#   scripts/demo.sh            # needs root (apt-get, dockerd); cleans up after itself
#
# 1. installs what is missing; builds archpack
# 2. builds svc/other images for amd64 and arm64 from busybox-static (the seeds' way:
#    one tag per arch) into the build host's engine
# 3. makes a signing key; creates ONE signed bundle with a compose template and an
#    arm64 override
# 4. on the target engine: shows the platform probe, verifies, loads only the host's
#    platform, writes the compose file, starts it and waits until healthy
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Installing what is missing"
scripts/install-deps.sh
cargo build --release --quiet
archpack="$root/target/release/archpack"
export PATH="$(dirname "$archpack"):$PATH"

work=$(mktemp -d /tmp/archpack-demo.XXXXXX)
build_engine="$work/build" target_engine="$work/target"
cleanup() {
  set +e
  [ -f "$work/site/compose.yaml" ] && DOCKER_HOST="unix://$target_engine/docker.sock" \
    docker-compose -f "$work/site/compose.yaml" -p demo down -t 1 >/dev/null 2>&1
  for e in "$build_engine" "$target_engine"; do scripts/engine.sh stop "$e" >/dev/null 2>&1; done
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step "Build host: per-architecture images, tagged the seeds' way"
eval "$(scripts/engine.sh start "$build_engine")"
scripts/make-test-images.sh "$root/target/test-fixtures" >/dev/null
for image in svc-amd64 svc-arm64 other-amd64 other-arm64; do
  docker load -q -i "$root/target/test-fixtures/$image.tar"
done

step "Build host: a signing key (minisign format; the password comes from a file here)"
mkdir -p "$work/keys" "$work/ship" "$work/site"
head -c 24 /dev/urandom | base64 >"$work/keys/password"
run archpack keygen -o "$work/keys/release" --password-file "$work/keys/password"

cat >"$work/compose.yaml" <<'EOF'
# One template for every architecture; images by their logical names.
services:
  svc:
    image: svc:v1.0
    ports: ["18080:8080"]
    environment:
      THREADS: "8"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 1s
      retries: 30
      start_period: 2s
  other:
    image: other:v2
    environment:
      THREADS: "8"
    depends_on:
      svc:
        condition: service_healthy
EOF
cat >"$work/compose.arm64.yaml" <<'EOF'
# What differs on the Raspberry Pi / ARM boxes.
services:
  svc:
    environment:
      THREADS: "2"
    healthcheck:
      start_period: 30s
  other:
    environment:
      THREADS: "2"
EOF

step "Build host: ONE signed bundle for both architectures"
run archpack create -o "$work/ship/app-1.0.archpack" \
  svc:v1.0-amd64 svc:v1.0-arm64 other:v2-amd64 other:v2-arm64 \
  --compose "$work/compose.yaml" --compose-override "linux/arm64=$work/compose.arm64.yaml" \
  --sign "$work/keys/release.key" --password-file "$work/keys/password"
run archpack inspect "$work/ship/app-1.0.archpack" --trust "$work/keys/release.pub"
echo "(the seeds would ship: $(for f in svc-amd64 svc-arm64 other-amd64 other-arm64; do
  gzip -c "$root/target/test-fixtures/$f.tar" | wc -c; done | awk '{s+=$1} END {printf "%.1f MiB", s/1048576}') of .tar.gz files)"

step "Target host (a fresh engine, no network): what can it run?"
scripts/engine.sh stop "$build_engine" >/dev/null
eval "$(scripts/engine.sh start "$target_engine")"
cp "$work/keys/release.pub" "$work/site/"
run archpack platform --bundle "$work/ship/app-1.0.archpack"

step "Target host: verify, load this platform only, write compose, start, wait for healthy"
run archpack load "$work/ship/app-1.0.archpack" --trust "$work/site/release.pub" \
  --compose-out "$work/site/compose.yaml" --up
run docker images
echo "\$ wget -q -O- http://127.0.0.1:18080/health"
wget -q -O- http://127.0.0.1:18080/health 2>/dev/null || python3 -c \
  'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:18080/health").read().decode().strip())'

step "Target host: loading again sends nothing"
run archpack load "$work/ship/app-1.0.archpack" --trust "$work/site/release.pub"

step "Done: cleaning up the demo's engines and files"
