#!/usr/bin/env bash
# archpack against the seeds' method, side by side in one run. A benchmark, not a test:
# it prints ratios and never fails on timing.
#
#   scripts/bench.sh [REPS]      # default 5 repetitions, medians reported (engine start-up is noisy)
#
# Corpus (built once, cached in target/bench-corpus), as issue #8 describes it: a Debian
# bookworm `debootstrap --variant=minbase --foreign` root per architecture (amd64, arm64)
# as the base layer, Debian's Python 3.11 packages unpacked (dpkg-deb) as a second layer,
# and per service an app layer identical across architectures; umoci assembles three
# services that share the base. Six images, loaded into a throwaway build engine.
#
# Every engine runs on a fresh ext4 filesystem in a RAM-backed loop file: a real
# filesystem, but without this VM's shared disk and without what earlier runs deleted.
# (On the disk, removing one engine's data made the next engine's inode allocation slow:
# perf showed ext4 find_inode_bit/recently_deleted in ~30% of samples, and the order of
# the runs, not the method, decided the load times.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
reps=${1:-5}

scripts/install-deps.sh >/dev/null
for tool in pigz /usr/bin/time bc debootstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || { apt-get install -y -qq pigz time bc debootstrap e2fsprogs >/dev/null; break; }
done
cargo build --release --quiet
archpack="$root/target/release/archpack"
host_arch=$(dpkg --print-architecture)

corpus="$root/target/bench-corpus"
py_pkgs="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libexpat1 libffi8 libsqlite3-0 libdb5.3 libgdbm6 libnsl2 libtirpc3"
services="alpha beta gamma"

build_corpus() {
  rm -rf "$corpus" && mkdir -p "$corpus/debs" "$corpus/work"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  for arch in amd64 arm64; do
    base="$corpus/work/base-$arch"
    # --foreign: unpack only (the second stage would need to run the arch's binaries).
    debootstrap --variant=minbase --foreign --arch="$arch" bookworm "$base" "${mirror:-http://deb.debian.org/debian}" >"$corpus/debootstrap-$arch.log"
    # What an image base leaves out: the downloaded .debs, debootstrap's own state, devices.
    rm -rf "$base"/var/cache/apt/archives/*.deb "$base/debootstrap" "$base"/dev/*
    find "$base" -exec touch -h -d @946684800 {} +
    mkdir -p "$corpus/debs/$arch" "$corpus/work/py-$arch"
    # (apt warns that root downloads unsandboxed; its messages go to a log.)
    (cd "$corpus/debs/$arch" && for p in $py_pkgs; do apt-get download -qq "$p:$arch" 2>>"$corpus/apt.log"; done)
    for p in $py_pkgs; do dpkg-deb -x "$corpus/debs/$arch/${p}_"*"_$arch.deb" "$corpus/work/py-$arch"; done
    find "$corpus/work/py-$arch" -exec touch -h -d @946684800 {} +
  done
  for svc in $services; do
    # ~20 MB of compressible application data, the same bytes for every architecture.
    python3 - "$corpus/work/app-$svc" "$svc" <<'EOF'
import os, random, sys
out, name = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rng = random.Random(name)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 9))) for _ in range(4000)]
for i in range(40):
    with open(os.path.join(out, f"model-{i:02d}.txt"), "w") as f:
        f.write(' '.join(rng.choice(words) for _ in range(80000)))
with open(os.path.join(out, "blob.bin"), "wb") as f:
    f.write(rng.randbytes(2 << 20))
# The service's source: a few hundred lines of Python.
with open(os.path.join(out, "app.py"), "w") as f:
    for i in range(300):
        f.write(f"def handler_{i}(request):\n    return {{'service': '{name}', 'route': {i}}}\n\n")
if name == "beta":
    # A 16 MiB model (weights: incompressible).
    with open(os.path.join(out, "weights.bin"), "wb") as f:
        f.write(rng.randbytes(16 << 20))
EOF
    find "$corpus/work/app-$svc" -exec touch -h -d @946684800 {} +
  done
  # Release 2 (the delta bundles' case): one source line changed in alpha, 10% of beta's
  # model changed (every tenth 64 KiB block), gamma unchanged.
  for svc in $services; do cp -a "$corpus/work/app-$svc" "$corpus/work/app2-$svc"; done
  python3 - "$corpus/work" <<'EOF'
import os, random, sys
work = sys.argv[1]
p = os.path.join(work, "app2-alpha", "app.py")
text = open(p).read().replace("'route': 150}", "'route': 150, 'fixed': True}")
open(p, "w").write(text)
p = os.path.join(work, "app2-beta", "weights.bin")
data = bytearray(open(p, "rb").read())
rng = random.Random("release-2")
for block in range(0, len(data) // 65536, 10):
    data[block * 65536:(block + 1) * 65536] = rng.randbytes(65536)
open(p, "wb").write(bytes(data))
EOF
  for svc in $services; do find "$corpus/work/app2-$svc" -exec touch -h -d @946684800 {} +; done
  layout="$corpus/oci"
  umoci init --layout "$layout"
  for arch in amd64 arm64; do
    for svc in $services; do
      tag="$svc-$arch"
      umoci new --image "$layout:$tag"
      umoci config --image "$layout:$tag" --architecture "$arch" --os linux --created 2000-01-01T00:00:00Z
      umoci insert --image "$layout:$tag" --history.created 2000-01-01T00:00:00Z "$corpus/work/base-$arch" /
      umoci insert --image "$layout:$tag" --history.created 2000-01-01T00:00:00Z "$corpus/work/py-$arch" /
      umoci insert --image "$layout:$tag" --history.created 2000-01-01T00:00:00Z "$corpus/work/app-$svc" /app
      skopeo copy -q "oci:$layout:$tag" "docker-archive:$corpus/$tag.tar:$svc:v1-$arch"
      tag2="$svc-$arch-2"
      umoci new --image "$layout:$tag2"
      umoci config --image "$layout:$tag2" --architecture "$arch" --os linux --created 2000-01-01T00:00:00Z
      umoci insert --image "$layout:$tag2" --history.created 2000-01-01T00:00:00Z "$corpus/work/base-$arch" /
      umoci insert --image "$layout:$tag2" --history.created 2000-01-01T00:00:00Z "$corpus/work/py-$arch" /
      umoci insert --image "$layout:$tag2" --history.created 2000-01-01T00:00:00Z "$corpus/work/app2-$svc" /app
      mkdir -p "$corpus/release2"
      skopeo copy -q "oci:$layout:$tag2" "docker-archive:$corpus/release2/$tag.tar:$svc:v2-$arch"
    done
  done
  umoci gc --layout "$layout"
  rm -rf "$corpus/work"
  touch "$corpus/.complete-v3"
}
[ -f "$corpus/.complete-v3" ] || { echo "building the corpus (once)..."; build_corpus; }

work=$(mktemp -d /tmp/archpack-bench.XXXXXX)
disks=$(mktemp -d /dev/shm/archpack-bench.XXXXXX)
cleanup() {
  for e in "$work"/e*; do [ -d "$e" ] && scripts/engine.sh stop "$e" >/dev/null 2>&1; done
  # Registries and serve started by the serve rows.
  for p in "$work"/registry-*/pid "$work"/serve.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  { grep -o " $work[^ ]*" /proc/mounts || true; } | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work" "$disks"
}
trap cleanup EXIT

n=0
# A fresh engine on its own new ext4 filesystem (see the top of this file).
fresh_engine() {
  n=$((n + 1))
  mkdir -p "$work/e$n"
  truncate -s 8G "$disks/e$n.img"
  mkfs.ext4 -q -F "$disks/e$n.img"
  mount -o loop "$disks/e$n.img" "$work/e$n"
  eval "$(scripts/engine.sh start "$work/e$n")"
}
drop_engine() {
  scripts/engine.sh stop "$work/e$n" >/dev/null
  { grep -o " $work/e$n[^ ]*" /proc/mounts || true; } | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work/e$n" "$disks/e$n.img"
}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
record() { echo "$2" >>"$work/$1"; }
rss_of() { /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null; cat "$work/rss"; }

echo "== build engine with the six images"
fresh_engine
build_host=$DOCKER_HOST
engine_version=$(docker version --format '{{.Server.Version}}')
for f in "$corpus"/*.tar; do docker load -q -i "$f" >/dev/null; done
images=""
for arch in amd64 arm64; do for svc in $services; do images="$images $svc:v1-$arch"; done; done
host_images=$(for svc in $services; do echo "$svc:v1-$host_arch"; done)
mkdir -p "$work/seeds" "$work/savvy" "$work/ap"
# Bundles are signed and loads verify them, as a user would run it.
"$archpack" keygen -q --no-password -o "$work/ap/bench" >/dev/null

for rep in $(seq 1 "$reps"); do
  echo "== repetition $rep/$reps"
  export DOCKER_HOST=$build_host
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true

  # Every timed create starts after a sync: the writeback of what the one before wrote
  # (the seeds' 513 MB, the raw archive) would otherwise land on whichever runs next.
  # Seeds: docker save | gzip per image and architecture.
  sync; t=$(now); for img in $images; do docker save "$img" | gzip >"$work/seeds/${img//[:\/]/_}.tar.gz"; done
  record seeds_create "$(since "$t")"
  record seeds_bytes "$(cat "$work"/seeds/*.tar.gz | wc -c)"
  # Savvy: one save per architecture, pigz or zstd -T0.
  for arch in amd64 arm64; do
    list=$(for svc in $services; do echo "$svc:v1-$arch"; done)
    sync; t=$(now); docker save $list | pigz >"$work/savvy/$arch.tar.gz"; record pigz_create_$arch "$(since "$t")"
    sync; t=$(now); docker save $list | zstd -q -T0 -3 >"$work/savvy/$arch.tar.zst"; record zstd_create_$arch "$(since "$t")"
  done
  record pigz_bytes "$(cat "$work"/savvy/*.tar.gz | wc -c)"
  record zstd_bytes "$(cat "$work"/savvy/*.tar.zst | wc -c)"
  # Limit: reading the images out of the engine at all.
  sync; t=$(now); docker save $images >/dev/null; record save_null "$(since "$t")"
  docker save $host_images >"$work/raw-host.tar"
  # archpack create, from the engine.
  rm -f "$work/ap/app.archpack"
  sync; t=$(now); rss=$(rss_of "$archpack" create -q --sign "$work/ap/bench.key" -o "$work/ap/app.archpack" $images); record ap_create "$(since "$t")"
  record ap_create_rss "$rss"
  record ap_bytes "$(stat -c %s "$work/ap/app.archpack")"
  # The same with what the platforms' layers share stored once (format 2.2).
  rm -f "$work/ap/parts.archpack"
  sync; t=$(now); rss=$(rss_of "$archpack" create -q --share-parts --sign "$work/ap/bench.key" -o "$work/ap/parts.archpack" $images); record parts_create "$(since "$t")"
  record parts_create_rss "$rss"
  record parts_bytes "$(stat -c %s "$work/ap/parts.archpack")"

  # Loads, each into a fresh engine, after a sync (the previous engines' writeback would
  # otherwise land on whichever load runs next), in an order that rotates per repetition.
  load_seeds() {
    t=$(now); for img in $host_images; do gunzip -c "$work/seeds/${img//[:\/]/_}.tar.gz" | docker load -q >/dev/null; done
    record seeds_load "$(since "$t")"
  }
  load_raw() {
    cat "$work/raw-host.tar" >/dev/null
    t=$(now); docker load -q -i "$work/raw-host.tar" >/dev/null; record raw_load "$(since "$t")"
  }
  load_ap() {
    cat "$work/ap/app.archpack" >/dev/null
    t=$(now); rss=$(rss_of "$archpack" load -q --trust "$work/ap/bench.pub" --json "$work/ap/app.archpack"); record ap_load "$(since "$t")"
    record ap_load_rss "$rss"
    t=$(now); "$archpack" load -q --trust "$work/ap/bench.pub" "$work/ap/app.archpack" >/dev/null; record ap_reload "$(since "$t")"
  }
  load_parts() {
    cat "$work/ap/parts.archpack" >/dev/null
    t=$(now); rss=$(rss_of "$archpack" load -q --trust "$work/ap/bench.pub" --json "$work/ap/parts.archpack"); record parts_load "$(since "$t")"
    record parts_load_rss "$rss"
  }
  order=(load_seeds load_raw load_ap load_parts)
  for k in 0 1 2 3; do
    fresh_engine
    sync; sleep 1
    "${order[$(( (k + rep) % 4 ))]}"
    drop_engine
  done
done

# Bytes the chosen platform needs vs bytes archpack read (from a dry run's accounting).
export DOCKER_HOST=$build_host
"$archpack" inspect --json "$work/ap/app.archpack" >"$work/inspect.json"
needed_of() { tar -xOf "$1" archpack-index.json | python3 -c '
import json, sys
idx = json.load(sys.stdin); arch = sys.argv[1]
need = set()
for im in idx["images"]:
    for p in im["platforms"]:
        if p["platform"]["architecture"] == arch:
            need.update([p["config"]] + p["layers"])
m = idx["members"]
front = m[0]["offset"] - 512
print(front + sum(x["size"] for x in m if x["digest"] in need))' "$host_arch"; }
needed=$(needed_of "$work/ap/app.archpack")
parts_needed=$(needed_of "$work/ap/parts.archpack")
fresh_engine
read=$("$archpack" load -q --trust "$work/ap/bench.pub" --json "$work/ap/app.archpack" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bundleBytesRead"])')
drop_engine
# With shared parts the index's offsets are the single file's: the same accounting.
fresh_engine
parts_read=$("$archpack" load -q --trust "$work/ap/bench.pub" --json "$work/ap/parts.archpack" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bundleBytesRead"])')
drop_engine

# Delta bundles (release 2 against release 1): full, layer-only (what a whole-image or
# whole-layer differential ships), patched; then applying the patched one on a site
# that has release 1, against loading the full release 2 there.
echo "== delta bundles: release 2 against release 1"
export DOCKER_HOST=$build_host
for f in "$corpus"/release2/*.tar; do docker load -q -i "$f" >/dev/null; done
images2=$(for arch in amd64 arm64; do for svc in $services; do echo "$svc:v2-$arch"; done; done)
"$archpack" create -q --sign "$work/ap/bench.key" -o "$work/ap/app2.archpack" $images2 >/dev/null
"$archpack" create -q --sign "$work/ap/bench.key" --base "$work/ap/app.archpack" --no-patches \
  -o "$work/ap/app2.layers.archpack" $images2 >/dev/null
t=$(now); rss=$(rss_of "$archpack" create -q --sign "$work/ap/bench.key" --base "$work/ap/app.archpack" \
  -o "$work/ap/app2.delta.archpack" $images2); delta_create=$(since "$t"); delta_create_rss=$rss
"$archpack" inspect --json "$work/ap/app2.delta.archpack" >"$work/delta-inspect.json"
patch_ref=$(tar -xOf "$work/ap/app2.delta.archpack" archpack-index.json | python3 -c 'import json,sys; d=json.load(sys.stdin)["delta"]; print(max([p["reference"]["uncompressedSize"] for p in d["patches"]] or [0]))')
for rep in $(seq 1 "$reps"); do
  for what in delta delta-base full; do
    fresh_engine
    "$archpack" load -q --trust "$work/ap/bench.pub" "$work/ap/app.archpack" >/dev/null
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    if [ $what = delta ]; then
      # The references read back from the engine's own export.
      t=$(now); rss=$(rss_of "$archpack" load -q --trust "$work/ap/bench.pub" "$work/ap/app2.delta.archpack")
      record delta_apply "$(since "$t")"; record delta_apply_rss "$rss"
    elif [ $what = delta-base ]; then
      # The release 1 bundle kept on the site and given with --base.
      t=$(now); "$archpack" load -q --trust "$work/ap/bench.pub" --base "$work/ap/app.archpack" "$work/ap/app2.delta.archpack" >/dev/null
      record delta_base_apply "$(since "$t")"
    else
      t=$(now); "$archpack" load -q --trust "$work/ap/bench.pub" "$work/ap/app2.archpack" >/dev/null
      record full2_load "$(since "$t")"
    fi
    drop_engine
  done
done
full2_bytes=$(stat -c %s "$work/ap/app2.archpack")
layers_bytes=$(stat -c %s "$work/ap/app2.layers.archpack")
delta_bytes=$(stat -c %s "$work/ap/app2.delta.archpack")

# serve against CNCF distribution (docker-registry) holding the same images (pushed by
# archpack), the same client (skopeo) pulling this host's platform of the three services
# into an OCI layout: zstd as stored, and gzip (serve re-encodes as it sends; the
# registry holds gzip blobs pushed once). The gzip digests are learnt before timing.
echo "== serve vs docker-registry"
serve_pull() { # LABEL ADDR
  rm -rf "$work/pulled"; mkdir -p "$work/pulled"
  t=$(now)
  local pids=() pid
  for svc in $services; do
    skopeo copy -q --src-tls-verify=false --override-arch "$host_arch" \
      "docker://$2/$svc:v1" "oci:$work/pulled/$svc:x" &
    pids+=($!)
  done
  # Only the pulls: a bare `wait` would also wait for the server running beside them.
  for pid in "${pids[@]}"; do wait "$pid" || { echo "bench: a pull from $2 failed" >&2; exit 1; }; done
  record "$1" "$(since "$t")"
}
registry_for() { # FORMAT -> prints the address
  local port dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  dir="$work/registry-$1"; mkdir -p "$dir"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$disks/registry-$1" "$port" >"$dir/config.yml"
  docker-registry serve "$dir/config.yml" >/dev/null 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  "$archpack" push -q --trust "$work/ap/bench.pub" --insecure --layer-format "$1" "$work/ap/app.archpack" "127.0.0.1:$port" >/dev/null
  echo "127.0.0.1:$port"
}
# The services are tagged svc:v1 in the bundle (their sources svc:v1-ARCH).
for fmt in zstd gzip; do
  reg=$(registry_for $fmt)
  "$archpack" serve -q --trust "$work/ap/bench.pub" --layer-format $fmt --listen 127.0.0.1:0 \
    "$work/ap/app.archpack" >"$work/serve-$fmt.log" 2>&1 &
  serve_pid=$!
  echo "$serve_pid" >"$work/serve.pid"
  for _ in $(seq 1 600); do grep -q '^serving' "$work/serve-$fmt.log" && break; sleep 0.1; done
  served=$(sed -n 's|^serving .* at http://\([^ ]*\) .*|\1|p' "$work/serve-$fmt.log")
  for rep in $(seq 1 "$reps"); do
    if [ $((rep % 2)) = 0 ]; then serve_pull serve_$fmt "$served"; serve_pull registry_$fmt "$reg"
    else serve_pull registry_$fmt "$reg"; serve_pull serve_$fmt "$served"; fi
  done
  serve_rss=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
  record serve_rss_$fmt "$serve_rss"
  kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
  kill "$(cat "$work/registry-$fmt/pid")" 2>/dev/null || true
done
pulled_bytes=$(du -sb "$work/pulled" | cut -f1)

# ARM: the instructions archpack's armv7 build executes for a load of this host's
# platform into a fresh engine (qemu-user with a counting plugin, scripts/qemu-insn-count.c:
# exact and repeatable, where seconds under emulation say nothing about a Raspberry Pi).
# Bookworm's qemu-user takes plugins; the -static one the tests use does not.
echo "== armv7 load: instructions"
armv7="$root/target/targets/archpack-linux-arm-v7"
# Always (a no-op when it is current): a binary left from older code would count that code.
scripts/build-targets.sh arm-v7 >"$work/build-armv7.log"
qemu="$work/qemu"
mkdir -p "$qemu"
(cd "$qemu" && apt-get download -qq qemu-user 2>>"$work/apt.log")
dpkg-deb -x "$qemu"/qemu-user_*.deb "$qemu/root"
apt-get install -y -qq libcapstone4 libnuma1 liburing2 >/dev/null 2>>"$work/apt.log"
gcc -shared -fPIC -O2 -o "$qemu/libinsn.so" scripts/qemu-insn-count.c
count_load() { # NAME QEMU BINARY: instructions of one load into a fresh engine
  fresh_engine
  "$qemu/root/usr/bin/$2" -plugin "$qemu/libinsn.so,out=$work/insn-$1" "$3" load -q --json \
    --trust "$work/ap/bench.pub" --platform "linux/$host_arch" "$work/ap/app.archpack" >"$work/insn-load-$1.json"
  drop_engine
}
count_load armv7 qemu-arm "$armv7"
insn_layer_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytesToSend"])' "$work/insn-load-armv7.json")

m() { median <"$work/$1"; }
range() { sort -g "$work/$1" | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f-%.2f", lo, hi}'; }
sum_arch() { echo "$(m ${1}_amd64) + $(m ${1}_arm64)" | bc; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
row() { printf '%-36s %12s %12s %8s   %s\n' "$@"; }
# A timed row: archpack's median and range against a baseline's.
timed() { row "$1" "$(printf %.2f "$(m "$2")")" "$(printf %.2f "$3")" "$(ratio "$(m "$2")" "$3")" "${4:-}"; }

# Raw numbers, one line per repetition, kept for a closer look.
results="$root/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
find "$work" -maxdepth 1 -type f ! -name '*.tar' ! -name rss ! -name inspect.json -exec cp {} "$results/" \;

echo
echo "archpack benchmark: $reps repetition(s), medians; $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -m), Docker $engine_version"
echo "corpus: 6 images (3 services x amd64/arm64), $(du -sm "$corpus"/*.tar | awk '{s+=$1} END {print s}') MiB as docker-archives; raw numbers in $results"
echo
row "" archpack baseline ratio target
timed "create time (s) vs seeds" ap_create "$(m seeds_create)" "<= 0.15"
timed "create time vs save|pigz per arch" ap_create "$(sum_arch pigz_create)"
timed "create time vs save|zstd -T0 -3" ap_create "$(sum_arch zstd_create)" "<= 0.80"
timed "create time vs docker save >null" ap_create "$(m save_null)"
row "bytes shipped vs seeds" "$(mb "$(m ap_bytes)")" "$(mb "$(m seeds_bytes)")" "$(ratio "$(m ap_bytes)" "$(m seeds_bytes)")" "<= 0.25"
row "bytes shipped vs pigz per arch" "$(mb "$(m ap_bytes)")" "$(mb "$(m pigz_bytes)")" "$(ratio "$(m ap_bytes)" "$(m pigz_bytes)")"
row "bytes shipped vs zstd per arch" "$(mb "$(m ap_bytes)")" "$(mb "$(m zstd_bytes)")" "$(ratio "$(m ap_bytes)" "$(m zstd_bytes)")"
timed "load time (s) vs seeds" ap_load "$(m seeds_load)" "<= 0.30"
timed "load time vs raw-tar docker load" ap_load "$(m raw_load)" "<= 0.85"
row "bytes read at load / needed" "$(mb "$read")" "$(mb "$needed")" "$(ratio "$read" "$needed")" "<= 1.01"
row "with --share-parts (format 2.2):" "" "" "" ""
row "  bytes shipped vs seeds" "$(mb "$(m parts_bytes)")" "$(mb "$(m seeds_bytes)")" "$(ratio "$(m parts_bytes)" "$(m seeds_bytes)")" "<= 0.25"
timed "  create time vs save|zstd -T0 -3" parts_create "$(sum_arch zstd_create)" "<= 0.80"
timed "  load time vs seeds" parts_load "$(m seeds_load)" "<= 0.30"
timed "  load time vs raw-tar docker load" parts_load "$(m raw_load)" "<= 0.85"
row "  bytes read at load / needed" "$(mb "$parts_read")" "$(mb "$parts_needed")" "$(ratio "$parts_read" "$parts_needed")" "<= 1.01"
row "  peak RSS create / load (MiB)" "$(( $(m parts_create_rss) / 1024 ))" "$(( $(m parts_load_rss) / 1024 ))" "" "<= 64"
row "peak RSS create (MiB)" "$(( $(m ap_create_rss) / 1024 ))" "" "" "<= 64"
row "peak RSS load (MiB)" "$(( $(m ap_load_rss) / 1024 ))" "" "" "<= 64"
row "re-load, all present (s)" "$(printf %.3f "$(m ap_reload)")" "" "" "<= 0.5"
row "release 2: full bundle" "$(mb "$full2_bytes")" "" "" ""
row "layer-only delta / full" "$(mb "$layers_bytes")" "$(mb "$full2_bytes")" "$(ratio "$layers_bytes" "$full2_bytes")" ""
row "patch delta / full" "$(mb "$delta_bytes")" "$(mb "$full2_bytes")" "$(ratio "$delta_bytes" "$full2_bytes")" "<= 0.02"
row "create delta (s) / peak RSS (MiB)" "$(printf %.2f "$delta_create")" "$(( delta_create_rss / 1024 ))" "" ""
timed "apply delta (s) vs full rel. 2 load" delta_apply "$(m full2_load)" "(onto release 1)"
timed "  the same with --base rel. 1 bundle" delta_base_apply "$(m full2_load)"
row "peak RSS applying (MiB) vs 64 + ref" "$(( $(m delta_apply_rss) / 1024 ))" "$(( 64 + patch_ref / 1048576 ))" "$(ratio "$(m delta_apply_rss)" "$(( (64 << 10) + patch_ref / 1024 ))")" "<= 1 (64 MiB + reference)"
timed "pull via serve vs docker-registry, zstd" serve_zstd "$(m registry_zstd)" "<= 1.2 (as stored)"
timed "pull via serve vs docker-registry, gzip" serve_gzip "$(m registry_gzip)" "re-encoded on the fly"
row "peak RSS serve zstd / gzip (MiB)" "$(( $(m serve_rss_zstd) / 1024 ))" "$(( $(m serve_rss_gzip) / 1024 ))" "" "$(mb "$pulled_bytes") pulled per run"
insn_per_gib=$(awk -v i="$(cat "$work/insn-armv7")" -v b="$insn_layer_bytes" 'BEGIN {printf "%.0f", i / (b / 1073741824)}')
row "armv7 load: instructions / GiB" "$(awk -v i="$insn_per_gib" 'BEGIN {printf "%.1f G", i / 1e9}')" "" "" "of layers loaded"
row "  as CPU s / GiB on a Pi 4 core" "$(awk -v i="$insn_per_gib" 'BEGIN {printf "%.1f", i / 1.5e9}')" "" "" "(1.5 GHz, 1 instr/cycle)"
echo
echo "ranges over the repetitions (min-max, s): create $(range ap_create), seeds create $(range seeds_create);"
echo "  load $(range ap_load), seeds load $(range seeds_load), raw docker load $(range raw_load)"
echo "  --share-parts: create $(range parts_create), load $(range parts_load)"
