//! The engines users run today, each a real daemon of the test's own: Docker 20.10
//! (bookworm), Docker 28.5 with the classic store and with the containerd image store,
//! podman 5.8 (the last three from Debian sid in a chroot, scripts/sid-chroot.sh), and
//! containerd 2.1 fed by `extract --format oci-archive` (k3s's path).
//!
//! Each engine gets the load suite: an empty engine, a re-load, `--platform linux/arm64`,
//! both platforms of a bundle with shared parts, an interrupted load and its re-run, a
//! corrupt layer refused with nothing tagged, and compose `--up` where containers can
//! run. Then a cross check: a bundle created from each engine, loaded into each, gives
//! the same images.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `load --json` into `engine`; the report.
fn load(engine: &TestEngine, bundle: &Path, extra: &[&str]) -> Value {
    let out = engine
        .archpack()
        .args(["load", "--json", "-q", "--allow-unsigned"])
        .args(extra)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: load failed: {}",
        engine.kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every image of a load report is in the engine, under every tag, as the engine's own
/// identity for it, with the platform's architecture.
fn assert_loaded(engine: &TestEngine, report: &Value, arch: &str) {
    for image in report["images"].as_array().unwrap() {
        let expected = engine.kind.id_of(
            image["imageId"].as_str().unwrap(),
            image["manifestDigest"].as_str().unwrap(),
        );
        assert_eq!(image["engineId"], expected, "{}", engine.kind.name());
        for tag in image["tags"].as_array().unwrap() {
            let tag = tag.as_str().unwrap();
            let found = engine.inspect(tag, "{{.Id}} {{.Architecture}}");
            assert_eq!(
                found.as_deref(),
                Some(format!("{expected} {arch}").as_str()),
                "{}: {tag}",
                engine.kind.name()
            );
        }
    }
}

fn engines_needed() -> bool {
    skip(&[Need::Fixtures, Need::OwnEngine, Need::SidEngines])
}

fn load_suite(kind: EngineKind) {
    let engine = TestEngine::start_kind(kind, "");
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);

    // An empty engine: every image of this host's platform, nothing else.
    let first = load(&engine, &bundle, &[]);
    assert!(
        first["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "loaded"),
        "{first}"
    );
    assert_eq!(first["images"].as_array().unwrap().len(), 2);
    assert_loaded(&engine, &first, native_arch());

    // A re-load sends nothing.
    let again = load(&engine, &bundle, &[]);
    assert_eq!(again["archiveBytesSent"], 0, "{}: {again}", kind.name());
    assert!(again["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "already present"));

    // Another platform on request.
    let arm = load(&engine, &bundle, &["--platform", "linux/arm64"]);
    assert_eq!(arm["platform"], "linux/arm64/v8");
    assert_loaded(&engine, &arm, "arm64");

    // Shared parts (format 2.2): the arm64 layer is read partly from the amd64 one's
    // frames; each platform loads whole, as the engine's own identity.
    let parts = shared_parts_bundle(dir.path());
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let report = load(&engine, &parts, &["--platform", platform]);
        assert_loaded(&engine, &report, arch);
    }

    // An interrupted load, then its re-run.
    let big = noise_bundle(dir.path(), "big:1", 96 << 20, 7);
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("archpack"))
        .env("DOCKER_HOST", &engine.host)
        .args(["load", "-q", "--allow-unsigned"])
        .arg(&big)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let rerun = load(&engine, &big, &[]);
    assert_loaded(&engine, &rerun, native_arch());

    // Images diverging above a shared base: on the classic store the base is imported
    // and the tops go side by side (the other stores take whole images in one request),
    // each under its bundle identity, with nothing of the steps left behind.
    let (diverging, _) = diverging_bundle(dir.path());
    let report = load(&engine, &diverging, &[]);
    let classic = matches!(kind, EngineKind::Docker20 | EngineKind::Docker28);
    assert_eq!(
        report["engineRequests"],
        if classic { 4 } else { 1 },
        "{}: {report}",
        kind.name()
    );
    assert_loaded(&engine, &report, native_arch());
    let dangling = engine.docker(&["images", "-q", "--filter", "dangling=true"]);
    assert!(
        !classic || String::from_utf8_lossy(&dangling.stdout).trim().is_empty(),
        "{}: left {}",
        kind.name(),
        String::from_utf8_lossy(&dangling.stdout)
    );

    // A corrupt layer of the chosen platform: refused, nothing tagged.
    let corrupt = dir.path().join("corrupt.archpack");
    std::fs::copy(noise_bundle(dir.path(), "bad:1", 4 << 20, 9), &corrupt).unwrap();
    flip_a_layer_byte(&corrupt);
    let out = engine
        .archpack()
        .args(["load", "--allow-unsigned"])
        .arg(&corrupt)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}: {}",
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        engine.inspect("bad:1", "{{.Id}}").is_none(),
        "{}",
        kind.name()
    );
}

/// Flips one byte in the middle of the bundle's (only) layer.
fn flip_a_layer_byte(bundle: &Path) {
    let index = bundle_index(bundle);
    let layer = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "layer")
        .unwrap()
        .clone();
    let at = layer["offset"].as_u64().unwrap() + layer["size"].as_u64().unwrap() / 2;
    let mut bytes = std::fs::read(bundle).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(bundle, bytes).unwrap();
}

#[test]
fn docker_28_classic_store_load_suite() {
    if engines_needed() {
        return;
    }
    load_suite(EngineKind::Docker28);
}

#[test]
fn docker_28_containerd_store_load_suite() {
    if engines_needed() {
        return;
    }
    load_suite(EngineKind::Docker28Containerd);
}

#[test]
fn podman_5_load_suite() {
    if engines_needed() {
        return;
    }
    load_suite(EngineKind::Podman5);
}

#[test]
fn docker_20_load_suite() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    load_suite(EngineKind::Docker20);
}

/// On the containerd store the layers go as stored: the image there is the bundle's
/// manifest, byte for byte, as a registry pull would give, and it runs.
#[test]
fn the_containerd_store_keeps_the_bundles_manifest_and_runs_it() {
    if engines_needed() {
        return;
    }
    let engine = TestEngine::start_kind(EngineKind::Docker28Containerd, "");
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let report = load(&engine, &bundle, &[]);
    assert!(report["fullUploads"]
        .as_str()
        .unwrap()
        .contains("as stored"));
    let svc = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "svc:v1.0")
        .unwrap();
    assert_eq!(
        engine.inspect("svc:v1.0", "{{.Id}}").as_deref(),
        svc["manifestDigest"].as_str()
    );
    let run = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "svc:v1.0",
        "/bin/sh",
        "-c",
        "uname -m; cat /etc/app/svc.conf",
    ]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.contains("service=svc"), "{out}");
}

/// A bundle created from each engine holds the same images (config digests), and each
/// engine takes each bundle as the same images.
#[test]
fn create_from_each_engine_and_load_into_each_other() {
    if engines_needed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = fixture_bundle(dir.path(), &[]);
    let expected = image_ids(&reference);
    let mut bundles: Vec<(EngineKind, PathBuf)> = Vec::new();
    for kind in EngineKind::ALL {
        let engine = TestEngine::start_kind(kind, "");
        // The images the way a build host has them: `docker load` of the archives.
        for f in ["svc-amd64", "svc-arm64", "other-amd64", "other-arm64"] {
            let out = engine.docker(&[
                "load",
                "-q",
                "-i",
                fixtures().join(format!("{f}.tar")).to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}: {}",
                kind.name(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bundle = dir.path().join(format!("from-{}.archpack", kind.name()));
        engine
            .archpack()
            .args(["create", "-q", "-o"])
            .arg(&bundle)
            .args([
                "svc:v1.0-amd64",
                "svc:v1.0-arm64",
                "other:v2-amd64",
                "other:v2-arm64",
            ])
            .assert()
            .success();
        assert_eq!(image_ids(&bundle), expected, "created from {}", kind.name());
        archpack()
            .args(["verify", "--allow-unsigned"])
            .arg(&bundle)
            .assert()
            .success();
        bundles.push((kind, bundle));
    }
    for target in EngineKind::ALL {
        let engine = TestEngine::start_kind(target, "");
        for (i, (from, bundle)) in bundles.iter().enumerate() {
            let report = load(&engine, bundle, &[]);
            let status = if i == 0 { "loaded" } else { "already present" };
            for image in report["images"].as_array().unwrap() {
                assert_eq!(
                    image["status"],
                    status,
                    "{} ← {}: {report}",
                    target.name(),
                    from.name()
                );
            }
            assert_loaded(&engine, &report, native_arch());
        }
    }
}

/// The archive `extract --format oci-archive` writes loads with `docker load` on Docker 28
/// (either store: it carries `manifest.json` beside `index.json`), and has no `null`s.
#[test]
fn extracted_oci_archives_load_into_docker_28_on_either_store() {
    if engines_needed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let archive = dir.path().join("app.oci.tar");
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--format",
            "oci-archive",
            "--platform",
            "linux/amd64",
            "-o",
        ])
        .arg(&archive)
        .arg(&bundle)
        .assert()
        .success();
    let index = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&index.stdout);
    assert!(!text.contains("null"), "{text}");
    let ids = image_ids(&bundle);
    for kind in [EngineKind::Docker28, EngineKind::Docker28Containerd] {
        let engine = TestEngine::start_kind(kind, "");
        let out = engine.docker(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            kind.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let config = id_for(&ids, "svc:v1.0", "amd64");
        let found = engine.inspect("svc:v1.0", "{{.Id}}").unwrap();
        if kind == EngineKind::Docker28 {
            assert_eq!(found, config);
        }
        let arch = engine.inspect("svc:v1.0", "{{.Architecture}}").unwrap();
        assert_eq!(arch, "amd64");
    }
}

/// containerd 2.1 alone, as k3s runs it: `ctr -n k8s.io images import` of the OCI archive
/// gives a complete image of the right platform.
#[test]
fn containerd_2_imports_the_oci_archive_whole() {
    if engines_needed() {
        return;
    }
    std::fs::create_dir_all("/tmp/apsid").unwrap();
    let dir = tempfile::Builder::new()
        .prefix("ctrd-")
        .tempdir_in("/tmp/apsid")
        .unwrap();
    let containerd = Containerd::start(dir.path());
    let ctr = |args: &[&str]| containerd.ctr(args);
    let bundle = fixture_bundle(dir.path(), &[]);
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let archive = dir.path().join(format!("{arch}.oci.tar"));
        archpack()
            .args([
                "extract",
                "--allow-unsigned",
                "--format",
                "oci-archive",
                "--platform",
                platform,
                "-o",
            ])
            .arg(&archive)
            .arg(&bundle)
            .assert()
            .success();
        let out = ctr(&[
            "images",
            "import",
            "--platform",
            platform,
            archive.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = ctr(&["images", "check"]);
        let check = String::from_utf8_lossy(&out.stdout);
        let line = check
            .lines()
            .find(|l| l.starts_with("docker.io/library/svc:v1.0"))
            .unwrap_or_else(|| panic!("svc:v1.0 not imported: {check}"));
        assert!(line.contains("complete"), "{line}");
        let ls = ctr(&["images", "ls"]);
        let ls = String::from_utf8_lossy(&ls.stdout);
        assert!(
            ls.lines()
                .any(|l| l.contains("svc:v1.0") && l.contains(&format!("linux/{arch}"))),
            "{ls}"
        );
        let out = ctr(&[
            "images",
            "rm",
            "docker.io/library/svc:v1.0",
            "docker.io/library/other:v2",
        ]);
        assert!(out.status.success());
    }
}

/// `load --compose-out --up` on the engines where containers run here: the services come
/// up healthy on the images just loaded. (Podman 5 loads, tags and re-loads above, but
/// its crun cannot start containers in this sandbox — "cgroups in hybrid mode not
/// supported" — so there is nothing to bring up there.)
#[test]
fn compose_up_reaches_healthy_on_docker_28_either_store() {
    if skip(&[
        Need::Fixtures,
        Need::OwnEngine,
        Need::SidEngines,
        Need::Tool("docker-compose"),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("compose.yaml");
    std::fs::write(
        &template,
        "services:
  svc:
    image: svc:v1.0
    network_mode: none
    healthcheck:
      test: [CMD, wget, -q, -O-, http://127.0.0.1:8080/health]
      interval: 1s
      retries: 30
",
    )
    .unwrap();
    let bundle = fixture_bundle(dir.path(), &["--compose", template.to_str().unwrap()]);
    for kind in [EngineKind::Docker28, EngineKind::Docker28Containerd] {
        assert!(kind.runs_containers());
        let engine = TestEngine::start_kind(kind, "");
        let out_file = dir.path().join(format!("{}.compose.yaml", kind.name()));
        let report = load(
            &engine,
            &bundle,
            &[
                "--up",
                "--up-timeout",
                "120",
                "--compose-out",
                out_file.to_str().unwrap(),
            ],
        );
        assert_eq!(
            report["services"][0]["health"],
            "healthy",
            "{}: {report}",
            kind.name()
        );
        let _ = std::process::Command::new("docker-compose")
            .env("DOCKER_HOST", &engine.host)
            .arg("-f")
            .arg(&out_file)
            .args(["-p", "app", "down", "-t", "1"])
            .output();
    }
    assert!(!EngineKind::Podman5.runs_containers());
}
