//! Test vectors for bundle-format/: a fully specified two-architecture input set must
//! produce exactly the recorded bundle, and the spec's independent reference reader
//! must accept it. `ARCHPACK_UPDATE_VECTORS=1 cargo test --test format_vectors`
//! re-records them after a deliberate format change (then bump the spec).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/vectors/v1-two-arch")
}

/// The recipe in bundle-format/vectors/README.md, as code.
fn build_vector(dir: &Path) -> PathBuf {
    build_vector_with(dir, &[])
}

/// v1-two-arch's inputs and command, with `extra` options for `create`.
fn build_vector_with(dir: &Path, extra: &[&str]) -> PathBuf {
    let shared = layer_tar(&[("app/hello.txt", b"hello from archpack\n")]);
    for (arch, binary) in [
        ("amd64", &b"\x7fELF amd64 payload"[..]),
        ("arm64", b"\x7fELF arm64 payload"),
    ] {
        write_docker_archive(
            &dir.join(format!("app-{arch}.tar")),
            SyntheticImage {
                tag: &format!("app:1.0-{arch}"),
                architecture: Some(arch),
                layers: vec![layer_tar(&[("bin/app", binary)]), shared.clone()],
                diff_ids: None,
            },
        );
    }
    let bundle = dir.join("vector.archpack");
    archpack()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["create", "-q", "--bundle-name", "vector-1"])
        .args(extra)
        .arg("-o")
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            dir.join("app-amd64.tar").display()
        ))
        .arg(format!(
            "docker-archive:{}",
            dir.join("app-arm64.tar").display()
        ))
        .assert()
        .success();
    bundle
}

#[test]
fn vector_bundle_is_byte_identical_to_the_recorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = build_vector(dir.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let digest = sha256_hex(&bytes);
    let index = Std::new("tar")
        .arg("-xOf")
        .arg(&bundle)
        .arg("archpack-index.json")
        .output()
        .unwrap()
        .stdout;
    let vectors = vector_dir();
    if std::env::var_os("ARCHPACK_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::write(
            vectors.join("bundle.sha256"),
            format!("{digest}  vector.archpack\n"),
        )
        .unwrap();
        std::fs::write(vectors.join("archpack-index.json"), &index).unwrap();
    }
    let recorded = std::fs::read_to_string(vectors.join("bundle.sha256")).unwrap();
    assert_eq!(recorded.split_whitespace().next().unwrap(), digest);
    let recorded_index = std::fs::read(vectors.join("archpack-index.json")).unwrap();
    assert!(
        recorded_index == index,
        "index differs from the recorded vector"
    );
    // The index member's bytes begin right after the first 512-byte header.
    assert_eq!(&bytes[512..512 + index.len()], &index[..]);
}

#[test]
fn reference_reader_accepts_the_vector_and_rejects_damage() {
    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = build_vector(dir.path());
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&bundle)
        .args(["--platform", "linux/arm64/v8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["format"], "archpack-bundle/1.0");
    assert_eq!(
        summary["images"]["app:1.0"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    // config + manifest + 2 layers for arm64.
    assert_eq!(summary["platformBlobs"].as_array().unwrap().len(), 4);

    // Both readers refuse the same damage.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last_blob = bytes.len() - 2048;
    bytes[last_blob] ^= 0x20;
    let damaged = dir.path().join("damaged.archpack");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&damaged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&damaged)
        .assert()
        .code(3);

    let truncated = dir.path().join("truncated.archpack");
    std::fs::write(&truncated, &std::fs::read(&bundle).unwrap()[..3000]).unwrap();
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&truncated)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&truncated)
        .assert()
        .code(3)
        .stderr(predicates::str::contains("truncated"));
}

/// The 1.1 vector: v1-two-arch's inputs, plus stand-in loaders for amd64 and arm64
/// (4 KiB: an ELF header of the target, then bytes `(i % 251) ^ len(target)`).
fn build_loader_vector(dir: &Path) -> PathBuf {
    let loaders = dir.join("loaders");
    std::fs::create_dir_all(&loaders).unwrap();
    for (target, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[18..20].copy_from_slice(&machine.to_le_bytes());
        for (i, b) in elf.iter_mut().enumerate().skip(64) {
            *b = (i % 251) as u8 ^ target.len() as u8;
        }
        std::fs::write(loaders.join(format!("archpack-linux-{target}")), elf).unwrap();
    }
    let plain = build_vector(dir);
    let bundle = dir.join("vector-1.1.archpack");
    archpack()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["create", "-q", "--bundle-name", "vector-1.1", "--loaders"])
        .arg(&loaders)
        .arg("-o")
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            dir.join("app-amd64.tar").display()
        ))
        .arg(format!(
            "docker-archive:{}",
            dir.join("app-arm64.tar").display()
        ))
        .assert()
        .success();
    drop(plain);
    bundle
}

#[test]
fn the_loader_vector_is_byte_identical_and_both_readers_check_its_loaders() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = build_loader_vector(dir.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let member = |name: &str| {
        Std::new("tar")
            .arg("-xOf")
            .arg(&bundle)
            .arg(name)
            .output()
            .unwrap()
            .stdout
    };
    let (index, installer) = (member("archpack-index.json"), member("archpack-install"));
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/vectors/v1.1-loaders");
    if std::env::var_os("ARCHPACK_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::write(
            vectors.join("bundle.sha256"),
            format!("{}  vector-1.1.archpack\n", sha256_hex(&bytes)),
        )
        .unwrap();
        std::fs::write(vectors.join("archpack-index.json"), &index).unwrap();
        std::fs::write(vectors.join("archpack-install"), &installer).unwrap();
    }
    let recorded = std::fs::read_to_string(vectors.join("bundle.sha256")).unwrap();
    assert_eq!(
        recorded.split_whitespace().next().unwrap(),
        sha256_hex(&bytes)
    );
    assert!(std::fs::read(vectors.join("archpack-index.json")).unwrap() == index);
    assert!(std::fs::read(vectors.join("archpack-install")).unwrap() == installer);

    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["format"], "archpack-bundle/1.1");
    assert_eq!(summary["loaders"], serde_json::json!(["amd64", "arm64"]));
    // A flipped byte inside a loader: both readers refuse it.
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let at = v["loaders"]["binaries"][0]["offset"].as_u64().unwrap() as usize + 10;
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x08;
    let path = dir.path().join("damaged.archpack");
    std::fs::write(&path, damaged).unwrap();
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&path)
        .assert()
        .code(3);
}

/// The 2.0 vector's blob: 64 KiB from the LCG x' = (1103515245·x + 12345) mod 2^31,
/// x₀ = 1, byte = (x' >> 16) & 0xff; release 2 flips every byte at a multiple of 4096.
fn lcg_blob(release: u32) -> Vec<u8> {
    let mut x: u64 = 1;
    let mut out: Vec<u8> = (0..65536)
        .map(|_| {
            x = (1_103_515_245 * x + 12345) % (1 << 31);
            ((x >> 16) & 0xff) as u8
        })
        .collect();
    if release > 1 {
        for i in (0..out.len()).step_by(4096) {
            out[i] ^= 0xff;
        }
    }
    out
}

/// The 2.0 (delta) vector: release 1 and 2 of `app` for amd64 and arm64, each with
/// v1-two-arch's `bin/app` layer and a `data/blob.bin` layer (shared by both arches);
/// the delta of release 2 made against release 1's bundle.
fn build_delta_vector(dir: &Path) -> (PathBuf, PathBuf) {
    let mut sources: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for release in [1u32, 2] {
        let blob = layer_tar(&[("data/blob.bin", &lcg_blob(release))]);
        for (arch, binary) in [
            ("amd64", &b"\x7fELF amd64 payload"[..]),
            ("arm64", b"\x7fELF arm64 payload"),
        ] {
            let path = dir.join(format!("app-{release}-{arch}.tar"));
            write_docker_archive(
                &path,
                SyntheticImage {
                    tag: &format!("app:{release}.0-{arch}"),
                    architecture: Some(arch),
                    layers: vec![layer_tar(&[("bin/app", binary)]), blob.clone()],
                    diff_ids: None,
                },
            );
            sources[release as usize - 1].push(format!("docker-archive:{}", path.display()));
        }
    }
    let make = |name: &str, extra: &[&str], sources: &[String]| {
        let out = dir.join(format!("{name}.archpack"));
        archpack()
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["create", "-q", "--bundle-name", name, "-o"])
            .arg(&out)
            .args(extra)
            .args(sources)
            .assert()
            .success();
        out
    };
    let base = make("vector-2-base", &[], &sources[0]);
    let delta = make("vector-2", &["--base", base.to_str().unwrap()], &sources[1]);
    (base, delta)
}

#[test]
fn the_delta_vector_is_byte_identical_and_both_readers_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (base, delta) = build_delta_vector(dir.path());
    let bytes = std::fs::read(&delta).unwrap();
    let index = Std::new("tar")
        .arg("-xOf")
        .arg(&delta)
        .arg("archpack-index.json")
        .output()
        .unwrap()
        .stdout;
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/vectors/v2-delta");
    let base_digest = sha256_hex(&std::fs::read(&base).unwrap());
    if std::env::var_os("ARCHPACK_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::write(
            vectors.join("bundle.sha256"),
            format!(
                "{base_digest}  vector-2-base.archpack\n{}  vector-2.archpack\n",
                sha256_hex(&bytes)
            ),
        )
        .unwrap();
        std::fs::write(vectors.join("archpack-index.json"), &index).unwrap();
    }
    let recorded = std::fs::read_to_string(vectors.join("bundle.sha256")).unwrap();
    let lines: Vec<&str> = recorded.lines().collect();
    assert_eq!(lines[0].split_whitespace().next().unwrap(), base_digest);
    assert_eq!(
        lines[1].split_whitespace().next().unwrap(),
        sha256_hex(&bytes)
    );
    assert!(std::fs::read(vectors.join("archpack-index.json")).unwrap() == index);
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    // bin/app unchanged on both arches: required; the blob changed: one patch, shared.
    assert_eq!(v["delta"]["required"].as_array().unwrap().len(), 2);
    assert_eq!(v["delta"]["patches"].as_array().unwrap().len(), 1);

    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&delta)
        .args(["--platform", "linux/arm64/v8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["format"], "archpack-bundle/2.0");
    assert_eq!(summary["delta"]["patches"], 1);
    // config, manifest and the patch: what arm64 needs from this file.
    assert_eq!(summary["platformBlobs"].as_array().unwrap().len(), 3);
}

/// The 2.1 vector: v1-two-arch's inputs and command, cut into volumes of 16 KiB.
fn build_volume_vector(dir: &Path) -> Vec<PathBuf> {
    build_vector_with(dir, &["--volume-size", "16KiB"]);
    let mut volumes: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("vector.archpack."))
        .collect();
    volumes.sort();
    volumes
}

#[test]
fn the_volume_vector_is_byte_identical_and_joins_to_the_first_vector() {
    let dir = tempfile::tempdir().unwrap();
    let volumes = build_volume_vector(dir.path());
    assert!(volumes.len() >= 3, "{volumes:?}");
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/vectors/v2.1-volumes");
    let sums: String = volumes
        .iter()
        .map(|v| {
            format!(
                "{}  {}\n",
                sha256_hex(&std::fs::read(v).unwrap()),
                v.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    let index = Std::new("tar")
        .arg("-xOf")
        .arg(&volumes[0])
        .arg("archpack-index.json")
        .output()
        .unwrap()
        .stdout;
    if std::env::var_os("ARCHPACK_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::write(vectors.join("volumes.sha256"), &sums).unwrap();
        std::fs::write(vectors.join("archpack-index.json"), &index).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(vectors.join("volumes.sha256")).unwrap(),
        sums
    );
    assert!(std::fs::read(vectors.join("archpack-index.json")).unwrap() == index);
    // Joined, they are the 1.0 vector, byte for byte.
    let v1 = std::fs::read_to_string(vector_dir().join("bundle.sha256")).unwrap();
    let v1 = v1.split_whitespace().next().unwrap().to_string();
    let joined = dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&volumes[1])
        .assert()
        .success();
    assert_eq!(sha256_hex(&std::fs::read(&joined).unwrap()), v1);

    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&volumes[0])
        .args(["--platform", "linux/arm64/v8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["volumes"], volumes.len());
    assert_eq!(summary["joinedSha256"], v1.as_str());
    // A damaged piece: both readers name the volume.
    let last = volumes.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    let table: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let files = table["volumes"]["files"].as_array().unwrap();
    let at = files[files.len() - 1]["pieces"][0]["at"].as_u64().unwrap() as usize;
    bytes[at] ^= 0x01;
    std::fs::write(last, &bytes).unwrap();
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&volumes[0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&name));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(last)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(name.as_str()));
}

/// The 2.2 vector (shared parts): v1-two-arch with the arch-specific layer also carrying
/// `share/blob.bin` (the 2.0 vector's release-1 blob, 64 KiB), alike on both arches,
/// made with `--share-parts`.
fn build_parts_vector(dir: &Path) -> PathBuf {
    let shared = layer_tar(&[("app/hello.txt", b"hello from archpack\n")]);
    let blob = lcg_blob(1);
    let mut sources = Vec::new();
    for (arch, binary) in [
        ("amd64", &b"\x7fELF amd64 payload"[..]),
        ("arm64", b"\x7fELF arm64 payload"),
    ] {
        let path = dir.join(format!("app-{arch}.tar"));
        write_docker_archive(
            &path,
            SyntheticImage {
                tag: &format!("app:1.0-{arch}"),
                architecture: Some(arch),
                layers: vec![
                    layer_tar(&[("bin/app", binary), ("share/blob.bin", &blob)]),
                    shared.clone(),
                ],
                diff_ids: None,
            },
        );
        sources.push(format!("docker-archive:{}", path.display()));
    }
    let bundle = dir.join("vector.archpack");
    archpack()
        .env("SOURCE_DATE_EPOCH", "0")
        .args([
            "create",
            "-q",
            "--share-parts",
            "--bundle-name",
            "vector-2.2",
            "-o",
        ])
        .arg(&bundle)
        .args(&sources)
        .assert()
        .success();
    bundle
}

#[test]
fn the_parts_vector_is_byte_identical_and_both_readers_rebuild_its_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = build_parts_vector(dir.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let index = Std::new("tar")
        .arg("-xOf")
        .arg(&bundle)
        .arg("archpack-index.json")
        .output()
        .unwrap()
        .stdout;
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/vectors/v2.2-parts");
    let digest = sha256_hex(&bytes);
    if std::env::var_os("ARCHPACK_UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::write(
            vectors.join("bundle.sha256"),
            format!("{digest}  vector.archpack\n"),
        )
        .unwrap();
        std::fs::write(vectors.join("archpack-index.json"), &index).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(vectors.join("bundle.sha256")).unwrap(),
        format!("{digest}  vector.archpack\n")
    );
    assert!(std::fs::read(vectors.join("archpack-index.json")).unwrap() == index);
    let parsed: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(parsed["format"], "archpack-bundle/2.2");
    // One shared frame (the blob and the end of the tar), stored once for both arches.
    let shared: Vec<&serde_json::Value> = parsed["volumes"]["files"][0]["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("shares").is_some())
        .collect();
    assert_eq!(shared.len(), 1);
    // Smaller than the plain file by the frame, less the larger index and the headers
    // of the pieces.
    let joined_size = parsed["volumes"]["joined"]["size"].as_u64().unwrap();
    assert!(joined_size - bytes.len() as u64 + 8192 >= shared[0]["size"].as_u64().unwrap());

    let joined = dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&bundle)
        .assert()
        .success();
    let joined_sha = sha256_hex(&std::fs::read(&joined).unwrap());
    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    for file in [&bundle, &joined] {
        let out = Std::new("python3")
            .arg(&reader)
            .arg(file)
            .args(["--platform", "linux/arm64/v8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if file == &bundle {
            assert_eq!(summary["joinedSha256"], joined_sha.as_str());
        }
    }
    // A damaged shared frame: both readers refuse, archpack naming the piece.
    let mut damaged = bytes.clone();
    let at = shared[0]["at"].as_u64().unwrap() as usize;
    damaged[at + 8] ^= 0x01;
    std::fs::write(&bundle, &damaged).unwrap();
    let out = Std::new("python3")
        .arg(&reader)
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            shared[0]["name"].as_str().unwrap(),
        ));
}
