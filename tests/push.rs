//! `push` into Debian's docker-registry (CNCF distribution) on a loopback port, checked
//! with skopeo and a throwaway engine's `docker pull`.

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Pushes with the gzip digest cache beside the bundle (one per test).
fn push(bundle: &Path, target: &str, extra: &[&str]) -> assert_cmd::assert::Assert {
    push_command(bundle, target, extra).assert()
}

/// `push` as `user` with `password` on standard input.
fn push_as(bundle: &Path, target: &str, user: &str, password: &str) -> assert_cmd::assert::Assert {
    push_command(bundle, target, &["--username", user, "--password-stdin"])
        .write_stdin(format!("{password}\n"))
        .assert()
}

fn push_command(bundle: &Path, target: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut command = archpack();
    command
        .env("DOCKER_CONFIG", "/nonexistent")
        .env("XDG_CACHE_HOME", bundle.with_file_name("cache"))
        .args(["push", "--allow-unsigned", "--insecure", "--json"])
        .args(extra)
        .arg(bundle)
        .arg(target);
    command
}

fn report(a: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_slice(&a.get_output().stdout).unwrap()
}

#[test]
fn pushed_indexes_are_complete_and_pull_to_the_same_image_ids() {
    if skip(&[
        Need::OwnEngine,
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let first = push(&bundle, &registry.addr, &[]).success();
    let first = report(&first);
    assert_eq!(first["images"].as_array().unwrap().len(), 2);
    assert!(first["blobsUploaded"].as_u64().unwrap() > 0);
    // The second repository gets both arches' base layers and the shared app layer
    // linked from the first, not uploaded again (their .conf layers differ).
    assert_eq!(first["blobsMounted"], 3, "{first}");

    for name in ["svc:v1.0", "other:v2"] {
        let index = registry.raw(name, None).expect("index pushed");
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        // Every child the index names is there, with gzip layers and the bundle's config.
        for m in manifests {
            let digest = m["digest"].as_str().unwrap();
            let child = registry
                .raw(
                    &format!("{}@{digest}", name.split(':').next().unwrap()),
                    None,
                )
                .expect("child manifest present");
            for l in child["layers"].as_array().unwrap() {
                assert_eq!(
                    l["mediaType"],
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                );
            }
        }
    }

    // A Docker engine pulls its own architecture, with load's image ID.
    let engine = TestEngine::start();
    let reference = format!("{}/svc:v1.0", registry.addr);
    let pull = engine.docker(&["pull", "-q", &reference]);
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let want = id_for(&image_ids(&bundle), "svc:v1.0", native_arch());
    assert_eq!(
        engine.inspect(&reference, "{{.Id}}").as_deref(),
        Some(want.as_str())
    );

    // Pushing again uploads nothing and, the gzip digests being remembered, compresses
    // nothing either.
    let again = report(&push(&bundle, &registry.addr, &[]).success());
    assert_eq!(again["blobsUploaded"], 0);
    assert_eq!(again["gzipPasses"], 0, "{again}");
    let remembered = std::fs::read_dir(dir.path().join("cache/archpack/gzip-digests"))
        .unwrap()
        .count();
    assert_eq!(
        remembered,
        first["gzipPasses"].as_u64().unwrap() as usize / 2
    );

    // A stale or forged entry is never what gets uploaded: into a fresh registry, every
    // layer is hashed as it is sent, and the indexes name the real blobs.
    for entry in std::fs::read_dir(dir.path().join("cache/archpack/gzip-digests")).unwrap() {
        std::fs::write(
            entry.unwrap().path(),
            format!("sha256:{} 123\n", "0".repeat(64)),
        )
        .unwrap();
    }
    let fresh = Registry::start(None);
    let healed = report(&push(&bundle, &fresh.addr, &[]).success());
    assert_eq!(healed["blobsUploaded"], first["blobsUploaded"], "{healed}");
    let index = fresh.raw("svc:v1.0", None).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        let child = fresh
            .raw(&format!("svc@{}", m["digest"].as_str().unwrap()), None)
            .unwrap();
        for l in child["layers"].as_array().unwrap() {
            assert_ne!(l["digest"], format!("sha256:{}", "0".repeat(64)));
        }
    }
    let again = report(&push(&bundle, &fresh.addr, &[]).success());
    assert_eq!(
        (
            again["blobsUploaded"].as_u64(),
            again["gzipPasses"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again}"
    );
}

#[test]
fn basic_auth_with_good_bad_and_stored_credentials() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let registry = Registry::start(Some(("field", "s3cret")));
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &["--platform", "linux/arm64"]);
    push(&bundle, &registry.addr, &[])
        .code(1)
        .stderr(predicate::str::contains(
            "authentication required or refused",
        ));
    push_as(&bundle, &registry.addr, "field", "wrong")
        .code(1)
        .stderr(predicate::str::contains(
            "authentication required or refused",
        ));
    push_as(
        &bundle,
        &format!("{}/team", registry.addr),
        "field",
        "s3cret",
    )
    .success();
    assert!(registry
        .raw("team/svc:v1.0", Some("field:s3cret"))
        .is_some());

    // What `docker login` stores in config.json is used.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"ZmllbGQ6czNjcmV0"}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    archpack()
        .env("DOCKER_CONFIG", config.path())
        .args(["push", "--allow-unsigned", "--insecure"])
        .arg(&bundle)
        .arg(format!("{}/stored", registry.addr))
        .assert()
        .success();
    assert!(registry
        .raw("stored/other:v2", Some("field:s3cret"))
        .is_some());

    // ... and so is a credential helper it names (`credsStore`), as the docker CLI runs it.
    let helpers = tempfile::tempdir().unwrap();
    let helper = helpers.path().join("docker-credential-site");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = {} ] || {{ echo \"credentials not found in native keychain\"; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"field\",\"Secret\":\"s3cret\"}}'\n",
            registry.addr
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        config.path().join("config.json"),
        r#"{"credsStore":"site"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    archpack()
        .env("DOCKER_CONFIG", config.path())
        .env("PATH", path)
        .args(["push", "--allow-unsigned", "--insecure"])
        .arg(&bundle)
        .arg(format!("{}/helped", registry.addr))
        .assert()
        .success();
    assert!(registry
        .raw("helped/other:v2", Some("field:s3cret"))
        .is_some());
}

#[test]
fn zstd_as_stored_and_a_corrupt_layer_never_gets_a_tag() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    push(
        &bundle,
        &registry.addr,
        &["--layer-format", "zstd", "--image", "svc:v1.0"],
    )
    .success();
    let index = registry.raw("svc:v1.0", None).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let child = registry.raw(&format!("svc@{digest}"), None).unwrap();
    assert_eq!(
        child["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    // Corrupt an arm64-only layer: that platform fails, and other:v2 gets no tag.
    let index = bundle_index(&bundle);
    let arm = index["images"][0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"]["architecture"] == "arm64")
        .unwrap()
        .clone();
    let layer = arm["layers"][0].as_str().unwrap();
    let m = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == layer)
        .unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = (m["offset"].as_u64().unwrap() + m["size"].as_u64().unwrap() / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&bundle, &bytes).unwrap();
    let name = m["name"].as_str().unwrap();
    push(&bundle, &registry.addr, &["--image", "other:v2"])
        .code(3)
        .stderr(predicate::str::contains(name));
    assert!(registry.raw("other:v2", None).is_none(), "a tag was pushed");
}

#[test]
fn https_registries_need_their_ca_and_then_work() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = site_pki(pki.path());
    let registry = Registry::start_with(None, Some((&cert, &key)));
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &["--platform", "linux/amd64"]);
    let https = |extra: &[&str]| {
        archpack()
            .env("DOCKER_CONFIG", "/nonexistent")
            .args(["push", "--allow-unsigned"])
            .args(extra)
            .arg(&bundle)
            .arg(&registry.addr)
            .assert()
    };
    https(&[])
        .code(1)
        .stderr(predicate::str::contains("pass --ca-cert"));
    https(&["--ca-cert", ca.to_str().unwrap()]).success();
    let index = registry.raw("svc:v1.0", None).expect("pushed over HTTPS");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn an_interrupted_push_leaves_no_tag_and_a_rerun_completes_with_what_is_missing() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let native = native_arch();
    let small = dir.path().join("small.tar");
    write_docker_archive(
        &small,
        SyntheticImage {
            tag: "aaa:1",
            architecture: Some(native),
            layers: vec![layer_tar(&[("a", b"small")])],
            diff_ids: None,
        },
    );
    let big = dir.path().join("big.tar");
    let noise = incompressible(160 << 20, 0x51ed270b);
    write_docker_archive(
        &big,
        SyntheticImage {
            tag: "zzz:1",
            architecture: Some(native),
            layers: vec![layer_tar(&[("noise", &noise)])],
            diff_ids: None,
        },
    );
    drop(noise);
    let bundle = dir.path().join("b.archpack");
    archpack()
        .args(["create", "-q", "--level", "1", "-o"])
        .arg(&bundle)
        .arg(format!("docker-archive:{}", small.display()))
        .arg(format!("docker-archive:{}", big.display()))
        .assert()
        .success();

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("archpack"))
        .env("DOCKER_CONFIG", "/nonexistent")
        .args(["push", "-q", "--allow-unsigned", "--insecure"])
        .arg(&bundle)
        .arg(&registry.addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let finished_early = child.try_wait().unwrap().is_some();
    child.kill().ok();
    child.wait().unwrap();
    assert!(
        !finished_early,
        "the push finished before it could be interrupted"
    );
    assert!(
        registry.raw("aaa:1", None).is_some(),
        "the small image was pushed first"
    );
    assert!(
        registry.raw("zzz:1", None).is_none(),
        "an interrupted image got a tag"
    );

    let rerun = push(&bundle, &registry.addr, &[]).success();
    let rerun = report(&rerun);
    // Only the interrupted layer travels again; both configs and the small layer stay.
    assert_eq!(rerun["blobsUploaded"], 1, "{rerun}");
    assert_eq!(rerun["blobsPresent"], 3, "{rerun}");
    assert!(registry.raw("zzz:1", None).is_some());
}

/// A token service (tests/support/token_server.py) for user fleet / t0ken-pass whose
/// tokens live `lifetime` seconds; returns it with its certificate's directory.
fn token_service(lifetime: u32) -> (std::process::Child, tempfile::TempDir, u16) {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("token.key");
    let cert = keys.path().join("token.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=archpack-test-issuer",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success());
    let port = free_port();
    let issuer = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/token_server.py"))
        .arg(port.to_string())
        .arg(&key)
        .arg(&cert)
        .args(["fleet", "t0ken-pass"])
        .arg(lifetime.to_string())
        .arg(keys.path().join("issued.log"))
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{port}"));
    (issuer, keys, port)
}

#[test]
fn token_auth_through_the_registrys_token_service() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let (mut issuer, keys, port) = token_service(600);
    let cert = keys.path().join("token.pem");
    let realm = format!("http://127.0.0.1:{port}/token");
    let registry = Registry::start_full(None, None, Some((&realm, &cert)));
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let with_password = |password: &str| push_as(&bundle, &registry.addr, "fleet", password);
    with_password("wrong")
        .code(1)
        .stderr(predicate::str::contains(
            "authentication required or refused",
        ));
    let pushed = report(&with_password("t0ken-pass").success());
    // Mounts between repositories need pull on the source too: the token asks for it.
    assert_eq!(pushed["blobsMounted"], 3, "{pushed}");
    assert!(registry.raw("svc:v1.0", Some("fleet:t0ken-pass")).is_some());
    let _ = issuer.kill();
    let _ = issuer.wait();
}

/// Tokens that expire during a push are fetched again before they do: a push that
/// outlives several 1-second tokens completes.
#[test]
fn a_push_longer_than_its_tokens_renews_them() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let (mut issuer, keys, port) = token_service(1);
    let cert = keys.path().join("token.pem");
    let realm = format!("http://127.0.0.1:{port}/token");
    let registry = Registry::start_full(None, None, Some((&realm, &cert)));
    let dir = tempfile::tempdir().unwrap();
    let bundle = noise_bundle(dir.path(), "slow:1", 96 << 20, 0x9e3779b97f4a7c15);
    let pushed = push_as(&bundle, &registry.addr, "fleet", "t0ken-pass").success();
    // Otherwise the test proves nothing: the push must have outlived its first token.
    let issued = std::fs::read_to_string(keys.path().join("issued.log")).unwrap();
    assert!(issued.lines().count() >= 2, "tokens issued: {issued}");
    assert_eq!(report(&pushed)["blobsUploaded"], 2);
    assert!(registry.raw("slow:1", Some("fleet:t0ken-pass")).is_some());
    let _ = issuer.kill();
    let _ = issuer.wait();
}

/// A registry that dies mid-upload: the push fails promptly and says where, rather
/// than waiting forever on its compressor (a full pipe nobody reads any more).
#[test]
fn a_registry_gone_mid_upload_fails_the_push_promptly() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
        Need::Tool("python3"),
        Need::Tool("openssl"),
        Need::Tool("htpasswd"),
    ]) {
        return;
    }
    let mut registry = Registry::start(None);
    let dir = tempfile::tempdir().unwrap();
    let bundle = noise_bundle(dir.path(), "gone:1", 160 << 20, 0x2545f4914f6cdd1d);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("archpack"))
        .env("DOCKER_CONFIG", "/nonexistent")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args(["push", "-q", "--allow-unsigned", "--insecure"])
        .arg(&bundle)
        .arg(&registry.addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    registry.child.kill().unwrap();
    registry.child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("the push still hung 30 s after the registry died");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&registry.addr), "{stderr}");
}

#[test]
fn a_push_from_volumes_needs_every_one_and_pushes_what_the_single_file_does() {
    if skip(&[
        Need::Fixtures,
        Need::Tool("docker-registry"),
        Need::Tool("skopeo"),
    ]) {
        return;
    }
    let registry = Registry::start(None);
    let single_dir = tempfile::tempdir().unwrap();
    let single = fixture_bundle(single_dir.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    // The set, by its name (app.archpack itself is not written).
    let set = fixture_bundle(dir.path(), &["--volume-size", "300KiB"]);
    assert!(!set.exists());
    let kept_apart = tempfile::tempdir().unwrap();
    let moved = kept_apart.path().join("app.archpack.002");
    std::fs::rename(dir.path().join("app.archpack.002"), &moved).unwrap();
    push(&set, &format!("{}/volumes", registry.addr), &[])
        .code(1)
        .stderr(predicate::str::contains("app.archpack.002: missing"));
    assert!(registry.raw("volumes/svc:v1.0", None).is_none());
    push(
        &set,
        &format!("{}/volumes", registry.addr),
        &["--volume", moved.to_str().unwrap()],
    )
    .success();
    push(&single, &format!("{}/single", registry.addr), &[]).success();
    for image in ["svc:v1.0", "other:v2"] {
        let from_volumes = registry.raw(&format!("volumes/{image}"), None).unwrap();
        let from_single = registry.raw(&format!("single/{image}"), None).unwrap();
        assert_eq!(from_volumes, from_single);
        assert_eq!(from_volumes["manifests"].as_array().unwrap().len(), 2);
    }
}
