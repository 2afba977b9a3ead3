#!/usr/bin/env bash
# A Debian sid root with the engines users run today — Docker 28 (docker.io), containerd 2
# (with ctr), podman 5 — for archpack's tests. Installing sid packages on the host would
# replace its libc, so they live in a chroot; their sockets are reached from the host
# through a directory bind-mounted at the same path inside and outside.
#
#   scripts/sid-chroot.sh ensure ROOT     # debootstrap + packages, once (idempotent)
#   scripts/sid-chroot.sh mount ROOT      # proc, sys, dev, the shared /tmp/apsid
#   scripts/sid-chroot.sh umount ROOT
#   scripts/sid-chroot.sh run ROOT CMD... # a command inside (after mount)
#
# ARCHPACK_CHROOT_ARCH=arm64 makes an emulated arm64 host instead (bookworm arm64 with
# its docker.io, run through qemu-user: scripts/binfmt.sh): a debootstrap --foreign and
# its second stage under emulation. runc cannot start containers under qemu-user, so
# the host's amd64 runc (with its libraries) is copied in as the engine's runtime.
#
# Facts and traps: ../shared/notes/engine-facts.md (sid's Release is past its date, so
# apt needs Check-Valid-Until false; policy-rc.d keeps packages from starting services).
set -euo pipefail

cmd=${1:?usage: sid-chroot.sh ensure|mount|umount|run ROOT [CMD...]}
root=${2:?usage: sid-chroot.sh ensure|mount|umount|run ROOT [CMD...]}
shift 2
# Sockets and data of engines in the chroot live here, at the same path on both sides.
shared=/tmp/apsid
mirror=${ARCHPACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=${ARCHPACK_CHROOT_ARCH:-amd64}
if [ "$arch" = amd64 ]; then
  suite=sid
  packages="docker.io containerd runc podman crun fuse-overlayfs uidmap iptables ca-certificates"
else
  suite=bookworm
  packages="docker.io iptables ca-certificates"
fi

is_mounted() { grep -qs " $1 " /proc/mounts; }

do_mount() {
  mkdir -p "$shared" "$root$shared" "$root/proc" "$root/sys" "$root/dev"
  is_mounted "$root" || mount --bind "$root" "$root" # runc's pivot_root wants a mount point
  is_mounted "$root/proc" || mount -t proc proc "$root/proc"
  is_mounted "$root/sys" || { mount --rbind /sys "$root/sys"; mount --make-rslave "$root/sys"; }
  is_mounted "$root/dev" || { mount --rbind /dev "$root/dev"; mount --make-rslave "$root/dev"; }
  is_mounted "$root$shared" || mount --bind "$shared" "$root$shared"
}

do_umount() {
  grep -o " $root[^ ]*" /proc/mounts 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

case "$cmd" in
ensure)
  if [ -f "$root/.archpack-complete" ]; then
    exit 0
  fi
  command -v debootstrap >/dev/null || {
    echo "sid-chroot: installing debootstrap"
    apt-get install -y -qq debootstrap >/dev/null
  }
  started=$(date +%s)
  echo "sid-chroot: debootstrap $suite ($arch) into $root"
  do_umount
  rm -rf "$root"
  mkdir -p "$root"
  if [ "$arch" = amd64 ]; then
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
      tail -20 "$root.debootstrap.log" >&2
      exit 1
    }
  else
    "$(dirname "$0")/binfmt.sh" >/dev/null
    debootstrap --arch="$arch" --foreign --variant=minbase "$suite" "$root" "$mirror" \
      >"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log" >&2; exit 1; }
    mkdir -p "$root/proc"
    mount -t proc proc "$root/proc"
    chroot "$root" /debootstrap/debootstrap --second-stage >>"$root.debootstrap.log" 2>&1 || {
      tail -20 "$root.debootstrap.log" >&2
      exit 1
    }
    umount "$root/proc" 2>/dev/null || true
  fi
  printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99archpack"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  do_mount
  echo "sid-chroot: installing $packages"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages" \
    >"$root.apt.log" 2>&1 || {
    tail -20 "$root.apt.log" >&2
    exit 1
  }
  if [ "$arch" = amd64 ]; then
    chroot "$root" sh -c 'dockerd --version; containerd --version; podman --version' | sed 's/^/sid-chroot: /'
  else
    # The host's runc and containerd shim with their loader and libraries at their own
    # (x86_64) paths, which an arm64 root does not use: under qemu-user 7.2 both fail
    # (PR_SET_CHILD_SUBREAPER is EINVAL there). runc re-executes itself, so it must be
    # the binary itself; the shim replaces the arm64 one, which containerd runs by name.
    runc=$(command -v runc)
    shim=$(command -v containerd-shim-runc-v2)
    install -D -m 755 "$runc" "$root/usr/local/sbin/runc-host"
    install -D -m 755 "$shim" "$root/usr/bin/containerd-shim-runc-v2"
    # One file per ldd call: given several, ldd heads each block with "FILE:".
    for lib in $(for bin in "$runc" "$shim"; do ldd "$bin" 2>/dev/null || true; done |
      grep -o '/[^ ]*' | sort -u); do
      install -D -m 755 "$lib" "$root$lib"
    done
    chroot "$root" sh -c 'dockerd --version' | sed 's/^/sid-chroot: /'
  fi
  touch "$root/.archpack-complete"
  echo "sid-chroot: ready in $(($(date +%s) - started)) s"
  ;;
mount) do_mount ;;
umount) do_umount ;;
run)
  do_mount
  exec chroot "$root" "$@"
  ;;
*)
  echo "usage: sid-chroot.sh ensure|mount|umount|run ROOT [CMD...]" >&2
  exit 2
  ;;
esac
