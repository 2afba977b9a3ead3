//! Volumes (`create --volume-size`, `join`, and every reader given a volume): small
//! volume sizes on the fixture images, so one layer lies in pieces across volumes.

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const EPOCH: &str = "1700000000";

fn sources() -> Vec<String> {
    ["svc-amd64", "svc-arm64", "other-amd64", "other-arm64"]
        .iter()
        .map(|f| {
            format!(
                "docker-archive:{}",
                fixtures().join(format!("{f}.tar")).display()
            )
        })
        .collect()
}

/// `create` of the fixture images with `extra`, output `dir/app.archpack`.
fn create(dir: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("app.archpack");
    archpack()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["create", "-q", "--bundle-name", "app", "-o"])
        .arg(&out)
        .args(extra)
        .args(sources())
        .assert()
        .success();
    out
}

/// The volumes in `dir`, in order.
fn volumes_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| {
                e.len() == 3 && e.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
            })
        })
        .collect();
    v.sort();
    v
}

fn table(volume: &Path) -> Value {
    bundle_index(volume)["volumes"].clone()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn native_platform() -> &'static str {
    match native_arch() {
        "arm64" => "linux/arm64/v8",
        _ => "linux/amd64",
    }
}

/// A piece of a layer only `platform` uses: (volume name, offset in the volume).
fn layer_piece_of(volume: &Path, platform: &str) -> (String, u64) {
    let t = table(volume);
    for f in t["files"].as_array().unwrap() {
        if f["group"] == platform {
            let p = &f["pieces"][0];
            return (
                f["name"].as_str().unwrap().to_string(),
                p["at"].as_u64().unwrap() + p["size"].as_u64().unwrap() / 2,
            );
        }
    }
    panic!("no volume of group {platform}");
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn volumes_are_plain_tars_under_the_size_and_join_to_the_single_file() {
    if skip(&[Need::Fixtures, Need::Tool("tar")]) {
        return;
    }
    let single_dir = tempfile::tempdir().unwrap();
    let single = create(single_dir.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let cap = 200 * 1024;
    create(dir.path(), &["--volume-size", "200KiB"]);
    assert!(!dir.path().join("app.archpack").exists());
    let vols = volumes_in(dir.path());
    assert!(vols.len() >= 6, "only {} volumes", vols.len());
    let t = table(&vols[0]);
    assert_eq!(t["cap"], cap);
    let files = t["files"].as_array().unwrap();
    assert_eq!(files.len(), vols.len());
    let mut volumes_of_member: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (f, path) in files.iter().zip(&vols) {
        assert_eq!(f["name"].as_str().unwrap(), name_of(path));
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len <= cap, "{} is {len} bytes", path.display());
        assert_eq!(f["size"], len);
        // Each is a plain tar: the same index first, then its pieces by name.
        let out = std::process::Command::new("tar")
            .arg("-tf")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success());
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(listed[0], "archpack-index.json");
        let pieces: Vec<String> = f["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed[1..], pieces[..]);
        for p in f["pieces"].as_array().unwrap() {
            volumes_of_member
                .entry(p["member"].as_str().unwrap().to_string())
                .or_default()
                .push(name_of(path));
        }
        assert_eq!(bundle_index(path), bundle_index(&vols[0]));
    }
    assert!(
        volumes_of_member.values().any(|v| v.len() >= 3),
        "no member was cut across three volumes"
    );
    // Volumes never mix a platform's layers with another's.
    let groups: Vec<&str> = files.iter().map(|f| f["group"].as_str().unwrap()).collect();
    for g in ["shared", "linux/amd64", "linux/arm64/v8"] {
        assert!(groups.contains(&g), "no {g} volume in {groups:?}");
    }

    // join, from any volume: the single file, byte for byte.
    let joined = dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&vols[vols.len() / 2])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "from {} volumes",
            vols.len()
        )));
    assert!(
        std::fs::read(&joined).unwrap() == std::fs::read(&single).unwrap(),
        "joined bundle differs from the single file"
    );
    // An existing output is kept; a missing volume is named and nothing is written.
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&vols[0])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"));
    std::fs::remove_file(&vols[2]).unwrap();
    let again = dir.path().join("again.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&again)
        .arg(&vols[0])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "{}: missing",
            vols[2].display()
        )));
    assert!(!again.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn each_signed_volume_verifies_alone_and_the_joined_file_keeps_the_signature() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    archpack()
        .args(["keygen", "--no-password", "-o"])
        .arg(keys.path().join("release"))
        .assert()
        .success();
    let key = keys.path().join("release.key");
    let public = keys.path().join("release.pub");
    let dir = tempfile::tempdir().unwrap();
    create(
        dir.path(),
        &["--volume-size", "256K", "--sign", key.to_str().unwrap()],
    );
    let vols = volumes_in(dir.path());
    assert!(vols.len() >= 4);
    for v in &vols {
        // Alone in a directory of its own.
        let alone = tempfile::tempdir().unwrap();
        let copy = alone.path().join(name_of(v));
        std::fs::copy(v, &copy).unwrap();
        archpack()
            .args(["verify", "--trust"])
            .arg(&public)
            .arg(&copy)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!(
                "{}  verified",
                copy.display()
            )))
            .stdout(predicate::str::contains("missing"));
        archpack().arg("verify").arg(&copy).assert().code(4);
    }
    // The set by its name: every volume, checked as one bundle.
    archpack()
        .args(["verify", "--trust"])
        .arg(&public)
        .arg(dir.path().join("app.archpack"))
        .assert()
        .success()
        .stdout(predicate::str::contains("present (not checked)").not());
    let joined = dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&vols[0])
        .assert()
        .success()
        .stdout(predicate::str::contains("signed"));
    archpack()
        .args(["verify", "--trust"])
        .arg(&public)
        .arg(&joined)
        .assert()
        .success();
    archpack().arg("verify").arg(&joined).assert().code(4);
}

#[test]
fn a_damaged_volume_is_named_by_verify() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), &["--volume-size", "200KiB"]);
    let vols = volumes_in(dir.path());
    let (name, at) = layer_piece_of(&vols[0], "linux/arm64/v8");
    let hurt = dir.path().join(&name);
    flip_byte(&hurt, at);
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&hurt)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(hurt.display().to_string()));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(dir.path().join("app.archpack"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains(hurt.display().to_string()));
    // The others still verify alone.
    let other = vols.iter().find(|v| name_of(v) != name).unwrap();
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(other)
        .assert()
        .success();
    // Cut short: named before a byte of it is read.
    let len = std::fs::metadata(other).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(other)
        .unwrap()
        .set_len(len - 512)
        .unwrap();
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&hurt)
        .arg(other)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "{}: {} bytes, the index says {len}",
            other.display(),
            len - 512
        )));
}

#[test]
fn a_load_needs_only_its_platform_volumes() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), &["--volume-size", "200KiB"]);
    let vols = volumes_in(dir.path());
    let inspected = inspect_json(&vols[0]);
    let needed: Vec<String> = inspected["volumes"]["neededBy"][native_platform()]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert!(needed.len() < vols.len(), "{needed:?} is every volume");
    let site = tempfile::tempdir().unwrap();
    for n in &needed {
        std::fs::copy(dir.path().join(n), site.path().join(n)).unwrap();
    }
    let out = engine
        .archpack()
        .args(["load", "--allow-unsigned", "--json"])
        .arg(site.path().join(&needed[needed.len() - 1]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = image_ids(&vols[0]);
    for name in ["svc:v1.0", "other:v2"] {
        assert_eq!(
            engine.inspect(name, "{{.Id}}"),
            Some(id_for(&ids, name, native_arch()))
        );
        assert_eq!(
            engine.inspect(name, "{{.Architecture}}").as_deref(),
            Some(native_arch())
        );
    }
    assert_eq!(v["images"][0]["status"], "loaded");
}

#[test]
fn a_missing_or_damaged_volume_is_named_and_nothing_is_loaded() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), &["--volume-size", "200KiB"]);
    let vols = volumes_in(dir.path());
    let (name, at) = layer_piece_of(&vols[0], native_platform());
    let victim = dir.path().join(&name);
    let saved = std::fs::read(&victim).unwrap();
    let shared = vols
        .iter()
        .find(|v| {
            table(&vols[0])["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == name_of(v) && f["group"] == "shared")
        })
        .unwrap()
        .clone();
    let load = |extra: &[&str]| {
        engine
            .archpack()
            .args(["load", "--allow-unsigned"])
            .args(extra)
            .arg(&shared)
            .assert()
    };
    std::fs::remove_file(&victim).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        load(extra).code(1).stderr(predicate::str::contains(format!(
            "{}: missing",
            victim.display()
        )));
    }
    // Cut short.
    std::fs::write(&victim, &saved[..saved.len() - 1024]).unwrap();
    load(&[])
        .code(3)
        .stderr(predicate::str::contains(victim.display().to_string()))
        .stderr(predicate::str::contains("cut short"));
    // A flipped byte in a layer: found as it streams, named, nothing loaded.
    std::fs::write(&victim, &saved).unwrap();
    flip_byte(&victim, at);
    load(&[])
        .code(3)
        .stderr(predicate::str::contains(victim.display().to_string()));
    assert!(engine.tags().is_empty(), "tagged: {:?}", engine.tags());
    assert!(engine.images().is_empty(), "left: {:?}", engine.images());
    // The other platform's volumes are never needed: the arm64 dry run there passes.
    let other = if native_arch() == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    load(&["--dry-run", "--platform", other]).success();
}

#[test]
fn extract_from_volumes_writes_what_the_single_file_does() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let single_dir = tempfile::tempdir().unwrap();
    let single = create(single_dir.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), &["--volume-size", "300KiB"]);
    let vols = volumes_in(dir.path());
    // Volumes kept apart: the first names the rest.
    let apart = tempfile::tempdir().unwrap();
    let moved = apart.path().join(name_of(&vols[1]));
    std::fs::rename(&vols[1], &moved).unwrap();
    for format in ["docker-archive", "oci-archive"] {
        let from_single = dir.path().join(format!("single-{format}.tar"));
        let from_volumes = dir.path().join(format!("volumes-{format}.tar"));
        for (input, out) in [(&single, &from_single), (&vols[0], &from_volumes)] {
            archpack()
                .args(["extract", "--allow-unsigned", "--platform", "linux/arm64"])
                .args(["--format", format, "-o"])
                .arg(out)
                .arg(input)
                .arg(&moved)
                .assert()
                .success();
        }
        assert!(std::fs::read(&from_single).unwrap() == std::fs::read(&from_volumes).unwrap());
    }
}

#[test]
fn bad_volume_sizes_and_renamed_volumes_are_refused_with_the_fix() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (size, says) in [
        ("10KiB", "give --volume-size"),
        ("1MB", "KiB, MiB or GiB"),
        ("lots", "expected a number"),
    ] {
        archpack()
            .args(["create", "-q", "-o"])
            .arg(dir.path().join("app.archpack"))
            .args(["--volume-size", size])
            .args(sources())
            .assert()
            .code(1)
            .stderr(predicate::str::contains(says));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    create(dir.path(), &["--volume-size", "500KiB"]);
    let vols = volumes_in(dir.path());
    let renamed = dir.path().join("first.tar");
    std::fs::rename(&vols[0], &renamed).unwrap();
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&renamed)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("give it back its name"));
    // An existing volume is not replaced without --force; with it, a set of fewer
    // volumes leaves none of the old ones behind.
    std::fs::rename(&renamed, &vols[0]).unwrap();
    archpack()
        .args(["create", "-q", "--force", "-o"])
        .arg(dir.path().join("app.archpack"))
        .args(["--volume-size", "1MiB"])
        .args(sources())
        .assert()
        .success();
    let fewer = volumes_in(dir.path());
    assert!(fewer.len() < vols.len());
    assert_eq!(
        fewer.len(),
        table(&fewer[0])["files"].as_array().unwrap().len()
    );
    archpack()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["create", "-q", "-o"])
        .arg(dir.path().join("app.archpack"))
        .args(["--volume-size", "500KiB"])
        .args(sources())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"));
}

/// Unmounts a FUSE mount when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn volumes_written_onto_a_real_fat32_filesystem() {
    if skip(&[
        Need::Fixtures,
        // Root (for FUSE), as the engine tests have it.
        Need::OwnEngine,
        Need::Tool("mkfs.vfat"),
        Need::Tool("fusefat"),
        Need::Tool("fusermount"),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("stick.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let ok = std::process::Command::new("mkfs.vfat")
        .args(["-F", "32"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mount = dir.path().join("stick");
    std::fs::create_dir(&mount).unwrap();
    let ok = std::process::Command::new("fusefat")
        .args(["-o", "rw+"])
        .arg(&image)
        .arg(&mount)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let _mounted = Mounted(mount.clone());
    let fs_type = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&mount)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&fs_type.stdout).contains("fuse"));

    // fat32: the bundle is far below 4 GiB, so one volume per group (each platform's
    // own layers, and the shared members), with the FAT32 cap.
    create(&mount, &["--volume-size", "fat32"]);
    let first = mount.join("app.archpack.001");
    let t = table(&first);
    assert_eq!(t["cap"], 4u64 * 1024 * 1024 * 1024 - 1);
    let groups: Vec<&str> = t["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["linux/amd64", "shared", "linux/arm64/v8"]);
    for v in volumes_in(&mount) {
        std::fs::remove_file(v).unwrap();
    }

    create(&mount, &["--volume-size", "700KiB"]);
    let vols = volumes_in(&mount);
    assert!(vols.len() >= 3);
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(mount.join("app.archpack"))
        .assert()
        .success();
    let single_dir = tempfile::tempdir().unwrap();
    let single = create(single_dir.path(), &[]);
    let joined = single_dir.path().join("joined.archpack");
    archpack()
        .args(["join", "-o"])
        .arg(&joined)
        .arg(&vols[0])
        .assert()
        .success();
    assert!(std::fs::read(&joined).unwrap() == std::fs::read(&single).unwrap());
    // The stick holds the volumes and nothing else (no temporary single file).
    let names: Vec<String> = std::fs::read_dir(&mount)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), vols.len(), "{names:?}");
}

#[test]
fn an_inconsistent_volume_table_is_refused_before_a_piece_is_read() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    type Damage = fn(&mut Value);
    let damages: [(&str, Damage); 4] = [
        ("do not tile", |t| {
            let p = &mut t["volumes"]["files"][0]["pieces"][0];
            p["offset"] = (p["offset"].as_u64().unwrap() + 512).into();
        }),
        ("misplaced", |t| {
            t["volumes"]["files"][1]["pieces"][0]["at"] = 3.into();
        }),
        ("not a unique file name", |t| {
            t["volumes"]["files"][1]["name"] = "../etc/passwd".into();
        }),
        ("not marked as a volume", |t| {
            t["requires"] = serde_json::json!([]);
        }),
    ];
    for (says, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &["--volume-size", "200KiB"]);
        // Every volume carries the same index: damage them all alike.
        for v in volumes_in(dir.path()) {
            rewrite_index(&v, damage);
        }
        let first = dir.path().join("app.archpack.001");
        archpack()
            .args(["verify", "--allow-unsigned"])
            .arg(&first)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(says));
        archpack()
            .args(["join", "-o"])
            .arg(dir.path().join("joined"))
            .arg(&first)
            .assert()
            .code(3);
        assert!(!dir.path().join("joined").exists());
    }
}

#[test]
fn compose_reads_one_volume_and_a_volume_on_standard_input_is_refused() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let template = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(template.path(), "services:\n  svc:\n    image: svc:v1.0\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    create(
        dir.path(),
        &[
            "--volume-size",
            "200KiB",
            "--compose",
            template.path().to_str().unwrap(),
        ],
    );
    let vols = volumes_in(dir.path());
    // The index alone answers compose: any one volume, with no siblings.
    let alone = tempfile::tempdir().unwrap();
    let last = alone.path().join(name_of(&vols[vols.len() - 1]));
    std::fs::copy(&vols[vols.len() - 1], &last).unwrap();
    archpack()
        .args(["compose", "--allow-unsigned", "--platform", "linux/arm64"])
        .arg(&last)
        .assert()
        .success()
        .stdout(predicate::str::contains("platform: linux/arm64/v8"))
        .stdout(predicate::str::contains("pull_policy: never"));
    archpack()
        .args([
            "load",
            "--allow-unsigned",
            "--dry-run",
            "--platform",
            "linux/arm64",
            "-",
        ])
        .pipe_stdin(&vols[0])
        .unwrap()
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot be read from a stream"));
}

#[test]
fn a_loader_lies_whole_in_one_volume_and_busybox_tar_takes_it_out() {
    if skip(&[Need::Fixtures, Need::Tool("busybox")]) {
        return;
    }
    let Some(targets) = std::env::var_os("ARCHPACK_TARGETS").map(PathBuf::from) else {
        assert!(
            std::env::var_os("ARCHPACK_TEST_STRICT").is_none(),
            "this test needs the static binaries (ARCHPACK_TARGETS, scripts/build-targets.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Volumes larger than the gzipped loader, smaller than the bundle with it.
    let loader_gz = 5 * 1024 * 1024;
    create(
        dir.path(),
        &[
            "--volume-size",
            &loader_gz.to_string(),
            "--loaders",
            targets.to_str().unwrap(),
            "--loaders-for",
            "linux/arm64",
        ],
    );
    let vols = volumes_in(dir.path());
    let t = table(&vols[0]);
    let member = "archpack-loaders/archpack-linux-arm64.gz";
    let holding: Vec<&Value> = t["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["member"] == member)
        })
        .collect();
    assert_eq!(holding.len(), 1, "the loader is cut: {holding:?}");
    assert_eq!(holding[0]["group"], "shared");
    let volume = dir.path().join(holding[0]["name"].as_str().unwrap());
    let out = std::process::Command::new("busybox")
        .args(["tar", "-xOf"])
        .arg(&volume)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success());
    let binary = {
        use std::io::Read;
        let mut b = Vec::new();
        flate2::read::GzDecoder::new(&out.stdout[..])
            .read_to_end(&mut b)
            .unwrap();
        b
    };
    assert!(binary == std::fs::read(targets.join("archpack-linux-arm64")).unwrap());
}
