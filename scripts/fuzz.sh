#!/usr/bin/env bash
# Coverage-guided fuzzing of the format crate's readers (cargo-fuzz, libFuzzer), one
# target per reader entry point, each for a bounded time. Seeds: a small real bundle.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]    # default 20
#
# Needs a nightly toolchain (`cargo +nightly`) and cargo-fuzz (installed from crates.io
# when missing). Where either cannot be had, it says so and exits 0: the proptest
# targets in tests/fuzz.rs still run with the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-20}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here (cargo +nightly); skipping cargo-fuzz (the proptest targets run with the tests)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! cargo install -q --locked cargo-fuzz; then
    echo "fuzz: cargo-fuzz could not be installed; skipping (the proptest targets run with the tests)"
    exit 0
  fi
fi

fuzz=crates/archpack-format/fuzz
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
# A seed bundle of two tiny images (two arches, a shared layer), made by archpack.
python3 - "$seeds" <<'PY'
import hashlib, io, json, sys, tarfile
out = sys.argv[1]
def tar(files):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            i = tarfile.TarInfo(name); i.size = len(data); i.mtime = 0
            t.addfile(i, io.BytesIO(data))
    return b.getvalue()
shared = tar([("app/hello.txt", b"hello\n")])
for arch in ["amd64", "arm64"]:
    layers = [tar([("bin/app", arch.encode())]), shared]
    diff = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    cfg = json.dumps({"architecture": arch, "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": diff}}, sort_keys=True).encode()
    name = hashlib.sha256(cfg).hexdigest() + ".json"
    man = json.dumps([{"Config": name, "RepoTags": [f"app:1-{arch}"],
                       "Layers": [f"l{i}/layer.tar" for i in range(2)]}]).encode()
    with open(f"{out}/{arch}.tar", "wb") as f:
        f.write(tar([(f"l{i}/layer.tar", l) for i, l in enumerate(layers)]
                    + [(name, cfg), ("manifest.json", man)]))
PY
cargo build -q --bin archpack
SOURCE_DATE_EPOCH=0 target/debug/archpack create -q -o "$seeds/seed.archpack" \
  "docker-archive:$seeds/amd64.tar" "docker-archive:$seeds/arm64.tar"

for target in open_file open_stream config_facts ustar_header; do
  corpus="$fuzz/corpus/$target"
  mkdir -p "$corpus"
  case $target in
    open_file | open_stream) cp "$seeds/seed.archpack" "$corpus/seed" ;;
    config_facts) tar -xOf "$seeds/amd64.tar" --wildcards '*.json' | head -c 4096 >"$corpus/seed" || true ;;
    ustar_header) head -c 512 "$seeds/seed.archpack" >"$corpus/seed" ;;
  esac
  echo "fuzz: $target for ${secs}s"
  (cd "$fuzz" && cargo +nightly fuzz run -s none "$target" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=256 -print_final_stats=1 \
    2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || true)
  if ls "$fuzz/artifacts/$target"/crash-* "$fuzz/artifacts/$target"/oom-* "$fuzz/artifacts/$target"/leak-* >/dev/null 2>&1; then
    echo "fuzz: $target found a failing input under $root/$fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no failures"
