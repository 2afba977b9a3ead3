//! `load` and `extract` against real throwaway engines (one per test, so "empty",
//! "already present" and "nothing tagged" are exact).

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

fn load_json(engine: &TestEngine, bundle: &Path, extra: &[&str]) -> Value {
    let out = engine
        .archpack()
        .args(["load", "--allow-unsigned", "--json"])
        .args(extra)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn load_on_an_empty_engine_then_reload_sends_nothing() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);

    let v = load_json(&engine, &bundle, &[]);
    assert_eq!(v["decidedBy"], "engine");
    assert_eq!(
        statuses(&v),
        [
            ("other:v2".to_string(), "loaded".to_string()),
            ("svc:v1.0".to_string(), "loaded".to_string())
        ]
    );
    for (name, tag) in [
        ("svc:v1.0", "svc:v1.0-amd64"),
        ("other:v2", "other:v2-amd64"),
    ] {
        let want = id_for(&ids, name, native_arch());
        assert_eq!(
            engine.inspect(name, "{{.Id}}").as_deref(),
            Some(want.as_str())
        );
        assert_eq!(
            engine.inspect(name, "{{.Architecture}}").as_deref(),
            Some(native_arch())
        );
        if native_arch() == "amd64" {
            assert_eq!(
                engine.inspect(tag, "{{.Id}}").as_deref(),
                Some(want.as_str())
            );
        }
    }
    // The loaded image runs.
    let run = engine.docker(&[
        "run",
        "--rm",
        "--net",
        "none",
        "svc:v1.0",
        "cat",
        "/etc/app/svc.conf",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "service=svc");

    let again = load_json(&engine, &bundle, &[]);
    assert_eq!(again["archiveBytesSent"], 0);
    assert!(statuses(&again).iter().all(|(_, s)| s == "already present"));

    // Someone moved one tag to another image and removed another: a reload sends
    // nothing and puts both back on the bundle's image.
    // (Untagging first: removing an image's last tag would delete it.)
    let removed = engine.docker(&["rmi", "svc:v1.0-amd64"]);
    assert!(removed.status.success() || native_arch() != "amd64");
    let moved = engine.docker(&["tag", "other:v2", "svc:v1.0"]);
    assert!(moved.status.success());
    let restored = load_json(&engine, &bundle, &[]);
    assert_eq!(restored["archiveBytesSent"], 0);
    let want = id_for(&ids, "svc:v1.0", native_arch());
    assert_eq!(
        engine.inspect("svc:v1.0", "{{.Id}}").as_deref(),
        Some(want.as_str())
    );
    if native_arch() == "amd64" {
        assert_eq!(
            engine.inspect("svc:v1.0-amd64", "{{.Id}}").as_deref(),
            Some(want.as_str())
        );
    }
}

#[test]
fn a_partial_earlier_load_is_completed_with_only_the_missing_layers() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let first = load_json(&engine, &bundle, &["--image", "svc:v1.0"]);
    assert_eq!(statuses(&first), [("svc:v1.0".into(), "loaded".into())]);
    let second = load_json(&engine, &bundle, &[]);
    assert_eq!(
        statuses(&second),
        [
            ("other:v2".to_string(), "loaded".to_string()),
            ("svc:v1.0".to_string(), "already present".to_string())
        ]
    );
    // other shares its base and app layers with svc: only its own layer travels.
    assert_eq!(second["layersPresent"], 2);
    assert_eq!(second["layersToSend"], 1);
    assert!(engine.inspect("other:v2", "{{.Id}}").is_some());
}

#[test]
fn two_loads_of_the_same_bundle_at_once_both_end_correct() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("archpack"))
            .env("DOCKER_HOST", &engine.host)
            .args(["load", "-q", "--allow-unsigned"])
            .arg(&bundle)
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let ids = image_ids(&bundle);
    for name in ["svc:v1.0", "other:v2"] {
        let want = id_for(&ids, name, native_arch());
        assert_eq!(
            engine.inspect(name, "{{.Id}}").as_deref(),
            Some(want.as_str())
        );
    }
    // Nothing duplicated: one image per config.
    let out = engine.docker(&["images", "-q", "--no-trunc"]);
    let mut unique: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 2);
}

#[test]
fn platform_override_loads_arm64_on_this_host_and_reads_only_its_bytes() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let v = load_json(&engine, &bundle, &["--platform", "linux/arm64"]);
    assert_eq!(v["platform"], "linux/arm64/v8");
    assert_eq!(
        engine.inspect("svc:v1.0", "{{.Architecture}}").as_deref(),
        Some("arm64")
    );
    assert_eq!(
        engine.inspect("other:v2", "{{.Architecture}}").as_deref(),
        Some("arm64")
    );
    assert_eq!(
        engine.inspect("svc:v1.0-arm64", "{{.Id}}"),
        engine.inspect("svc:v1.0", "{{.Id}}")
    );

    // Bytes read ≤ 1.01 × (front region + the chosen platform's blobs).
    let index = bundle_index(&bundle);
    let mut needed: std::collections::HashSet<&str> = Default::default();
    for image in index["images"].as_array().unwrap() {
        for p in image["platforms"].as_array().unwrap() {
            if p["platform"]["architecture"] == "arm64" {
                needed.insert(p["config"].as_str().unwrap());
                for l in p["layers"].as_array().unwrap() {
                    needed.insert(l.as_str().unwrap());
                }
            }
        }
    }
    let members = index["members"].as_array().unwrap();
    let blob_bytes: u64 = members
        .iter()
        .filter(|m| needed.contains(m["digest"].as_str().unwrap()))
        .map(|m| m["size"].as_u64().unwrap())
        .sum();
    let front = members[0]["offset"].as_u64().unwrap() - 512;
    let read = v["bundleBytesRead"].as_u64().unwrap();
    assert!(
        read as f64 <= 1.01 * (front + blob_bytes) as f64,
        "read {read} bytes for {front} + {blob_bytes} needed"
    );
    let total = std::fs::metadata(&bundle).unwrap().len();
    assert!(read < total * 3 / 4, "read {read} of {total}");
}

#[test]
fn a_bundle_without_the_host_platform_is_refused_with_nothing_loaded() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &["--platform", "linux/s390x,linux/arm64"]);
    if native_arch() != "amd64" {
        return;
    }
    engine
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("this host runs linux/amd64"))
        .stderr(predicate::str::contains(
            "the bundle has only linux/arm64/v8",
        ));
    assert!(engine.tags().is_empty());
}

/// Flips a byte in the middle of the first layer member whose platform matches.
fn corrupt_layer_of(bundle: &Path, arch: &str) -> String {
    let index = bundle_index(bundle);
    let mut only_this: Vec<&str> = Vec::new();
    let platforms: Vec<&Value> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["platforms"].as_array().unwrap())
        .collect();
    for p in &platforms {
        if p["platform"]["architecture"] != arch {
            continue;
        }
        for l in p["layers"].as_array().unwrap() {
            let l = l.as_str().unwrap();
            let elsewhere = platforms.iter().any(|q| {
                q["platform"]["architecture"] != arch
                    && q["layers"].as_array().unwrap().iter().any(|x| x == l)
            });
            if !elsewhere {
                only_this.push(l);
            }
        }
    }
    let m = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| only_this.contains(&m["digest"].as_str().unwrap()))
        .unwrap();
    flip_middle_byte(bundle, m);
    m["name"].as_str().unwrap().to_string()
}

/// Flips a byte in the middle of the index member `m`.
fn flip_middle_byte(bundle: &Path, m: &Value) {
    let at = (m["offset"].as_u64().unwrap() + m["size"].as_u64().unwrap() / 2) as usize;
    let mut bytes = std::fs::read(bundle).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(bundle, bytes).unwrap();
}

#[test]
fn a_corrupt_layer_of_the_chosen_platform_is_refused_and_nothing_is_tagged() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let name = corrupt_layer_of(&bundle, native_arch());
    engine
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(name.as_str()))
        .stderr(predicate::str::contains("nothing was loaded"));
    assert!(engine.tags().is_empty(), "tagged: {:?}", engine.tags());
    assert!(engine.images().is_empty(), "left: {:?}", engine.images());
}

#[test]
fn a_corrupt_layer_of_another_platform_is_never_read_but_verify_catches_it() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let other = if native_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let name = corrupt_layer_of(&bundle, other);
    let v = load_json(&engine, &bundle, &[]);
    assert!(statuses(&v).iter().all(|(_, s)| s == "loaded"));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(name.as_str()));
}

#[test]
fn a_stopped_engine_is_a_clear_error() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    engine.stop();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    engine
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot reach the docker engine"));
}

#[test]
fn extracted_archives_load_into_docker_and_read_in_skopeo() {
    if skip(&[
        Need::Tool("skopeo"),
        Need::Tool("ctr"),
        Need::Fixtures,
        Need::OwnEngine,
    ]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let docker_tar = dir.path().join("app-arm64.tar");
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/arm64",
            "--format",
            "docker-archive",
            "-o",
        ])
        .arg(&docker_tar)
        .arg(&bundle)
        .assert()
        .success();
    let out = engine.docker(&["load", "-i", docker_tar.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["svc:v1.0", "other:v2"] {
        let want = id_for(&ids, name, "arm64");
        assert_eq!(
            engine.inspect(name, "{{.Id}}").as_deref(),
            Some(want.as_str())
        );
    }

    let oci_tar = dir.path().join("app-arm64.oci.tar");
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/arm64",
            "--format",
            "oci-archive",
            "--image",
            "svc:v1.0",
            "-o",
        ])
        .arg(&oci_tar)
        .arg(&bundle)
        .assert()
        .success();
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--override-arch", "arm64"])
        .arg(format!("oci-archive:{}:svc:v1.0", oci_tar.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);

    // containerd (the one the throwaway dockerd runs) imports and unpacks it.
    let sock = engine.dir.path().join("exec/containerd/containerd.sock");
    let ctr = |args: &[&str]| {
        std::process::Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(["-n", "archpack-test"])
            .args(args)
            .output()
            .unwrap()
    };
    let import = ctr(&[
        "images",
        "import",
        "--platform",
        "linux/arm64",
        oci_tar.to_str().unwrap(),
    ]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let check = String::from_utf8_lossy(&ctr(&["images", "check"]).stdout).to_string();
    assert!(
        check.contains("docker.io/library/svc:v1.0")
            && check.contains("complete")
            && check.contains("true"),
        "{check}"
    );

    // An existing output is kept without --force.
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/arm64",
            "-o",
        ])
        .arg(&oci_tar)
        .arg(&bundle)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--force"));
}

#[test]
fn load_reads_a_bundle_from_stdin_and_refuses_a_truncated_stream() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let out = engine
        .archpack()
        .args([
            "load",
            "--allow-unsigned",
            "--json",
            "--platform",
            "linux/arm64",
            "-",
        ])
        .pipe_stdin(&bundle)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        engine.inspect("svc:v1.0", "{{.Architecture}}").as_deref(),
        Some("arm64")
    );

    let other = TestEngine::start();
    let bytes = std::fs::read(&bundle).unwrap();
    other
        .archpack()
        .args(["load", "--allow-unsigned", "-"])
        .write_stdin(bytes[..bytes.len() * 2 / 3].to_vec())
        .assert()
        .code(3)
        .stderr(predicate::str::contains("truncated"));
    assert!(other.tags().is_empty());
}

/// A bundle carrying a name no engine takes (written by hand, or by an older archpack) is
/// refused before a byte is sent: nothing loaded, nothing tagged.
#[test]
fn a_bundle_with_a_bad_name_is_refused_before_anything_is_sent() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    for bad in ["Bad:Tag", "app:1:2", "app:"] {
        let bundle = synthetic_bundle(dir.path());
        rewrite_index(&bundle, |index| {
            index["images"][0]["platforms"][0]["sourceTags"] = serde_json::json!([bad]);
            index["images"][0]["platforms"][1]["sourceTags"] = serde_json::json!([bad]);
        });
        let out = engine
            .archpack()
            .args(["load", "--allow-unsigned"])
            .arg(&bundle)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {stderr}");
        assert!(
            stderr.contains("not a valid image reference"),
            "{bad}: {stderr}"
        );
        assert!(engine.images().is_empty(), "{bad}: something was loaded");
    }
}

#[test]
fn images_that_diverge_above_a_shared_base_go_as_concurrent_requests() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let (bundle, _) = diverging_bundle(dir.path());
    let v = load_json(&engine, &bundle, &[]);
    // The base is imported; the three tops go side by side once it is in.
    assert_eq!(v["engineRequests"], 4, "{v}");
    assert_eq!(v["concurrentRequests"], 4, "{v}");
    let ids = image_ids(&bundle);
    for name in ["lean:v1", "heavy:v1", "middle:v1"] {
        assert_eq!(
            engine.inspect(name, "{{.Id}}"),
            Some(id_for(&ids, name, native_arch())),
            "{name}"
        );
    }
    // Untagged requests, tagged at the end: no image is left without a name.
    let dangling = engine.docker(&["images", "-q", "--filter", "dangling=true"]);
    assert!(String::from_utf8_lossy(&dangling.stdout).trim().is_empty());
    let all = engine.docker(&["images", "-q", "--no-trunc"]);
    assert_eq!(String::from_utf8_lossy(&all.stdout).lines().count(), 3);

    // The text report says how it went; a reload sends nothing.
    let again = engine
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("sent 0 B"));
    let engine2 = TestEngine::start();
    let text = engine2
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("as 4 requests, up to 4 at once"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

#[test]
fn a_corrupt_layer_in_a_later_request_takes_out_what_earlier_requests_loaded() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (clean, tops) = diverging_bundle(dir.path());
    let index = bundle_index(&clean);
    let members = index["members"].as_array().unwrap();
    // The middle image's own layer (its request waits for the base), then the base
    // (imported while the tops upload: they must stop, and say why not).
    let middle = members.iter().find(|m| m["diffId"] == tops[2].as_str());
    let base = members
        .iter()
        .find(|m| m["diffId"].is_string() && !tops.iter().any(|t| m["diffId"] == t.as_str()));
    for member in [middle.unwrap(), base.unwrap()] {
        let engine = TestEngine::start();
        let bundle = dir.path().join("corrupt.archpack");
        std::fs::copy(&clean, &bundle).unwrap();
        flip_middle_byte(&bundle, member);
        engine
            .archpack()
            .args(["load", "--allow-unsigned"])
            .arg(&bundle)
            .assert()
            .code(3)
            .stderr(predicate::str::contains(member["name"].as_str().unwrap()))
            .stderr(predicate::str::contains("nothing was loaded"))
            .stderr(predicate::str::contains("another of its requests failed").not());
        assert!(engine.tags().is_empty(), "tagged: {:?}", engine.tags());
        assert!(engine.images().is_empty(), "left: {:?}", engine.images());
    }
}

/// SIGINT while a load goes in steps: what its finished steps put in (the imported base)
/// is taken out again before the process exits; the step under way was never complete.
#[test]
fn an_interrupted_load_in_steps_takes_out_what_it_had_put_in() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = layer_tar(&[("base/data", &incompressible(300 << 10, 1))]);
    let top = layer_tar(&[("top/data", &incompressible(160 << 20, 2))]);
    let source = image_source(
        dir.path(),
        "slow",
        json!({"architecture": native_arch(), "os": "linux"}),
        &[base, top],
    );
    let bundle = dir.path().join("slow.archpack");
    create_bundle(&bundle, &[&source]);
    let engine = TestEngine::start();
    let child = engine.spawn_load(&bundle);
    // The base is in (an image) while the top's 160 MiB still upload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.images().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the base never came in"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("were taken out again"), "{stderr}");
    assert!(engine.images().is_empty(), "left: {:?}", engine.images());
    // The re-run loads it whole.
    let v = load_json(&engine, &bundle, &[]);
    assert_eq!(v["engineRequests"], 2, "{v}");
    assert!(engine.inspect("slow:v1", "{{.Id}}").is_some());
}

/// An image whose layers the engine all has (the same layers, another config) goes as a
/// config alone, also when other images of the load go in steps beside it.
#[test]
fn an_image_whose_layers_are_all_in_sends_only_its_config() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = layer_tar(&[("base/data", &incompressible(4 << 20, 11))]);
    let top = layer_tar(&[("top/data", &incompressible(4 << 20, 12))]);
    let other = layer_tar(&[("other/data", &incompressible(1 << 20, 13))]);
    let image = |name: &str, cmd: &str, layers: &[Vec<u8>]| {
        let config =
            json!({"architecture": native_arch(), "os": "linux", "config": {"Cmd": [cmd]}});
        image_source(dir.path(), name, config, layers)
    };
    let one = image("one", "/bin/sh", &[base.clone(), top.clone()]);
    let two = image("two", "/bin/true", &[base.clone(), top]);
    let three = image("three", "/bin/sh", &[base, other.clone()]);
    let bundle = |name: &str, sources: &[&str]| {
        let path = dir.path().join(name);
        create_bundle(&path, sources);
        path
    };
    let first = bundle("first.archpack", &[&one]);
    let second = bundle("second.archpack", &[&one, &two, &three]);
    let engine = TestEngine::start();
    load_json(&engine, &first, &[]);
    let v = load_json(&engine, &second, &[]);
    assert_eq!(v["engineRequests"], 2, "{v}");
    assert_eq!(v["layersToSend"], 1, "{v}");
    // The other layer and two small configs: not the 8 MiB two shares with one.
    let sent = v["archiveBytesSent"].as_u64().unwrap();
    assert!(
        sent < other.len() as u64 + (64 << 10),
        "{sent} bytes sent: {v}"
    );
    let ids = image_ids(&second);
    for name in ["one:v1", "two:v1", "three:v1"] {
        assert_eq!(
            engine.inspect(name, "{{.Id}}"),
            Some(id_for(&ids, name, native_arch())),
            "{name}"
        );
    }
}
