#!/usr/bin/env python3
"""What two layer tars (say amd64 and arm64 of the same base) would store as shared parts
(bundle-format/PROPOSAL-shared-parts.md): runs of identical tar entries, in the same
order in both, of at least MIN_RUN bytes, stored once; everything else as own parts.
Each part is compressed on its own, as the writer would (zstd -3, 16 MiB long window).

    scripts/measure-shared-parts.py A.tar B.tar [MIN_RUN]     # default 65536

A measurement, not part of archpack: it reads both tars into memory.
"""
import hashlib
import subprocess
import sys
import tarfile


def entries(path):
    """(start, end, sha256) of each entry's bytes (header and data), and the whole tar."""
    data = open(path, "rb").read()
    members = []
    try:
        for m in tarfile.open(path):
            members.append(m)
    except tarfile.ReadError:
        pass  # a tar whose last member is not padded: the tail stays an own part
    starts = [m.offset for m in members] + [len(data)]
    spans = [(starts[i], starts[i + 1]) for i in range(len(members))]
    return [(a, b, hashlib.sha256(data[a:b]).digest()) for a, b in spans], data


def compressed(b):
    out = subprocess.run(["zstd", "-3", "--long=24", "-c", "-q"], input=b, capture_output=True, check=True)
    return len(out.stdout)


def main():
    a, da = entries(sys.argv[1])
    b, db = entries(sys.argv[2])
    min_run = int(sys.argv[3]) if len(sys.argv) > 3 else 65536
    first_in_b = {}
    for j, e in enumerate(b):
        first_in_b.setdefault(e[2], j)
    # Matches that keep both layers' order (a forward reader of either never seeks back).
    runs, last = [], -1
    for i, e in enumerate(a):
        j = first_in_b.get(e[2])
        if j is None or j <= last:
            continue
        last = j
        if runs and runs[-1][1] == i and runs[-1][3] == j:
            runs[-1][1], runs[-1][3] = i + 1, j + 1
        else:
            runs.append([i, i + 1, j, j + 1])

    def span(es, data, s, e):
        return es[s][0], (es[e][0] if e < len(es) else len(data))

    shared = [r for r in runs if span(a, da, r[0], r[1])[1] - span(a, da, r[0], r[1])[0] >= min_run]

    def parts(es, data, side):
        out, pos = [], 0
        for r in shared:
            lo, hi = span(es, data, r[2 * side], r[2 * side + 1])
            if lo > pos:
                out.append(("own", data[pos:lo]))
            out.append(("shared", data[lo:hi]))
            pos = hi
        if pos < len(data):
            out.append(("own", data[pos:]))
        return out

    pa, pb = parts(a, da, 0), parts(b, db, 1)
    own_a = sum(compressed(x) for k, x in pa if k == "own")
    own_b = sum(compressed(x) for k, x in pb if k == "own")
    shared_bytes = sum(compressed(x) for k, x in pa if k == "shared")
    whole = compressed(da) + compressed(db)
    total = own_a + own_b + shared_bytes
    print(f"runs {len(runs)}, kept {len(shared)} (>= {min_run} B); parts {len(pa)} + {len(pb)}")
    print(f"own A {own_a}, own B {own_b}, shared {shared_bytes}: {total} bytes against {whole} whole, saved {whole - total}")


if __name__ == "__main__":
    main()
