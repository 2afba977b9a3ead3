#!/usr/bin/env bash
# Static archpack binaries for every target the mission's hosts are: linux/amd64,
# linux/arm64, linux/arm/v7 (hard-float: Raspberry Pi OS 32-bit) and linux/arm/v6
# (soft-float armel; the armv5te triple runs on ARMv6: Pi Zero/1). Static glibc, so a
# binary built today runs on Raspberry Pi OS bullseye and Ubuntu 20.04; stripped and
# size-optimised (the `dist` profile).
#
#   scripts/build-targets.sh [TARGET...]     # default: all four
#   targets: amd64 arm64 arm-v7 arm-v6       # output: target/targets/archpack-linux-TARGET
#
# Built with Debian sid's rustc and cross gcc in the chroot scripts/sid-chroot.sh makes
# (host packages would replace its libc); armv5te has no prebuilt std, so it is built
# with -Zbuild-std from Debian's rust-src. Crates come from the host's cargo registry
# (fetched here first); the standard library's own crates (for -Zbuild-std) are fetched
# from the chroot into the same registry.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sid=${ARCHPACK_SID_ROOT:-$root/target/sid}
out="$root/target/targets"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(amd64 arm64 arm-v7 arm-v6)

scripts/sid-chroot.sh ensure "$sid"
build_packages="rustc cargo rust-src libstd-rust-dev:arm64 libstd-rust-dev:armhf gcc libc6-dev"
build_packages+=" gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-arm-linux-gnueabi"
# The cross C libraries are only Recommends of the cross compilers: name them.
build_packages+=" libc6-dev-arm64-cross libc6-dev-armhf-cross libc6-dev-armel-cross"
if [ "$(cat "$sid/.archpack-build-tools" 2>/dev/null)" != "$build_packages" ]; then
  echo "build-targets: installing the Rust toolchain and cross compilers into $sid"
  scripts/sid-chroot.sh mount "$sid"
  # shellcheck disable=SC2086
  chroot "$sid" sh -c "dpkg --add-architecture arm64 && dpkg --add-architecture armhf &&
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $build_packages" \
    >"$sid.build-tools.log" 2>&1 || { tail -20 "$sid.build-tools.log" >&2; exit 1; }
  echo "$build_packages" >"$sid/.archpack-build-tools"
fi

# Every crate the lock file names, for every platform, into the host's registry.
cargo fetch --locked -q
cargo_home=${CARGO_HOME:-$HOME/.cargo}

scripts/sid-chroot.sh mount "$sid"
mounted=()
bind() { # bind HOST_PATH: the same path inside the chroot
  mkdir -p "$sid$1"
  grep -qs " $sid$1 " /proc/mounts || mount --bind "$1" "$sid$1"
  mounted+=("$sid$1")
}
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
bind "$root"
bind "$cargo_home/registry"
# The host's CA bundle: what reaches crates.io from here (a proxy's CA may be in it).
cp /etc/ssl/certs/ca-certificates.crt "$sid/etc/archpack-host-ca.crt"
mkdir -p "$out"

triple_of() {
  case $1 in
  amd64) echo x86_64-unknown-linux-gnu ;;
  arm64) echo aarch64-unknown-linux-gnu ;;
  arm-v7) echo armv7-unknown-linux-gnueabihf ;;
  arm-v6) echo armv5te-unknown-linux-gnueabi ;;
  *) echo "build-targets: unknown target $1 (amd64, arm64, arm-v7, arm-v6)" >&2; exit 2 ;;
  esac
}
gcc_of() {
  case $1 in
  x86_64-unknown-linux-gnu) echo gcc ;;
  aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-gcc ;;
  armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
  armv5te-unknown-linux-gnueabi) echo arm-linux-gnueabi-gcc ;;
  esac
}

for t in "${targets[@]}"; do
  triple=$(triple_of "$t")
  cc=$(gcc_of "$triple")
  var=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  extra=()
  env_extra=()
  if [ "$triple" = armv5te-unknown-linux-gnueabi ]; then
    # No prebuilt std for armel in Debian: build it from rust-src.
    extra=(-Zbuild-std=std,panic_abort)
    env_extra=(RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT=/usr/lib/rustlib/src/rust/library)
  fi
  started=$(date +%s)
  echo "build-targets: $t ($triple)"
  chroot "$sid" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    CARGO_HOME=/root/.cargo-archpack CARGO_HTTP_CAINFO=/etc/archpack-host-ca.crt \
    "CARGO_TARGET_${var}_LINKER=$cc" "CC_${triple//-/_}=$cc" \
    "CARGO_TARGET_${var}_RUSTFLAGS=-C target-feature=+crt-static" \
    "${env_extra[@]}" \
    sh -c "mkdir -p /root/.cargo-archpack && ln -sfn $cargo_home/registry /root/.cargo-archpack/registry &&
      cd '$root' && cargo build --locked --profile dist --bin archpack \
        --target $triple --target-dir '$root/target/cross' ${extra[*]:-}" \
    >"$out/build-$t.log" 2>&1 || { tail -30 "$out/build-$t.log" >&2; exit 1; }
  bin="$root/target/cross/$triple/dist/archpack"
  cp "$bin" "$out/archpack-linux-$t"
  size=$(stat -c %s "$out/archpack-linux-$t")
  echo "build-targets: $t: $((size / 1024)) KiB in $(($(date +%s) - started)) s -> target/targets/archpack-linux-$t"
  if file "$out/archpack-linux-$t" 2>/dev/null | grep -q dynamically; then
    echo "build-targets: $t is not static" >&2
    exit 1
  fi
done
