//! `archpack platform` on this machine, with and without the throwaway engine.

mod common;

use common::*;
use predicates::prelude::*;

#[test]
fn the_engine_decides_when_it_is_reachable() {
    if skip(&[Need::SharedEngine]) {
        return;
    }
    let out = archpack_engine()
        .args(["platform", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "engine");
    assert_eq!(v["inputs"]["engine"]["arch"], native_arch());
    assert!(v["platform"]
        .as_str()
        .unwrap()
        .starts_with(&format!("linux/{}", native_arch())));

    archpack_engine()
        .arg("platform")
        .assert()
        .success()
        .stdout(predicate::str::contains("engine (/version Arch)"))
        .stdout(predicate::str::contains("<- decides"))
        .stdout(predicate::str::contains("fallbacks"));
}

#[test]
fn without_an_engine_the_userland_decides_and_says_why_the_engine_was_not_asked() {
    let out = archpack().args(["platform", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "userland");
    assert!(v["inputs"]["engineError"]
        .as_str()
        .unwrap()
        .contains("cannot reach the docker engine"));
}

#[test]
fn bundle_choice_and_override() {
    if skip(&[Need::Fixtures, Need::SharedEngine]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.archpack");
    archpack()
        .args(["create", "-q", "-o"])
        .arg(&bundle)
        .arg(format!(
            "oci-archive:{}",
            fixtures().join("multi.oci.tar").display()
        ))
        .assert()
        .success();
    let out = archpack_engine()
        .args(["platform", "--json", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = if native_arch() == "amd64" {
        "linux/amd64"
    } else {
        "linux/arm64/v8"
    };
    assert_eq!(v["bundlePlatform"], expected);

    archpack()
        .args(["platform", "--platform", "linux/arm64", "--bundle"])
        .arg(&bundle)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "bundle would load        linux/arm64/v8",
        ));
    archpack()
        .args(["platform", "--platform", "linux/arm/v6", "--bundle"])
        .arg(&bundle)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the bundle has only linux/amd64, linux/arm64/v8",
        ));
}
