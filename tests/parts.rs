//! Shared parts (`create --share-parts`, format 2.2): file bytes the layers of several
//! platforms carry alike are stored once, and every reader reads the bundle as the
//! plain file it stands for.

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const EPOCH: &str = "1700000000";
/// What the two platforms' base layers carry alike: incompressible, so the saving is
/// its size.
const SHARED_LEN: usize = 600 << 10;

/// The fixture's busybox base layer of `arch` with files every platform has alike
/// after it (as a distribution's /usr/share is), as a docker-archive `base:1-ARCH`;
/// and the fixture's `other` image as it is (nothing of it is shared but its top).
fn sources(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for arch in ["amd64", "arm64"] {
        out.push(base_image(dir, arch, None));
        out.push(format!(
            "docker-archive:{}",
            fixtures().join(format!("other-{arch}.tar")).display()
        ));
    }
    out
}

/// `base:1-ARCH` as [`sources`] describes it, from the fixture of `arch`; `as_arm_v7`
/// makes it a linux/arm/v7 image whose layer starts with a file of its own (a third
/// platform the fixtures do not have).
fn base_image(dir: &Path, arch: &str, as_arm_v7: Option<&str>) -> String {
    let shared = incompressible(SHARED_LEN, 7);
    let notes = "the same text on every platform\n".repeat(4000);
    let (mut config, layers) = read_image_archive(&fixtures().join(format!("svc-{arch}.tar")));
    let mut b = tar::Builder::new(Vec::new());
    if let Some(marker) = as_arm_v7 {
        append_file(&mut b, "etc/platform", marker.as_bytes());
        config["architecture"] = "arm".into();
        config["variant"] = "v7".into();
    }
    let mut archive = tar::Archive::new(&layers[0][..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    append_file(&mut b, "usr/share/common/data.bin", &shared);
    append_file(&mut b, "usr/share/common/notes.txt", notes.as_bytes());
    let mut layers = layers;
    layers[0] = b.into_inner().unwrap();
    let tag = if as_arm_v7.is_some() { "armv7" } else { arch };
    let p = dir.join(format!("base-{tag}.tar"));
    write_image_archive(&p, &format!("base:1-{tag}"), config, &layers);
    format!("docker-archive:{}", p.display())
}

fn create(dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(out);
    archpack()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["create", "-q", "--force", "--bundle-name", "app", "-o"])
        .arg(&path)
        .args(extra)
        .args(sources(dir))
        .assert()
        .success();
    path
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// The pieces of a parts bundle that stand in more than one member.
fn shared_pieces(bundle: &Path) -> Vec<Value> {
    bundle_index(bundle)["volumes"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["pieces"].as_array().unwrap().clone())
        .filter(|p| p.get("shares").is_some())
        .collect()
}

#[test]
fn what_platforms_share_is_stored_once_and_the_plain_file_joins_back() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = create(dir.path(), "plain.archpack", &[]);
    let parts = create(dir.path(), "parts.archpack", &["--share-parts"]);
    // The incompressible file is stored once: the saving is about its size (a frame
    // boundary costs the rest a little context).
    assert!(
        len(&parts) + (SHARED_LEN as u64) * 9 / 10 <= len(&plain),
        "parts {} vs plain {}",
        len(&parts),
        len(&plain)
    );
    let index = bundle_index(&parts);
    assert_eq!(index["format"], "archpack-bundle/2.2");
    assert_eq!(index["requires"], serde_json::json!(["volumes", "parts"]));
    let shared = shared_pieces(&parts);
    assert!(!shared.is_empty());
    let shared_bytes: u64 = shared.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert!(shared_bytes >= SHARED_LEN as u64, "{shared_bytes}");
    // The same images, configs byte for byte: the same image IDs as the plain bundle.
    assert_eq!(image_ids(&parts), image_ids(&plain));
    // Reproducible, as every bundle.
    let elsewhere = tempfile::tempdir().unwrap();
    let again = create(elsewhere.path(), "parts.archpack", &["--share-parts"]);
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&parts).unwrap(),
        "two runs differ"
    );

    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&parts)
        .assert()
        .success();
    // Signed: the written file's index is signed, and the plain file it joins to keeps
    // its own signature by the same key.
    let key = dir.path().join("k");
    archpack()
        .args(["keygen", "-q", "--no-password", "-o"])
        .arg(&key)
        .assert()
        .success();
    let signed = create(
        dir.path(),
        "signed.archpack",
        &[
            "--share-parts",
            "--sign",
            key.with_extension("key").to_str().unwrap(),
        ],
    );
    let pubkey = key.with_extension("pub");
    archpack()
        .args(["verify", "--trust"])
        .arg(&pubkey)
        .arg(&signed)
        .assert()
        .success();
    let signed_plain = dir.path().join("signed-plain.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&signed_plain)
        .arg(&signed)
        .assert()
        .success();
    archpack()
        .args(["verify", "--trust"])
        .arg(&pubkey)
        .arg(&signed_plain)
        .assert()
        .success();
    archpack()
        .args(["verify", "--trust"])
        .arg(&pubkey)
        .arg(&parts)
        .assert()
        .code(predicate::ne(0));
    archpack()
        .arg("inspect")
        .arg(&parts)
        .assert()
        .success()
        .stdout(predicate::str::contains("stored once"));
    // "on disk" is the file written, not the plain file it stands for.
    assert_eq!(inspect_json(&parts)["bytes"], len(&parts));
    // The independent reader rebuilds the plain file and checks every member of it.
    let summary = reference_read(&parts, &[]);

    // `join` writes that plain file: format 1.0, every layer whole, read by skopeo.
    let joined = dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&parts)
        .assert()
        .success();
    assert_eq!(
        summary["joinedSha256"],
        sha256_hex(&std::fs::read(&joined).unwrap())
    );
    assert_eq!(bundle_index(&joined)["format"], "archpack-bundle/1.0");
    assert_eq!(
        len(&joined),
        index["volumes"]["joined"]["size"].as_u64().unwrap()
    );
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:base:1", joined.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_parts_bundle_loads_each_platform_and_runs() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let parts = create(dir.path(), "parts.archpack", &["--share-parts"]);
    let out = engine
        .archpack()
        .args(["load", "--allow-unsigned", "--json"])
        .arg(&parts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = image_ids(&parts);
    for name in ["base:1", "other:v2"] {
        assert_eq!(
            engine.inspect(name, "{{.Id}}"),
            Some(id_for(&ids, name, native_arch()))
        );
        assert_eq!(
            engine.inspect(name, "{{.Architecture}}").as_deref(),
            Some(native_arch())
        );
    }
    // The shared file came out of the shared frame whole.
    let run = engine.docker(&[
        "run",
        "--rm",
        "--network=none",
        "base:1",
        "/bin/busybox",
        "sha256sum",
        "/usr/share/common/data.bin",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout)
        .starts_with(&sha256_hex(&incompressible(SHARED_LEN, 7))));
    // Bytes read: only what this platform's images need, each once.
    let read = report["bundleBytesRead"].as_u64().unwrap_or(0);
    assert!(read > 0 && read < len(&parts), "{read} of {}", len(&parts));

    // The other platform (its layers use the frames the first one stores).
    let other = if native_arch() == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let e2 = TestEngine::start();
    e2.archpack()
        .args(["load", "--allow-unsigned", "--platform", other])
        .arg(&parts)
        .assert()
        .success();
    let other_arch = other.trim_start_matches("linux/");
    assert_eq!(
        e2.inspect("base:1", "{{.Id}}"),
        Some(id_for(&ids, "base:1", other_arch))
    );

    // A stream cannot reach back for a shared frame: refused with the fix, nothing
    // loaded.
    let e3 = TestEngine::start();
    let out = e3
        .archpack()
        .args(["load", "--allow-unsigned", "-"])
        .pipe_stdin(&parts)
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("give the bundle's path"));
    assert!(e3.tags().is_empty());
}

#[test]
fn a_corrupt_shared_piece_fails_every_platform_that_uses_it_and_loads_nothing() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let parts = create(dir.path(), "parts.archpack", &["--share-parts"]);
    let piece = &shared_pieces(&parts)[0];
    let at = piece["at"].as_u64().unwrap() + piece["size"].as_u64().unwrap() / 2;
    let mut bytes = std::fs::read(&parts).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(&parts, bytes).unwrap();
    for platform in ["linux/amd64", "linux/arm64"] {
        engine
            .archpack()
            .args(["load", "--allow-unsigned", "--platform", platform])
            .arg(&parts)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(piece["name"].as_str().unwrap()));
    }
    assert!(engine.tags().is_empty(), "tagged: {:?}", engine.tags());
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&parts)
        .assert()
        .code(3);
}

#[test]
fn share_parts_in_volumes_and_what_it_does_not_combine_with() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = create(dir.path(), "plain.archpack", &[]);
    // In volumes too: the shared frames go to the shared volumes.
    let vdir = dir.path().join("vols");
    std::fs::create_dir(&vdir).unwrap();
    let first = vdir.join("app.archpack.001");
    archpack()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["create", "-q", "--share-parts", "--volume-size", "300KiB"])
        .args(["--bundle-name", "app", "-o"])
        .arg(vdir.join("app.archpack"))
        .args(sources(dir.path()))
        .assert()
        .success();
    let index = bundle_index(&first);
    assert_eq!(index["format"], "archpack-bundle/2.2");
    let total: u64 = index["volumes"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert!(total < len(&plain), "{total} vs {}", len(&plain));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(vdir.join("app.archpack"))
        .assert()
        .success();
    let extracted = dir.path().join("x.tar");
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/arm64",
            "-o",
        ])
        .arg(&extracted)
        .arg(&first)
        .assert()
        .success();
    assert!(len(&extracted) > SHARED_LEN as u64);

    let f = fixtures().join("svc-amd64.tar");
    archpack()
        .args(["create", "--share-parts", "--base"])
        .arg(&plain)
        .arg("-o")
        .arg(dir.path().join("d.archpack"))
        .arg(format!("docker-archive:{}", f.display()))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--share-parts"));
    assert!(!dir.path().join("d.archpack").exists());
}

/// A third platform's layer copies the frames the first platform's layer was cut into
/// for the second: what all three carry alike is stored once, in one piece that
/// stands in the three layers.
#[test]
fn a_third_platform_copies_the_frames_the_first_two_share() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut srcs = sources(dir.path());
    srcs.push(base_image(dir.path(), "arm64", Some("linux/arm/v7\n")));
    let create3 = |out: &str, extra: &[&str], srcs: &[String]| {
        let path = dir.path().join(out);
        archpack()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["create", "-q", "--bundle-name", "app", "-o"])
            .arg(&path)
            .args(extra)
            .args(srcs)
            .assert()
            .success();
        path
    };
    let plain = create3("plain.archpack", &[], &srcs);
    let parts = create3("parts.archpack", &["--share-parts"], &srcs);
    // Sources given in another order (arm/v7 before arm64) make the same bytes.
    let mut v7_first = srcs.clone();
    let v7 = v7_first.pop().unwrap();
    v7_first.insert(2, v7);
    std::fs::create_dir(dir.path().join("again")).unwrap();
    let again = create3("again/parts.archpack", &["--share-parts"], &v7_first);
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&parts).unwrap(),
        "the order of the sources changed the bundle"
    );
    // Stored once where it was stored three times: two copies saved.
    assert!(
        len(&parts) + (SHARED_LEN as u64) * 2 * 9 / 10 <= len(&plain),
        "parts {} vs plain {}",
        len(&parts),
        len(&plain)
    );
    let in_three: Vec<Value> = shared_pieces(&parts)
        .into_iter()
        .filter(|p| p["shares"].as_array().unwrap().len() == 2)
        .collect();
    let in_three_bytes: u64 = in_three.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert!(in_three_bytes >= SHARED_LEN as u64, "{in_three_bytes}");
    assert_eq!(image_ids(&parts), image_ids(&plain));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&parts)
        .assert()
        .success();
    // The independent reader checks every member of the plain file it rebuilds.
    reference_read(&parts, &[]);
    // The arm/v7 image comes out as it went in: its layers are the source's bytes.
    let extracted = dir.path().join("v7.tar");
    archpack()
        .args(["extract", "--allow-unsigned", "--platform", "linux/arm/v7"])
        .args(["--image", "base:1", "-o"])
        .arg(&extracted)
        .arg(&parts)
        .assert()
        .success();
    let (_, got) = read_image_archive(&extracted);
    let (_, want) = read_image_archive(&dir.path().join("base-armv7.tar"));
    let digests = |layers: &[Vec<u8>]| layers.iter().map(|l| sha256_hex(l)).collect::<Vec<_>>();
    assert_eq!(digests(&got), digests(&want));
}

#[test]
fn a_shared_piece_that_names_no_member_is_refused_before_anything_is_read() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parts = create(dir.path(), "parts.archpack", &["--share-parts"]);
    let bad = |change: &dyn Fn(&mut Value), expect: &str| {
        let copy = dir.path().join("bad.archpack");
        std::fs::copy(&parts, &copy).unwrap();
        rewrite_index(&copy, |index| change(index));
        archpack()
            .arg("inspect")
            .arg(&copy)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(expect.to_string()));
    };
    let shared_at = |index: &Value| -> (usize, usize) {
        let files = index["volumes"]["files"].as_array().unwrap();
        for (f, file) in files.iter().enumerate() {
            for (p, piece) in file["pieces"].as_array().unwrap().iter().enumerate() {
                if piece.get("shares").is_some() {
                    return (f, p);
                }
            }
        }
        panic!("no shared piece");
    };
    bad(
        &|index| {
            let (f, p) = shared_at(index);
            index["volumes"]["files"][f]["pieces"][p]["shares"][0]["member"] =
                "blobs/sha256/nothing".into();
        },
        "shared with a member that does not exist",
    );
    bad(
        &|index| {
            let (f, p) = shared_at(index);
            index["volumes"]["files"][f]["pieces"][p]["shares"][0]["offset"] = (1u64 << 40).into();
        },
        "does not fit",
    );
    // Shares without the feature marked: a 2.1 reader would misread it.
    bad(
        &|index| {
            index["requires"] = serde_json::json!(["volumes"]);
            index["format"] = "archpack-bundle/2.1".into();
        },
        "does not require `parts`",
    );
}

#[test]
fn an_engine_source_that_streams_in_its_own_order_shares_the_same_parts() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let from_archives = create(dir.path(), "archives.archpack", &["--share-parts"]);
    for arch in ["amd64", "arm64"] {
        let out = engine.docker(&[
            "load",
            "-q",
            "-i",
            dir.path()
                .join(format!("base-{arch}.tar"))
                .to_str()
                .unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let from_engine = dir.path().join("engine.archpack");
    engine
        .archpack()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "create",
            "-q",
            "--share-parts",
            "--bundle-name",
            "app",
            "-o",
        ])
        .arg(&from_engine)
        .args(["base:1-amd64", "base:1-arm64"])
        .assert()
        .success();
    let ids = image_ids(&from_engine);
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            id_for(&ids, "base:1", arch),
            id_for(&image_ids(&from_archives), "base:1", arch)
        );
    }
    let shared: u64 = shared_pieces(&from_engine)
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .sum();
    assert!(shared >= SHARED_LEN as u64, "{shared}");
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&from_engine)
        .assert()
        .success();
}

/// skopeo pulls the arm64 images (whose layers reach into the amd64 ones' frames).
const ARM64: &[&str] = &["--override-arch", "arm64"];

/// A process killed when the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_and_push_hand_skopeo_and_a_registry_the_shared_layers_whole() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("skopeo"),
        Need::Tool("docker-registry"),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parts = create(dir.path(), "parts.archpack", &["--share-parts"]);
    // serve: the arm64 layers come out of the amd64 ones' shared frames.
    let addr = format!("127.0.0.1:{}", free_port());
    let _serve = Running(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("archpack"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .args(["serve", "-q", "--allow-unsigned", "--listen", &addr])
            .arg(&parts)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(port_opens_within(&addr, std::time::Duration::from_secs(60)));
    let id = id_for(&image_ids(&parts), "base:1", "arm64");
    let (config, served) =
        skopeo_pull(&format!("{addr}/base:1"), &dir.path().join("served"), ARM64);
    assert_eq!(config, id);
    assert!(served > SHARED_LEN as u64, "{served}");

    // push: into CNCF distribution, then pulled back by skopeo from there.
    let registry = Registry::start(None);
    let reg = &registry.addr;
    archpack()
        .env("DOCKER_CONFIG", "/nonexistent")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["push", "-q", "--allow-unsigned", "--insecure"])
        .arg(&parts)
        .arg(reg)
        .assert()
        .success();
    // (pushed as gzip by default: other bytes, the same image.)
    let (config, pushed) = skopeo_pull(&format!("{reg}/base:1"), &dir.path().join("pushed"), ARM64);
    assert_eq!(config, id);
    assert!(pushed > SHARED_LEN as u64, "{pushed}");
}
