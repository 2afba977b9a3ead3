#!/usr/bin/env bash
# Builds real two-architecture test images from Debian's busybox-static (amd64 and
# arm64 binaries) with tools archpack did not write: umoci assembles OCI layouts,
# skopeo converts them to docker-archive and oci-archive.
#
#   scripts/make-test-images.sh OUT_DIR
#
# Images (each with 3 layers):
#   svc:v1.0-{amd64,arm64}     base (busybox of that arch) + app (identical across
#   other:v2-{amd64,arm64}     arches) + an image-specific layer; svc and other share
#                              the base layer of each arch.
# Written under OUT_DIR:
#   oci/svc, oci/other                    umoci layouts (refs v1.0-amd64, ...; gzip layers)
#   oci/multi                             one multi-platform index "svc:v1.0" (like buildx)
#   svc-amd64.tar, svc-arm64.tar, ...     docker-archives (skopeo), also .tar.gz / .tar.zst
#   multi.oci.tar                         oci/multi as an oci-archive
#   debs/                                 the busybox-static packages used
set -euo pipefail

out=${1:?usage: make-test-images.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -f "$out/.complete" ] && { echo "test images already in $out"; exit 0; }

for tool in umoci skopeo dpkg-deb jq zstd gzip; do
  command -v "$tool" >/dev/null || { echo "make-test-images: $tool is missing (run scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/debs"
# busybox of every target: arm64 and amd64 for the images; armhf and armel too, for the
# busybox-only roots the static loaders are installed into (tests/targets.rs).
if ! ls "$out"/debs/busybox-static_*_armel.deb >/dev/null 2>&1; then
  for a in arm64 armhf armel; do
    dpkg --print-foreign-architectures | grep -qx "$a" || dpkg --add-architecture "$a"
  done
  apt-get update -qq
  (cd "$out/debs" && apt-get download -q busybox-static:amd64 busybox-static:arm64 \
    busybox-static:armhf busybox-static:armel 2>/dev/null)
fi

# Fixed timestamps make identical content produce identical layer tars.
stamp=200001010000
ts=2000-01-01T00:00:00Z

for arch in amd64 arm64; do
  deb=$(ls "$out"/debs/busybox-static_*_"$arch".deb)
  dpkg-deb -x "$deb" "$work/deb-$arch"
  root="$work/base-$arch"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp "$work/deb-$arch/bin/busybox" "$root/bin/busybox"
  for applet in sh ls cat echo sleep true test wget httpd uname; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  find "$root" -exec touch -h -t "$stamp" {} +
done

# The app layer: identical bytes for both architectures.
app="$work/app"
mkdir -p "$app"
cat >"$app/run.sh" <<'EOF'
#!/bin/sh
# Serves /www on port 8080 and answers health checks.
mkdir -p /www && echo "ok $(uname -m)" >/www/health
exec httpd -f -p 8080 -h /www
EOF
chmod 755 "$app/run.sh"
head -c 262144 /dev/urandom | base64 >"$app/data.txt" # bulk that compresses ~25%
find "$app" -exec touch -h -t "$stamp" {} +

for name in svc other; do
  mkdir -p "$work/extra-$name"
  echo "service=$name" >"$work/extra-$name/$name.conf"
  touch -h -t "$stamp" "$work/extra-$name" "$work/extra-$name/$name.conf"
done

build() { # build LAYOUT_DIR TAG ARCH EXTRA
  local layout=$1 tag=$2 arch=$3 extra=$4
  [ -d "$layout" ] || umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci config --image "$layout:$tag" --architecture "$arch" --os linux \
    --created "$ts" --author archpack-tests \
    --config.cmd /app/run.sh --config.workingdir /app --config.env PATH=/bin
  umoci insert --image "$layout:$tag" --history.created "$ts" "$work/base-$arch" /
  umoci insert --image "$layout:$tag" --history.created "$ts" "$app" /app
  umoci insert --image "$layout:$tag" --history.created "$ts" "$extra" /etc/app
  umoci gc --layout "$layout"
}

rm -rf "$out/oci"
mkdir -p "$out/oci"
for arch in amd64 arm64; do
  build "$out/oci/svc" "v1.0-$arch" "$arch" "$work/extra-svc"
  build "$out/oci/other" "v2-$arch" "$arch" "$work/extra-other"
done

for arch in amd64 arm64; do
  skopeo copy -q "oci:$out/oci/svc:v1.0-$arch" "docker-archive:$out/svc-$arch.tar:svc:v1.0-$arch"
  skopeo copy -q "oci:$out/oci/other:v2-$arch" "docker-archive:$out/other-$arch.tar:other:v2-$arch"
done
for f in "$out"/svc-*.tar "$out"/other-*.tar; do
  gzip -c "$f" >"$f.gz"
  zstd -q -f -o "$f.zst" "$f"
done

# A multi-platform layout as buildx writes it: index.json → image index → manifests.
multi="$out/oci/multi"
cp -r "$out/oci/svc" "$multi"
entry() { # descriptor of the manifest tagged $1, with its platform
  local d
  d=$(jq -c --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)' "$multi/index.json")
  echo "$d" | jq -c --arg a "$2" 'del(.annotations) + {platform: {os: "linux", architecture: $a}}'
}
jq -cn --argjson a "$(entry v1.0-amd64 amd64)" --argjson b "$(entry v1.0-arm64 arm64)" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [$a, $b]}' >"$work/idx.json"
idx_digest=$(sha256sum "$work/idx.json" | cut -d' ' -f1)
cp "$work/idx.json" "$multi/blobs/sha256/$idx_digest"
jq -cn --arg d "sha256:$idx_digest" --argjson s "$(stat -c %s "$work/idx.json")" \
  '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
    annotations: {"org.opencontainers.image.ref.name": "svc:v1.0", "io.containerd.image.name": "docker.io/library/svc:v1.0"}}]}' \
  >"$multi/index.json"
(cd "$multi" && tar --sort=name --owner=0 --group=0 --mtime=@0 -cf "$out/multi.oci.tar" oci-layout index.json blobs)

touch "$out/.complete"
echo "test images written to $out"
