#!/usr/bin/env bash
# Lets this amd64 host run arm64 and 32-bit arm programs (and chroots of them) through
# qemu-user: mounts binfmt_misc and registers bookworm's static qemu for both, as its
# binfmt.d files say: flags F (the interpreter is opened now, so it works inside chroots)
# and P (argv[0] preserved: busybox picks its applet by it). Idempotent.
#
#   scripts/binfmt.sh
set -euo pipefail
command -v qemu-aarch64-static >/dev/null && command -v qemu-arm-static >/dev/null || {
  echo "binfmt: installing qemu-user-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
}
misc=/proc/sys/fs/binfmt_misc
[ -e "$misc/register" ] || mount -t binfmt_misc binfmt_misc "$misc"
for arch in aarch64 arm; do
  conf=/usr/lib/binfmt.d/qemu-$arch.conf
  [ -f "$conf" ] || { echo "binfmt: $conf missing" >&2; exit 1; }
  if [ -e "$misc/qemu-$arch" ]; then
    grep -q '^flags: .*P' "$misc/qemu-$arch" && continue
    echo -1 >"$misc/qemu-$arch" # registered without P: busybox would not find its applet
  fi
  cat "$conf" >"$misc/register"
done
echo "binfmt: arm64 and arm programs run through qemu-user"
