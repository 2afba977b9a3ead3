//! Hostile input, faults and crash safety: nothing wrong loaded, nothing half-written,
//! never a panic (exit 101).

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Runs archpack and checks it failed with `code` and a message, never a panic.
fn refused(cmd: &mut assert_cmd::Command, code: i32, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(101), "panic: {stderr}");
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    stderr
}

/// A tar whose first member has the given type, name and (claimed) size.
fn crafted_tar(path: &Path, kind: tar::EntryType, name: &str, claimed: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(claimed);
    h.set_mode(0o644);
    if kind.is_symlink() || kind.is_hard_link() {
        h.set_link_name("/etc/passwd").unwrap();
    }
    // Names the tar crate would refuse are written raw into the header.
    let raw = h.as_old_mut();
    raw.name = [0; 100];
    raw.name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len().div_ceil(512) * 512 + 1024, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn outer_tar_abuse_is_rejected_before_anything_is_used() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, tar::EntryType, &str, u64, &str)> = vec![
        (
            "symlink",
            tar::EntryType::Symlink,
            "archpack-index.json",
            0,
            "not a regular file",
        ),
        (
            "hardlink",
            tar::EntryType::Link,
            "archpack-index.json",
            0,
            "not a regular file",
        ),
        (
            "device node",
            tar::EntryType::Char,
            "archpack-index.json",
            0,
            "not a regular file",
        ),
        (
            "pax header",
            tar::EntryType::XHeader,
            "archpack-index.json",
            4 << 20,
            "not a regular file",
        ),
        (
            "parent path",
            tar::EntryType::Regular,
            "../../archpack-index.json",
            2,
            "not archpack-index.json",
        ),
        (
            "absolute path",
            tar::EntryType::Regular,
            "/etc/archpack-index.json",
            2,
            "not archpack-index.json",
        ),
        (
            "index bomb",
            tar::EntryType::Regular,
            "archpack-index.json",
            1 << 40,
            "limit",
        ),
        (
            "size beyond the file",
            tar::EntryType::Regular,
            "archpack-index.json",
            40 << 20,
            "truncated",
        ),
    ];
    for (what, kind, name, size, needle) in cases {
        let bundle = d.join(format!("{}.archpack", what.replace(' ', "-")));
        crafted_tar(&bundle, kind, name, size, b"{}");
        let code = if needle == "limit" || needle == "truncated" {
            3
        } else {
            1
        };
        refused(
            archpack().args(["verify", "--allow-unsigned"]).arg(&bundle),
            code,
            needle,
        );
        let out = d.join("extracted.tar");
        refused(
            archpack()
                .args([
                    "extract",
                    "--allow-unsigned",
                    "--platform",
                    "linux/amd64",
                    "-o",
                ])
                .arg(&out)
                .arg(&bundle),
            code,
            needle,
        );
        assert!(!out.exists(), "{what}: extract wrote output");
    }
}

fn fresh_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("b.archpack");
    std::fs::remove_file(&bundle).ok();
    archpack()
        .args(["create", "-q", "-o"])
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-amd64.tar").display()
        ))
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-arm64.tar").display()
        ))
        .assert()
        .success();
    bundle
}

fn first_layer(index: &mut Value) -> &mut Value {
    index["members"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["kind"] == "layer")
        .unwrap()
}

#[test]
fn crafted_indexes_are_rejected_and_extract_never_writes_elsewhere() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, i32, &str)> = vec![
        (
            "member name with ..",
            Box::new(|i| first_layer(i)["name"] = "../../../tmp/owned".into()),
            3,
            "should be named",
        ),
        (
            "absolute member name",
            Box::new(|i| first_layer(i)["name"] = "/etc/passwd".into()),
            3,
            "should be named",
        ),
        (
            "duplicate member",
            Box::new(|i| {
                let m = first_layer(i).clone();
                i["members"].as_array_mut().unwrap().insert(0, m);
            }),
            3,
            "overlaps",
        ),
        (
            "size beyond the file",
            Box::new(|i| first_layer(i)["size"] = (1u64 << 40).into()),
            3,
            "truncated",
        ),
        (
            "offset overflow",
            Box::new(|i| first_layer(i)["offset"] = (u64::MAX - 511).into()),
            3,
            "",
        ),
        (
            // Found by tests/fuzz.rs: a renamed key verified but could not be loaded.
            "layer without diffId",
            Box::new(|i| {
                first_layer(i).as_object_mut().unwrap().remove("diffId");
            }),
            3,
            "has no diffId",
        ),
        (
            "config used as a layer",
            Box::new(|i| {
                let config = i["images"][0]["platforms"][0]["config"].clone();
                i["images"][0]["platforms"][0]["layers"][0] = config;
            }),
            3,
            "as a Layer",
        ),
        (
            "unknown major format",
            Box::new(|i| i["format"] = "archpack-bundle/9.0".into()),
            1,
            "newer than this archpack reads",
        ),
        (
            "image pointing at a missing blob",
            Box::new(|i| {
                i["images"][0]["platforms"][0]["config"] =
                    format!("sha256:{}", "a".repeat(64)).into()
            }),
            3,
            "does not hold",
        ),
    ];
    for (what, change, code, needle) in cases {
        let bundle = fresh_bundle(d);
        rewrite_index(&bundle, change);
        refused(
            archpack().args(["verify", "--allow-unsigned"]).arg(&bundle),
            code,
            needle,
        );
        let out = d.join("out/x.tar");
        std::fs::create_dir_all(d.join("out")).unwrap();
        let res = archpack()
            .args([
                "extract",
                "--allow-unsigned",
                "--platform",
                "linux/amd64",
                "-o",
            ])
            .arg(&out)
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(!res.status.success(), "{what}: extract accepted it");
        assert_ne!(res.status.code(), Some(101));
        assert_eq!(
            std::fs::read_dir(d.join("out")).unwrap().count(),
            0,
            "{what}"
        );
        assert!(!Path::new("/tmp/owned").exists());
    }
}

#[test]
fn a_layer_that_decompresses_past_its_declared_size_is_stopped() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fresh_bundle(dir.path());
    rewrite_index(&bundle, |i| {
        // Claim far fewer bytes than the layer holds: reading must stop there.
        let l = first_layer(i);
        l["uncompressedSize"] = 4096.into();
    });
    let out = dir.path().join("x.tar");
    refused(
        archpack()
            .args([
                "extract",
                "--allow-unsigned",
                "--platform",
                "linux/amd64",
                "-o",
            ])
            .arg(&out)
            .arg(&bundle),
        3,
        "decompresses to more than its declared 4096 bytes",
    );
    assert!(!out.exists());
}

#[test]
fn oversized_compose_files_are_refused_before_parsing() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let huge = d.join("huge.yaml");
    let mut text = String::from("services:\n  svc:\n    image: svc:v1.0\n");
    while text.len() <= 1 << 20 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&huge, &text).unwrap();
    refused(
        archpack()
            .args(["create", "-q", "-o"])
            .arg(d.join("b.archpack"))
            .arg("--compose")
            .arg(&huge)
            .arg(format!(
                "docker-archive:{}",
                fixtures().join("svc-amd64.tar").display()
            )),
        1,
        "over the 1 MiB limit",
    );
}

#[test]
fn disk_full_during_create_is_a_clear_error_and_leaves_nothing() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    let out = small.join("b.archpack");
    let res = archpack()
        .args(["create", "-q", "-o"])
        .arg(&out)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-amd64.tar").display()
        ))
        .output()
        .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    let _ = std::process::Command::new("umount").arg(&small).status();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn an_engine_killed_mid_load_fails_clearly_and_a_rerun_completes() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    // A 160 MiB layer keeps the upload going long enough to kill the engine under it.
    let big = incompressible(160 << 20, 0x2545f4914f6cdd1d);
    let archive = dir.path().join("big.tar");
    write_docker_archive(
        &archive,
        SyntheticImage {
            tag: "big:1",
            architecture: Some(native_arch()),
            layers: vec![layer_tar(&[("blob", &big)]), layer_tar(&[("small", b"x")])],
            diff_ids: None,
        },
    );
    drop(big);
    let bundle = dir.path().join("big.archpack");
    archpack()
        .args(["create", "-q", "--level", "1", "-o"])
        .arg(&bundle)
        .arg(format!("docker-archive:{}", archive.display()))
        .assert()
        .success();

    let child = engine.spawn_load(&bundle);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let pid = std::fs::read_to_string(engine.dir.path().join("dockerd.pid")).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "load survived a killed engine");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.contains("engine"), "{stderr}");

    // Restart the same engine (same data root) and run the load again.
    let restarted = std::process::Command::new(script("engine.sh"))
        .arg("start")
        .arg(engine.dir.path())
        .output()
        .unwrap();
    assert!(restarted.status.success());
    engine
        .archpack()
        .args(["load", "-q", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .success();
    let ids = image_ids(&bundle);
    assert_eq!(
        engine.inspect("big:1", "{{.Id}}").as_deref(),
        Some(ids[0].2.as_str())
    );
    let listed = engine.docker(&["images", "-aq", "--no-trunc"]);
    let unique: std::collections::HashSet<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(unique.len(), 1, "duplicated images: {unique:?}");
    let _ = predicate::always();
}

#[test]
fn truncation_anywhere_is_called_truncated_and_loads_nothing() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fresh_bundle(dir.path());
    let bytes = std::fs::read(&bundle).unwrap();
    let len = bytes.len();
    // 16 cut points: inside the first header, the index, its end, every kind of member.
    let mut cuts: Vec<usize> = vec![100, 600, 2048];
    let index = bundle_index(&bundle);
    for m in index["members"].as_array().unwrap().iter().take(6) {
        let off = m["offset"].as_u64().unwrap() as usize;
        cuts.push(off - 300);
        cuts.push(off + m["size"].as_u64().unwrap() as usize / 2);
    }
    cuts.extend([len * 2 / 3, len - 1030, len - 5]);
    cuts.sort();
    cuts.dedup();
    cuts.truncate(16);
    assert_eq!(cuts.len(), 16);
    let cut_file = dir.path().join("cut.archpack");
    for cut in cuts {
        std::fs::write(&cut_file, &bytes[..cut]).unwrap();
        let verify = archpack()
            .args(["verify", "--allow-unsigned"])
            .arg(&cut_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&verify.stderr);
        // The end-of-archive blocks are never read: a cut there is not an error.
        if cut >= len - 1024 {
            continue;
        }
        assert_eq!(verify.status.code(), Some(3), "cut at {cut}: {stderr}");
        assert!(stderr.contains("truncated"), "cut at {cut}: {stderr}");
        let load = engine
            .archpack()
            .args(["load", "--allow-unsigned"])
            .arg(&cut_file)
            .output()
            .unwrap();
        assert!(!load.status.success(), "cut at {cut}: load succeeded");
        assert_ne!(load.status.code(), Some(101));
        assert!(
            engine.tags().is_empty(),
            "cut at {cut}: tagged {:?}",
            engine.tags()
        );
    }
}

/// A bundle whose config names a diff_id its layer does not have (a consistent lie in
/// index and config, as a buggy creator could write): `load` leaves that hash to the
/// engine, which must refuse it; nothing is tagged and the exit code says integrity.
#[test]
fn a_layer_unlike_its_configs_diff_id_is_refused_by_the_engine() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    // The base layer (imported when a load is split into steps) and the top one (in a
    // load request: the engine's own check).
    for k in [0, 2] {
        refuse_a_layer_unlike_its_diff_id(k);
    }
}

fn refuse_a_layer_unlike_its_diff_id(k: usize) {
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fresh_bundle(dir.path());
    let index = bundle_index(&bundle);
    let entry = index["images"][0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"]["architecture"] == "amd64")
        .unwrap()
        .clone();
    let old_config = entry["config"].as_str().unwrap().to_string();
    let member = |digest: &str| {
        index["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["digest"] == digest)
            .unwrap()
            .clone()
    };
    let config_member = member(&old_config);
    let layer_digest = entry["layers"][k].as_str().unwrap().to_string();
    let true_diff_id = member(&layer_digest)["diffId"]
        .as_str()
        .unwrap()
        .to_string();
    // The same length, one hex digit changed: offsets and sizes stay as they are.
    let last = true_diff_id.chars().last().unwrap();
    let fake_diff_id = format!(
        "{}{}",
        &true_diff_id[..true_diff_id.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let mut bytes = std::fs::read(&bundle).unwrap();
    let (offset, size) = (
        config_member["offset"].as_u64().unwrap() as usize,
        config_member["size"].as_u64().unwrap() as usize,
    );
    let config = String::from_utf8(bytes[offset..offset + size].to_vec()).unwrap();
    assert!(config.contains(&true_diff_id));
    let config = config.replace(&true_diff_id, &fake_diff_id);
    bytes[offset..offset + size].copy_from_slice(config.as_bytes());
    std::fs::write(&bundle, &bytes).unwrap();
    let new_config = format!("sha256:{}", sha256_hex(config.as_bytes()));
    rewrite_index(&bundle, |i| {
        for m in i["members"].as_array_mut().unwrap() {
            if m["digest"] == old_config.as_str() {
                m["digest"] = new_config.clone().into();
                m["name"] = format!("blobs/sha256/{}", &new_config[7..]).into();
            }
            if m["digest"] == layer_digest.as_str() {
                m["diffId"] = fake_diff_id.clone().into();
            }
        }
        for image in i["images"].as_array_mut().unwrap() {
            for p in image["platforms"].as_array_mut().unwrap() {
                if p["config"] == old_config.as_str() {
                    p["config"] = new_config.clone().into();
                }
            }
        }
    });
    let stderr = refused(
        engine
            .archpack()
            .args([
                "load",
                "-q",
                "--allow-unsigned",
                "--platform",
                "linux/amd64",
            ])
            .arg(&bundle),
        3,
        "diff",
    );
    // The engine's own check (a load's words), or what the engine computed on an import:
    // not one archpack made earlier.
    let words = if k == 0 {
        "the engine registered it as"
    } else {
        "invalid diffID"
    };
    assert!(stderr.contains(words), "layer {k}: {stderr}");
    assert!(stderr.contains(&fake_diff_id), "{stderr}");
    // `verify` hashes every layer itself.
    refused(
        archpack().args(["verify", "--allow-unsigned"]).arg(&bundle),
        3,
        "decompresses to diff_id",
    );
    assert!(
        engine.tags().iter().all(|t| !t.starts_with("svc")),
        "tagged after a refused load: {:?}",
        engine.tags()
    );
    assert!(engine.images().is_empty(), "left: {:?}", engine.images());
}

#[test]
fn a_member_claiming_more_than_its_kind_allows_is_refused_the_same_from_a_file_and_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        "config",
        "manifest",
        "image-index",
        "oci-layout",
        "oci-index",
    ] {
        let bundle = synthetic_bundle(dir.path());
        // Moved past everything else, as the last member, so that only its claimed size
        // is wrong: a stream has no file length to catch it.
        rewrite_index(&bundle, |index| {
            let members = index["members"].as_array_mut().unwrap();
            let at = members.iter().position(|m| m["kind"] == kind).unwrap();
            let mut member = members.remove(at);
            let last = members.last().unwrap();
            let end = last["offset"].as_u64().unwrap() + last["size"].as_u64().unwrap();
            member["offset"] = (end.div_ceil(512) * 512 + 512).into();
            member["size"] = (1u64 << 50).into();
            members.push(member);
        });
        let out = dir.path().join("out.tar");
        let from_file = refused(
            archpack()
                .args([
                    "extract",
                    "--allow-unsigned",
                    "--platform",
                    "linux/amd64",
                    "-o",
                ])
                .arg(&out)
                .arg(&bundle),
            3,
            "over the",
        );
        let piped = refused(
            archpack()
                .args([
                    "extract",
                    "-",
                    "--allow-unsigned",
                    "--platform",
                    "linux/amd64",
                    "-o",
                ])
                .arg(&out)
                .pipe_stdin(&bundle)
                .unwrap(),
            3,
            "over the",
        );
        assert!(from_file.contains(kind), "{kind}: {from_file}");
        assert!(piped.contains(kind), "{kind}: {piped}");
        assert!(!out.exists());
        refused(
            archpack().args(["verify", "--allow-unsigned"]).arg(&bundle),
            3,
            "over the",
        );
    }
}

/// `--image` names that are not in the bundle are refused by name, by every command
/// that takes them, before anything is contacted.
#[test]
fn an_image_the_bundle_lacks_is_named_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path());
    let out = dir.path().join("x.tar");
    for args in [
        vec![
            "push",
            "--allow-unsigned",
            "--insecure",
            "127.0.0.1:9",
            "--image",
            "TYPO",
        ],
        vec![
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/amd64",
            "--image",
            "TYPO",
            "-o",
        ],
        vec![
            "load",
            "--allow-unsigned",
            "--platform",
            "linux/amd64",
            "--image",
            "TYPO",
        ],
    ] {
        let mut cmd = archpack();
        cmd.args(&args[..1]);
        if args[0] == "extract" {
            cmd.args(&args[1..]).arg(&out).arg(&bundle);
        } else {
            cmd.arg(&bundle).args(&args[1..]);
        }
        let stderr = refused(&mut cmd, 1, "no image named \"TYPO\"");
        assert!(stderr.contains("app:1"), "{}: {stderr}", args[0]);
    }
    assert!(!out.exists());
}

/// A config member that is not an image config (a manifest in its slot: what archpack
/// once stored from a containerd-store engine) verifies by digest but cannot load; it is
/// an integrity failure for `verify`, `extract` and `load` alike.
#[test]
fn a_manifest_in_a_configs_slot_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path());
    let index = bundle_index(&bundle);
    let config = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "config")
        .unwrap()
        .clone();
    let size = config["size"].as_u64().unwrap() as usize;
    let mut fake = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec();
    assert!(fake.len() <= size);
    fake.resize(size, b' ');
    let old = config["digest"].as_str().unwrap().to_string();
    let new = format!("sha256:{}", sha256_hex(&fake));
    let offset = config["offset"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[offset..offset + size].copy_from_slice(&fake);
    let mut header = tar::Header::new_ustar();
    header
        .set_path(format!("blobs/sha256/{}", &new[7..]))
        .unwrap();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    bytes[offset - 512..offset].copy_from_slice(header.as_bytes());
    std::fs::write(&bundle, bytes).unwrap();
    rewrite_index(&bundle, |index| {
        for m in index["members"].as_array_mut().unwrap() {
            if m["digest"] == old.as_str() {
                m["digest"] = new.clone().into();
                m["name"] = format!("blobs/sha256/{}", &new[7..]).into();
            }
        }
        for image in index["images"].as_array_mut().unwrap() {
            for p in image["platforms"].as_array_mut().unwrap() {
                if p["config"] == old.as_str() {
                    p["config"] = new.clone().into();
                }
            }
        }
    });
    let platform = "linux/amd64";
    refused(
        archpack().args(["verify", "--allow-unsigned"]).arg(&bundle),
        3,
        "not an image config",
    );
    let out = dir.path().join("x.tar");
    let arch = if index["images"][0]["platforms"][0]["config"] == old.as_str() {
        platform
    } else {
        "linux/arm64"
    };
    refused(
        archpack()
            .args(["extract", "--allow-unsigned", "--platform", arch, "-o"])
            .arg(&out)
            .arg(&bundle),
        3,
        "rootfs",
    );
    assert!(!out.exists());
}

/// `archpack inspect | head`: a reader that went away is not a panic (exit 101).
#[test]
fn a_closed_standard_output_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path());
    for args in [&["inspect"][..], &["inspect", "--json"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("archpack"))
            .args(args)
            .arg(&bundle)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
