//! Compose: the generated file means what `docker compose -f template -f override
//! config` means (checked with the real compose v2 binary), plus pinning, errors, and
//! `load --up` reaching healthy on a throwaway engine.

mod common;

use common::*;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

/// A two-arch synthetic image `app:1-{amd64,arm64}` (logical `app:1`), as archives.
fn app_sources(dir: &Path) -> Vec<String> {
    ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let path = dir.join(format!("app-{arch}.tar"));
            write_docker_archive(
                &path,
                SyntheticImage {
                    tag: &format!("app:1-{arch}"),
                    architecture: Some(arch),
                    layers: vec![layer_tar(&[("app", arch.as_bytes())])],
                    diff_ids: None,
                },
            );
            format!("docker-archive:{}", path.display())
        })
        .collect()
}

fn compose_config(dir: &Path, files: &[&Path]) -> Value {
    let mut cmd = Std::new("docker-compose");
    cmd.current_dir(dir);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.args(["config", "--format", "json"]).output().unwrap();
    assert!(
        out.status.success(),
        "compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CASES: &[(&str, &str, &str)] = &[
    (
        "environment and labels, lists and maps; command and entrypoint replaced",
        "services:
  web:
    image: app:1-amd64
    command: [serve, --threads, '8']
    entrypoint: /bin/sh
    environment: [THREADS=8, MODE=full, EMPTY]
    labels:
      tier: front
      owner: ops
",
        "services:
  web:
    command: [serve, --threads, '2']
    entrypoint: [/bin/ash, -c]
    environment:
      THREADS: '2'
      ARM: 'yes'
    labels: [tier=edge, site=ship]
",
    ),
    (
        "ports and volumes: short and long syntax, volumes merged by target",
        "services:
  web:
    image: app:1
    ports: ['8080:8080', '127.0.0.1:9000:9000/udp']
    volumes:
      - data:/data
      - /etc/app:/etc/app:ro
      - type: tmpfs
        target: /cache
    tmpfs: [/run]
volumes:
  data: {}
",
        "services:
  web:
    ports:
      - target: 9443
        published: '9443'
        protocol: tcp
    volumes:
      - fast:/data
      - type: bind
        source: /srv/cache
        target: /cache
    tmpfs: [/tmp]
volumes:
  fast:
    driver: local
",
    ),
    (
        "deploy.resources, healthcheck, profiles, depends_on",
        "services:
  web:
    image: app:1
    deploy:
      resources:
        limits: {cpus: '4', memory: 2G}
        reservations: {memory: 1G}
    healthcheck:
      test: [CMD, wget, -q, -O-, http://127.0.0.1:8080/health]
      interval: 10s
      start_period: 20s
    profiles: [prod]
  worker:
    image: app:1-arm64
    depends_on: [web]
    profiles: [prod]
",
        "services:
  web:
    deploy:
      resources:
        limits: {memory: 512M}
    healthcheck:
      test: [CMD-SHELL, 'wget -q -O- http://127.0.0.1:8080/health || exit 1']
      start_period: 90s
  worker:
    depends_on:
      web:
        condition: service_healthy
",
    ),
];

#[test]
fn generated_files_mean_what_compose_merges_mean() {
    if skip(&[Need::Fixtures, Need::Tool("docker-compose")]) {
        return;
    }
    for (what, template, arm) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t = write(d, "compose.yaml", template);
        let o = write(d, "compose.arm64.yaml", arm);
        let bundle = d.join("app.archpack");
        archpack()
            .args(["create", "-q", "-o"])
            .arg(&bundle)
            .arg("--compose")
            .arg(&t)
            .arg("--compose-override")
            .arg(format!("linux/arm64={}", o.display()))
            .args(app_sources(d))
            .assert()
            .success();
        for (platform, files) in [
            ("linux/arm64/v8", vec![t.as_path(), o.as_path()]),
            ("linux/amd64", vec![t.as_path()]),
        ] {
            let generated = d.join("generated.yaml");
            archpack()
                .args([
                    "compose",
                    "--allow-unsigned",
                    "--force",
                    "--platform",
                    platform,
                    "-o",
                ])
                .arg(&generated)
                .arg(&bundle)
                .assert()
                .success();
            let mut expected = compose_config(d, &files);
            for svc in expected["services"].as_object_mut().unwrap().values_mut() {
                svc["image"] = "app:1".into();
                svc["platform"] = platform.into();
                svc["pull_policy"] = "never".into();
            }
            let actual = compose_config(d, &[generated.as_path()]);
            assert_eq!(actual, expected, "{what} ({platform})");
            let text = std::fs::read_to_string(&generated).unwrap();
            assert!(text.starts_with("# Generated by archpack"), "{text}");
            assert!(text.contains(&format!("for {platform}")), "{text}");
        }
    }
}

#[test]
fn templates_are_checked_at_create() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "services:\n  db:\n    image: postgres:16\n",
            "image \"postgres:16\" is not in the bundle",
        ),
        ("services: [oops\n", "not valid YAML"),
        ("- just\n- a list\n", "top level is not a mapping"),
        (
            "services:\n  web:\n    build: .\n",
            "nothing can be built on the target",
        ),
    ];
    for (template, needle) in cases {
        let t = write(d, "bad.yaml", template);
        let out = d.join("x.archpack");
        archpack()
            .args(["create", "-q", "-o"])
            .arg(&out)
            .arg("--compose")
            .arg(&t)
            .args(app_sources(d))
            .assert()
            .code(1)
            .stderr(predicate::str::contains(needle));
        assert!(!out.exists());
    }
    let t = write(d, "ok.yaml", "services:\n  web:\n    image: app:1\n");
    let o = write(d, "s390x.yaml", "services: {}\n");
    archpack()
        .args(["create", "-q", "-o"])
        .arg(d.join("y.archpack"))
        .arg("--compose")
        .arg(&t)
        .arg("--compose-override")
        .arg(format!("linux/s390x={}", o.display()))
        .args(app_sources(d))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no image for that platform"));
}

#[test]
fn load_writes_the_file_and_up_reaches_healthy() {
    if skip(&[
        Need::Fixtures,
        Need::OwnEngine,
        Need::Tool("docker-compose"),
    ]) {
        return;
    }
    let engine = TestEngine::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = write(
        d,
        "compose.yaml",
        "services:
  svc:
    image: svc:v1.0
    network_mode: none
    environment: [THREADS=8]
    healthcheck:
      test: [CMD, wget, -q, -O-, http://127.0.0.1:8080/health]
      interval: 1s
      retries: 30
",
    );
    let bundle = fixture_bundle(d, &["--compose", t.to_str().unwrap()]);
    let out_file = d.join("run/compose.yaml");
    std::fs::create_dir_all(d.join("run")).unwrap();
    engine
        .archpack()
        .args([
            "load",
            "--allow-unsigned",
            "--up",
            "--up-timeout",
            "120",
            "--compose-out",
        ])
        .arg(&out_file)
        .arg(&bundle)
        .assert()
        .success()
        .stdout(predicate::str::contains("healthy"));
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("pull_policy: never"));
    let ps = engine.docker(&["ps", "--format", "{{.Image}} {{.Status}}"]);
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("svc:v1.0") && ps.contains("healthy"), "{ps}");

    // --json --up: the report alone on stdout, the services in it.
    let out = engine
        .archpack()
        .args([
            "load",
            "--json",
            "--allow-unsigned",
            "--up",
            "--up-timeout",
            "120",
            "--force",
            "--compose-out",
        ])
        .arg(&out_file)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["services"][0]["service"], "svc");
    assert_eq!(report["services"][0]["health"], "healthy");
    assert_eq!(report["images"][0]["status"], "already present");

    // An existing compose file is not replaced without --force, before any load.
    engine
        .archpack()
        .args(["load", "--allow-unsigned", "--compose-out"])
        .arg(&out_file)
        .arg(&bundle)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--force"));
    let _ = engine.docker(&[
        "rm",
        "-f",
        "-v",
        ps.split_whitespace().next().unwrap_or("x"),
    ]);
    let cleanup = Std::new("docker-compose")
        .env("DOCKER_HOST", &engine.host)
        .arg("-f")
        .arg(&out_file)
        .args(["-p", "app", "down", "-t", "1"])
        .output();
    drop(cleanup);
}
