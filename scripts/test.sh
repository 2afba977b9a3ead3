#!/usr/bin/env bash
# The test command: installs what the suite needs, builds the two-arch test images,
# starts a throwaway Docker engine on a private socket, runs every check, stops it.
#
#   scripts/test.sh            # everything
#   scripts/test.sh create     # extra args go to `cargo test` (a filter, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== test images"
fixtures="$root/target/test-fixtures"
scripts/make-test-images.sh "$fixtures"

sid_root="$root/target/sid"
arm64_root="$root/target/arm64"
engine_dir=
cleanup() {
  if [ -n "$engine_dir" ]; then
    scripts/engine.sh stop "$engine_dir" || true
    # overlay mounts must go before the directory can.
    grep -o " $engine_dir[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$engine_dir" || true
  fi
  scripts/sid-chroot.sh umount "$sid_root" || true
  scripts/sid-chroot.sh umount "$arm64_root" || true
}
trap cleanup EXIT

echo "== newer engines (Debian sid chroot: Docker 28, containerd 2, podman 5)"
scripts/sid-chroot.sh ensure "$sid_root"
export ARCHPACK_SID_ROOT="$sid_root"

echo "== arm targets: qemu-user, static binaries, an emulated arm64 host"
scripts/binfmt.sh
# The emulated arm64 host is made while the cross builds run (both take minutes).
ARCHPACK_CHROOT_ARCH=arm64 scripts/sid-chroot.sh ensure "$arm64_root" >"$root/target/arm64-chroot.log" 2>&1 &
arm64_pid=$!
# The three the tests run under qemu; amd64's static build is a release step (scripts/
# build-targets.sh with no arguments builds all four).
scripts/build-targets.sh arm64 arm-v7 arm-v6
if ! wait "$arm64_pid"; then
  tail -20 "$root/target/arm64-chroot.log" >&2
  exit 1
fi
cat "$root/target/arm64-chroot.log"
export ARCHPACK_TARGETS="$root/target/targets" ARCHPACK_ARM64_ROOT="$arm64_root"
# Something in provisioning can hide binfmt_misc's mount: make sure it is there.
scripts/binfmt.sh >/dev/null

echo "== throwaway engine"
engine_dir=$(mktemp -d /tmp/archpack-engine.XXXXXX)
eval "$(scripts/engine.sh start "$engine_dir")"
for image in svc-amd64 svc-arm64 other-amd64 other-arm64; do
  docker load -q -i "$fixtures/$image.tar" >/dev/null
done
export ARCHPACK_FIXTURES="$fixtures"
# Every test runs here: one that finds something missing fails instead of skipping.
export ARCHPACK_TEST_STRICT=1
export ARCHPACK_TEST_DOCKER_HOST="$DOCKER_HOST"
unset DOCKER_HOST

echo "== cargo test"
log=$(mktemp)
# No doc tests exist; leaving them out keeps an empty "0 passed" off the last line.
cargo test --quiet --workspace --lib --bins --tests "$@" 2>&1 | tee "$log"
# Coverage-guided fuzzing of the format crate's readers, bounded (cargo-fuzz, nightly);
# a filtered run (`scripts/test.sh create`) leaves it out.
if [ $# -eq 0 ]; then
  scripts/fuzz.sh "${ARCHPACK_FUZZ_SECONDS:-20}"
fi

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
