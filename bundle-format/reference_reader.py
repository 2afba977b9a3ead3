#!/usr/bin/env python3
"""An independent reader of archpack bundles, written from SPEC.md alone (stdlib only).

    reference_reader.py BUNDLE            check structure and every member; print a summary
    reference_reader.py BUNDLE --platform linux/arm64/v8
                                          also list the blobs one platform needs, in file order
    reference_reader.py VOLUME ...        a bundle in volumes (§13), or with shared parts
                                          (§14): finds the other volumes beside it, checks
                                          each, rebuilds the single file and checks that

Exit status 0 when the bundle is sound, 1 with one line naming the problem otherwise.
"""
import gzip
import hashlib
import json
import sys

BLOCK = 512
INDEX = "archpack-index.json"
SIGNATURE = "archpack-index.json.minisig"
MAX_INDEX = 64 << 20
# §3.4: what a member of each kind may claim.
MAX_BY_KIND = {"config": 16 << 20, "manifest": 4 << 20, "image-index": 4 << 20,
               "oci-layout": 4 << 10, "oci-index": 4 << 20}
MAX_LOADER = 64 << 20
# §8, §12: the features (2.x `requires`) this reader knows.
KNOWN_FEATURES = {"delta", "volumes", "parts"}
MAX_WINDOW_LOG = 27
MAX_INSTALLER = 64 << 10


class Bad(Exception):
    pass


def parse_header(block):
    if block == b"\0" * BLOCK:
        raise Bad("end of archive where a member was expected")
    stored = int(block[148:156].replace(b"\0", b" ").strip() or b"0", 8)
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise Bad("bad tar header checksum")
    if block[156:157] not in (b"0", b"\0"):
        raise Bad("member is not a regular file")
    name = block[0:100].split(b"\0", 1)[0].decode()
    prefix = block[345:500].split(b"\0", 1)[0].decode()
    if prefix:
        name = prefix + "/" + name
    size = int(block[124:136].replace(b"\0", b" ").strip() or b"0", 8)
    return name, size


def padded(size):
    return size + (-size) % BLOCK


def read_bundle(path, platform=None):
    with open(path, "rb") as f:
        data_len = f.seek(0, 2)

        def read_at(offset, size):
            if offset + size > data_len:
                raise Bad("truncated: %d bytes wanted at %d, file has %d" % (size, offset, data_len))
            f.seek(offset)
            return f.read(size)

        name, size = parse_header(read_at(0, BLOCK))
        if name != INDEX:
            raise Bad("first member is %r, not %s" % (name, INDEX))
        if size > MAX_INDEX:
            raise Bad("index too large")
        index = json.loads(read_at(BLOCK, size))
        fmt = index.get("format", "")
        if not fmt.startswith("archpack-bundle/"):
            raise Bad("unknown format %r" % fmt)
        major = int(fmt.split("/")[1].split(".")[0])
        if major not in (1, 2):
            raise Bad("format %s is newer than this reader" % fmt)
        for feature in index.get("requires", []):
            if feature not in KNOWN_FEATURES:
                raise Bad("the bundle requires feature %r, which this reader does not know" % feature)
        delta = index.get("delta")
        if (delta is not None) != ("delta" in index.get("requires", [])) or (delta and major != 2):
            raise Bad("a delta must be format 2.x and require 'delta' (and only a delta may)")
        region_end = BLOCK + padded(size)
        signed = False
        if region_end + BLOCK <= data_len:
            try:
                n, s = parse_header(read_at(region_end, BLOCK))
                if n == SIGNATURE:
                    signed = True
                    region_end += BLOCK + padded(s)
            except Bad:
                pass

        # §3.3 invariants, before any member is read.
        next_free = region_end
        by_digest = {}
        for m in index["members"]:
            off, sz = m["offset"], m["size"]
            if sz > MAX_BY_KIND.get(m["kind"], float("inf")):
                raise Bad("member %s claims more than a %s may" % (m["name"], m["kind"]))
            if off % BLOCK or off < next_free + BLOCK:
                raise Bad("member %s overlaps or is misaligned" % m["name"])
            if off + sz > data_len:
                raise Bad("truncated: member %s ends past the end of the file" % m["name"])
            want = {"oci-layout": "oci-layout", "oci-index": "index.json"}.get(
                m["kind"], "blobs/sha256/" + m["digest"].split(":", 1)[1])
            if m["name"] != want:
                raise Bad("member %s should be named %s" % (m["name"], want))
            next_free = off + padded(sz)
            by_digest[m["digest"]] = m
        # §12: a delta's layers may be left to the target or carried as patches.
        required = {r["digest"]: r for r in (delta or {}).get("required", [])}
        patched = {p["digest"]: p for p in (delta or {}).get("patches", [])}
        bases = len((delta or {}).get("bases", []))
        for r in required.values():
            if not 0 <= r["base"] < bases:
                raise Bad("required layer %s names no base" % r["diffId"])
        for p in patched.values():
            m = by_digest.get(p["patch"])
            if m is None or m["kind"] != "layer-patch":
                raise Bad("patch %s is not a layer-patch member" % p["patch"])
            if p["windowLog"] > MAX_WINDOW_LOG or not 0 <= p["reference"]["base"] < bases:
                raise Bad("patch %s: window over 2^27 or no base" % p["patch"])
        if any(m["kind"] == "layer-patch" for m in index["members"]) and delta is None:
            raise Bad("a layer patch in a bundle that is not a delta")
        for image in index["images"]:
            uses = [(image["index"], "image-index")]
            for p in image["platforms"]:
                uses += [(p["manifest"], "manifest"), (p["config"], "config")]
                uses += [(l, "layer") for l in p["layers"] if l not in required and l not in patched]
            for d, kind in uses:
                m = by_digest.get(d)
                if m is None:
                    raise Bad("%s refers to missing blob %s" % (image["name"], d))
                if m["kind"] != kind:
                    raise Bad("%s uses %s as a %s, but it is a %s" % (image["name"], d, kind, m["kind"]))
                if kind == "layer" and ("diffId" not in m or "uncompressedSize" not in m):
                    raise Bad("layer %s has no diffId or uncompressedSize" % m["name"])

        # Every member: header matches, digest matches.
        for m in index["members"]:
            hname, hsize = parse_header(read_at(m["offset"] - BLOCK, BLOCK))
            if (hname, hsize) != (m["name"], m["size"]):
                raise Bad("member %s: tar header disagrees with the index" % m["name"])
            h = hashlib.sha256()
            pos, end = m["offset"], m["offset"] + m["size"]
            while pos < end:
                chunk = read_at(pos, min(1 << 20, end - pos))
                h.update(chunk)
                pos += len(chunk)
            if "sha256:" + h.hexdigest() != m["digest"]:
                raise Bad("member %s is corrupt" % m["name"])

        # §11 (1.1): loaders, then the installer, after every member.
        loaders = index.get("loaders")
        if loaders:
            tails = [(b, "archpack-loaders/archpack-linux-%s.gz" % b["target"], MAX_LOADER)
                     for b in loaders["binaries"]]
            tails.append((loaders["installer"], "archpack-install", MAX_INSTALLER))
            for t, want, cap in tails:
                if t["name"] != want or t["size"] > cap:
                    raise Bad("loader member %s is misnamed or too large" % t["name"])
                if t["offset"] % BLOCK or t["offset"] < next_free + BLOCK:
                    raise Bad("loader member %s overlaps or is misaligned" % t["name"])
                if t["offset"] + t["size"] > data_len:
                    raise Bad("truncated: %s ends past the end of the file" % t["name"])
                next_free = t["offset"] + padded(t["size"])
                if parse_header(read_at(t["offset"] - BLOCK, BLOCK)) != (t["name"], t["size"]):
                    raise Bad("%s: tar header disagrees with the index" % t["name"])
                data = read_at(t["offset"], t["size"])
                if "sha256:" + hashlib.sha256(data).hexdigest() != t["digest"]:
                    raise Bad("%s is corrupt" % t["name"])
                if "binaryDigest" in t:
                    binary = gzip.decompress(data)
                    if ("sha256:" + hashlib.sha256(binary).hexdigest(), len(binary)) != (
                            t["binaryDigest"], t["binarySize"]):
                        raise Bad("%s does not unpack to the binary the index names" % t["name"])

        # The OCI view agrees with the bundle index (a delta has none, §12).
        if delta is None:
            oci = json.loads(read_at(by_digest_kind(index, "oci-index")["offset"],
                                     by_digest_kind(index, "oci-index")["size"]))
            refs = {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
                    for d in oci["manifests"]}
            for image in index["images"]:
                if refs.get(image["name"]) != image["index"]:
                    raise Bad("index.json does not point %s at its image index" % image["name"])

    summary = {
        "format": fmt,
        "signed": signed,
        "members": len(index["members"]),
        "delta": None if delta is None else {
            "required": len(required), "patches": len(patched),
            "bases": [b["name"] for b in delta["bases"]]},
        "loaders": [b["target"] for b in (index.get("loaders") or {}).get("binaries", [])],
        "images": {i["name"]: [platform_string(p["platform"]) for p in i["platforms"]] for i in index["images"]},
    }
    if platform:
        needed = set()
        for image in index["images"]:
            for p in image["platforms"]:
                if platform_string(p["platform"]) == platform:
                    needed.update([p["config"], p["manifest"]] + p["layers"])
        # A patched layer's bytes are its patch member's; a required one has none here.
        stored = {d: (patched[d]["patch"] if d in patched else d) for d in needed if d not in required}
        summary["platformBlobs"] = [m["digest"] for m in index["members"] if m["digest"] in stored.values()]
        summary["platformBytes"] = sum(by_digest[d]["size"] for d in stored.values())
    return summary


def read_front(f):
    """The index member (parsed and raw) and the index+signature region's bytes."""
    f.seek(0)
    name, size = parse_header(f.read(BLOCK))
    if name != INDEX or size > MAX_INDEX:
        raise Bad("first member is %r, not %s (or too large)" % (name, INDEX))
    raw = f.read(size)
    end = BLOCK + padded(size)
    f.seek(end)
    block = f.read(BLOCK)
    if len(block) == BLOCK and block != b"\0" * BLOCK:
        n, s = parse_header(block)
        if n == SIGNATURE:
            end += BLOCK + padded(s)
    f.seek(0)
    return json.loads(raw), f.read(end)


def joined_index_bytes(index):
    """§13: the single file's index is the volume index without `volumes`, with the
    single file's format and requires, serialised as archpack does (2-space indent)."""
    table = index["volumes"]
    joined = table["joined"]
    single = {}
    for k, v in index.items():
        if k == "volumes":
            continue
        if k == "format":
            v = joined["format"]
        if k == "requires":
            if not joined.get("requires"):
                continue
            v = joined["requires"]
        single[k] = v
    text = json.dumps(single, indent=2, ensure_ascii=False).encode()
    if len(text) >= joined["indexSize"]:
        raise Bad("the joined index does not fit its recorded size")
    text += b" " * (joined["indexSize"] - 1 - len(text)) + b"\n"
    if "sha256:" + hashlib.sha256(text).hexdigest() != joined["indexDigest"]:
        raise Bad("the joined index does not match its recorded digest")
    return text


def header(name, size, mtime):
    h = bytearray(BLOCK)
    h[0:len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%07o\0" % sum(h)
    return bytes(h)


def join_volumes(path, out):
    """Rebuilds the single file from a volume and its siblings into `out`; returns the
    number of volumes."""
    import os
    with open(path, "rb") as f:
        index, front = read_front(f)
    if "volumes" not in index.get("requires", []) or "volumes" not in index:
        raise Bad("not a volume")
    table = index["volumes"]
    joined = table["joined"]
    members = {m["name"]: m for m in index["members"]}
    for t in ((index.get("loaders") or {}).get("binaries", []) +
              ([index["loaders"]["installer"]] if index.get("loaders") else [])):
        members[t["name"]] = t
    pieces = {name: [] for name in members}
    parts = "parts" in index.get("requires", [])
    for v in table["files"]:
        # §14: a set of one may have been renamed; it is the file given.
        vpath = path if len(table["files"]) == 1 else os.path.join(os.path.dirname(path), v["name"])
        if not os.path.exists(vpath):
            raise Bad("%s: missing" % v["name"])
        with open(vpath, "rb") as f:
            if f.seek(0, 2) != v["size"]:
                raise Bad("%s: not the size the index gives it" % v["name"])
            if read_front(f)[1] != front:
                raise Bad("%s: its index or signature differs" % v["name"])
            for p in v["pieces"]:
                f.seek(p["at"] - BLOCK)
                if parse_header(f.read(BLOCK)) != (p["name"], p["size"]):
                    raise Bad("%s: piece %s: tar header disagrees" % (v["name"], p["name"]))
                data = f.read(p["size"])
                if "sha256:" + hashlib.sha256(data).hexdigest() != p["digest"]:
                    raise Bad("%s: piece %s is corrupt" % (v["name"], p["name"]))
                pieces[p["member"]].append((p["offset"], data))
                # §14: a shared piece also stands in other members.
                if p.get("shares") and not parts:
                    raise Bad("%s: piece %s is shared but `parts` is not required" % (v["name"], p["name"]))
                for share in p.get("shares", []):
                    if share["member"] not in pieces:
                        raise Bad("piece %s is shared with no member" % p["name"])
                    pieces[share["member"]].append((share["offset"], data))
    mtime = joined["mtime"]
    out.write(header(INDEX, joined["indexSize"], mtime))
    out.write(joined_index_bytes(index))
    out.write(b"\0" * ((-joined["indexSize"]) % BLOCK))
    if joined.get("signature"):
        sig = joined["signature"].encode()
        out.write(header(SIGNATURE, len(sig), mtime) + sig + b"\0" * ((-len(sig)) % BLOCK))
    for name, m in sorted(members.items(), key=lambda kv: kv[1]["offset"]):
        out.write(b"\0" * (m["offset"] - BLOCK - out.tell()))
        out.write(header(name, m["size"], mtime))
        at = 0
        for offset, data in sorted(pieces[name], key=lambda p: p[0]):
            if offset != at:
                raise Bad("the pieces of %s do not tile it" % name)
            out.write(data)
            at += len(data)
        if at != m["size"]:
            raise Bad("the volumes do not hold all of %s" % name)
        out.write(b"\0" * ((-m["size"]) % BLOCK))
    out.write(b"\0" * (2 * BLOCK))
    if out.tell() != joined["size"]:
        raise Bad("the rebuilt file is not the size the index records")
    return len(table["files"])


def by_digest_kind(index, kind):
    return next(m for m in index["members"] if m["kind"] == kind)


def platform_string(p):
    s = p["os"] + "/" + p["architecture"]
    return s + "/" + p["variant"] if p.get("variant") else s


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--platform"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as f:
            volume_index = read_front(f)[0]
        if "volumes" in volume_index:
            import tempfile
            with tempfile.NamedTemporaryFile() as single:
                count = join_volumes(argv[1], single)
                single.flush()
                summary = read_bundle(single.name, argv[3] if len(argv) == 4 else None)
                summary["volumes"] = count
                summary["joinedSha256"] = hashlib.sha256(open(single.name, "rb").read()).hexdigest()
        else:
            summary = read_bundle(argv[1], argv[3] if len(argv) == 4 else None)
    except (Bad, ValueError, KeyError, OSError) as e:
        print("reference_reader: %s: %s" % (argv[1], e), file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
