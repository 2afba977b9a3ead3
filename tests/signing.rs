//! Signing and trust: minisign interop both ways (the real `minisign` CLI), the tamper
//! matrix, trust sources, and password handling.

mod common;

use common::*;
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

struct Keys {
    _dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    password: PathBuf,
}

/// An archpack key pair protected by a password in a file.
fn archpack_keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "correct horse\n").unwrap();
    archpack()
        .args(["keygen", "-o"])
        .arg(dir.path().join("release"))
        .arg("--password-file")
        .arg(&password)
        .assert()
        .success()
        .stdout(predicate::str::contains("release.key"));
    Keys {
        key: dir.path().join("release.key"),
        public: dir.path().join("release.pub"),
        password,
        _dir: dir,
    }
}

fn signed_bundle(dir: &Path, keys: &Keys) -> PathBuf {
    let bundle = dir.join("app.archpack");
    archpack()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["create", "-q", "--sign"])
        .arg(&keys.key)
        .arg("--password-file")
        .arg(&keys.password)
        .arg("-o")
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-amd64.tar").display()
        ))
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-arm64.tar.gz").display()
        ))
        .assert()
        .success()
        .stdout(predicate::str::contains("signed"));
    bundle
}

fn verify(bundle: &Path, public: &Path) -> assert_cmd::assert::Assert {
    archpack()
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .arg("verify")
        .arg("--trust")
        .arg(public)
        .arg(bundle)
        .assert()
}

#[test]
fn archpack_signatures_verify_with_the_minisign_cli() {
    if skip(&[Need::Fixtures, Need::Tool("minisign")]) {
        return;
    }
    let keys = archpack_keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = signed_bundle(dir.path(), &keys);
    verify(&bundle, &keys.public)
        .success()
        .stdout(predicate::str::contains("signed by key"));

    // The recipe from the README, with tools nobody here wrote.
    let status = Std::new("tar")
        .current_dir(dir.path())
        .args([
            "-xf",
            "app.archpack",
            "archpack-index.json",
            "archpack-index.json.minisig",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let out = Std::new("minisign")
        .current_dir(dir.path())
        .args(["-Vm", "archpack-index.json", "-p"])
        .arg(&keys.public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Signature and comment signature verified"),
        "{said}"
    );
    assert!(said.contains("file:app"), "{said}");
    assert!(said.contains("created:2023-11-14T22:13:20Z"), "{said}");

    // And minisign notices a modified index.
    let index = dir.path().join("archpack-index.json");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&index, bytes).unwrap();
    let out = Std::new("minisign")
        .current_dir(dir.path())
        .args(["-Vm", "archpack-index.json", "-p"])
        .arg(&keys.public)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn keys_made_by_the_minisign_cli_sign_bundles() {
    if skip(&[Need::Fixtures, Need::Tool("minisign")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Unencrypted (-W) and password-protected keys.
    let status = Std::new("minisign")
        .current_dir(dir.path())
        .args(["-G", "-W", "-p", "plain.pub", "-s", "plain.key"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Std::new("minisign")
        .current_dir(dir.path())
        .args(["-G", "-p", "pw.pub", "-s", "pw.key"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"open sesame\nopen sesame\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    for (key, password) in [("plain", None), ("pw", Some("open sesame"))] {
        let bundle = dir.path().join(format!("{key}.archpack"));
        let mut cmd = archpack();
        if let Some(p) = password {
            cmd.env("ARCHPACK_PASSWORD", p);
        }
        cmd.args(["create", "-q", "--sign"])
            .arg(dir.path().join(format!("{key}.key")))
            .arg("-o")
            .arg(&bundle)
            .arg(format!(
                "docker-archive:{}",
                fixtures().join("other-arm64.tar").display()
            ))
            .assert()
            .success();
        verify(&bundle, &dir.path().join(format!("{key}.pub"))).success();
    }

    // A wrong password is refused with nothing written.
    let bundle = dir.path().join("wrong.archpack");
    archpack()
        .env("ARCHPACK_PASSWORD", "nope")
        .args(["create", "-q", "--sign"])
        .arg(dir.path().join("pw.key"))
        .arg("-o")
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("other-arm64.tar").display()
        ))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("wrong password"));
    assert!(!bundle.exists());
    // No password at all, and no terminal to ask on.
    archpack()
        .args(["create", "-q", "--sign"])
        .arg(dir.path().join("pw.key"))
        .arg("-o")
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("other-arm64.tar").display()
        ))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("password-protected"));
}

/// Offset of the named member's data, and its size, from the bundle index.
fn member(bundle: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> (String, usize, usize) {
    let index = bundle_index(bundle);
    let m = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| pick(m))
        .expect("member")
        .clone();
    (
        m["name"].as_str().unwrap().to_string(),
        m["offset"].as_u64().unwrap() as usize,
        m["size"].as_u64().unwrap() as usize,
    )
}

#[test]
fn tamper_matrix_every_region_is_refused_and_named() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let keys = archpack_keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = signed_bundle(dir.path(), &keys);
    let original = std::fs::read(&bundle).unwrap();
    let index = bundle_index(&bundle);
    let arch_of_layer = |digest: &str| -> Vec<String> {
        index["images"][0]["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["layers"].as_array().unwrap().iter().any(|l| l == digest))
            .map(|p| p["platform"]["architecture"].as_str().unwrap().to_string())
            .collect()
    };
    let shared = member(&bundle, |m| {
        m["kind"] == "layer" && arch_of_layer(m["digest"].as_str().unwrap()).len() == 2
    });
    let only = member(&bundle, |m| {
        m["kind"] == "layer" && arch_of_layer(m["digest"].as_str().unwrap()).len() == 1
    });
    let config = member(&bundle, |m| m["kind"] == "config");
    let manifest = member(&bundle, |m| m["kind"] == "manifest");
    let signature_at = {
        // The signature member follows the index's padded data.
        let index_size = std::fs::read(&bundle).unwrap()[124..135].to_vec();
        let size =
            usize::from_str_radix(std::str::from_utf8(&index_size).unwrap().trim(), 8).unwrap();
        512 + size.div_ceil(512) * 512 + 512
    };

    let cases: Vec<(&str, usize, i32, String)> = vec![
        ("index", 600, 4, "archpack-index.json".into()),
        (
            "signature",
            signature_at + 120,
            4,
            "archpack-index.json.minisig".into(),
        ),
        ("config", config.1 + config.2 / 2, 3, config.0.clone()),
        (
            "manifest",
            manifest.1 + manifest.2 / 2,
            3,
            manifest.0.clone(),
        ),
        ("shared layer", shared.1 + shared.2 / 2, 3, shared.0.clone()),
        (
            "platform-only layer",
            only.1 + only.2 / 2,
            3,
            only.0.clone(),
        ),
        ("layer tar header", only.1 - 512 + 10, 3, only.0.clone()),
    ];
    for (what, offset, code, named) in cases {
        let mut bytes = original.clone();
        bytes[offset] ^= 0x04;
        std::fs::write(&bundle, &bytes).unwrap();
        verify(&bundle, &keys.public)
            .code(code)
            .stderr(predicate::str::contains(named.as_str()).name(what));
    }

    let mut bytes = original.clone();
    bytes.truncate(original.len() / 2);
    std::fs::write(&bundle, &bytes).unwrap();
    verify(&bundle, &keys.public)
        .code(3)
        .stderr(predicate::str::contains("truncated"));
}

#[test]
fn unsigned_untrusted_and_wrong_keys_are_refused() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let keys = archpack_keys();
    let other = archpack_keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = signed_bundle(dir.path(), &keys);

    // Signed by a key not trusted here: key ID and where keys are looked for.
    let key_id = {
        let out = archpack()
            .args(["inspect", "--json"])
            .arg(&bundle)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["signer"]["trusted"], false);
        v["signer"]["keyId"].as_str().unwrap().to_string()
    };
    verify(&bundle, &other.public)
        .code(4)
        .stderr(predicate::str::contains(&key_id))
        .stderr(predicate::str::contains("not trusted here"))
        .stderr(predicate::str::contains("/etc/archpack/trust.d"));

    // Trusted through $XDG_CONFIG_HOME/archpack/trust.d.
    let config = tempfile::tempdir().unwrap();
    let trust_d = config.path().join("archpack/trust.d");
    std::fs::create_dir_all(&trust_d).unwrap();
    std::fs::copy(&keys.public, trust_d.join("release.pub")).unwrap();
    archpack()
        .env("XDG_CONFIG_HOME", config.path())
        .arg("verify")
        .arg(&bundle)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("signed by key {key_id}")));
    archpack()
        .env("XDG_CONFIG_HOME", config.path())
        .arg("inspect")
        .arg(&bundle)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "Signed:   key {key_id} (trusted here)"
        )));

    // Unsigned: refused unless --allow-unsigned, which warns.
    let unsigned = dir.path().join("unsigned.archpack");
    archpack()
        .args(["create", "-q", "-o"])
        .arg(&unsigned)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-amd64.tar").display()
        ))
        .assert()
        .success();
    verify(&unsigned, &keys.public)
        .code(4)
        .stderr(predicate::str::contains("not signed"))
        .stderr(predicate::str::contains("--allow-unsigned"));
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&unsigned)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: the bundle is NOT signed",
        ));
}

#[test]
fn the_signature_is_judged_before_any_member_is_read() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    // An untrusted bundle with a corrupt layer is refused for trust (4), not for the
    // layer (3): the layer was never looked at.
    let keys = archpack_keys();
    let other = archpack_keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = signed_bundle(dir.path(), &keys);
    let layer = member(&bundle, |m| m["kind"] == "layer");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[layer.1 + 7] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    verify(&bundle, &other.public).code(4);
    verify(&bundle, &keys.public)
        .code(3)
        .stderr(predicate::str::contains(layer.0.as_str()));
}

#[test]
fn keygen_protects_the_secret_key() {
    if skip(&[Need::Tool("minisign")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No password source and no terminal: refuse rather than write an open key.
    archpack()
        .args(["keygen", "-o"])
        .arg(dir.path().join("k"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--no-password"));
    assert!(!dir.path().join("k.key").exists());
    archpack()
        .args(["keygen", "--no-password", "-o"])
        .arg(dir.path().join("k"))
        .assert()
        .success();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("k.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Existing keys are kept without --force.
    archpack()
        .args(["keygen", "--no-password", "-o"])
        .arg(dir.path().join("k"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--force"));
    // The minisign CLI signs with it.
    let data = dir.path().join("data");
    std::fs::write(&data, b"x").unwrap();
    let out = Std::new("minisign")
        .args(["-S", "-s"])
        .arg(dir.path().join("k.key"))
        .arg("-m")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Std::new("minisign")
        .args(["-V", "-p"])
        .arg(dir.path().join("k.pub"))
        .arg("-m")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn signed_bundles_are_reproducible_apart_from_the_signature_bytes() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let keys = archpack_keys();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let x = std::fs::read(signed_bundle(a.path(), &keys)).unwrap();
    let y = std::fs::read(signed_bundle(b.path(), &keys)).unwrap();
    assert_eq!(x.len(), y.len());
    let differing: Vec<usize> = (0..x.len()).filter(|&i| x[i] != y[i]).collect();
    let index = bundle_index(&a.path().join("app.archpack"));
    let first_member = index["members"][0]["offset"].as_u64().unwrap() as usize - 512;
    let index_end = 512 + serde_json::to_vec_pretty(&index).unwrap().len();
    // Only bytes between the index member and the first blob (the signature) differ.
    assert!(!differing.is_empty());
    assert!(
        differing.iter().all(|&i| i > index_end && i < first_member),
        "bytes outside the signature differ: {:?}",
        &differing[..differing.len().min(5)]
    );
}

/// Runs archpack on a pseudo-terminal, typing `answers` (prompt text, answer) in order.
fn on_terminal(answers: &[(&str, &str)], args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Std::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_answer.py"))
        .args(answers.iter().map(|(p, a)| format!("{p}={a}")))
        .arg("--")
        .arg(assert_cmd::cargo::cargo_bin("archpack"))
        .args(args)
        .env_remove("ARCHPACK_PASSWORD")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn passwords_typed_at_a_terminal_are_asked_twice_never_echoed_and_used() {
    if skip(&[Need::Fixtures, Need::Tool("python3")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("typed");
    let prompts = |first: &'static str, second: &'static str| {
        [
            ("Password for the secret key:", first),
            ("The same password again:", second),
        ]
    };
    // Two different answers: refused, nothing written.
    let (code, screen) = on_terminal(
        &prompts("tr0ub4dor", "tr0ub4dor&3"),
        &["keygen".as_ref(), "-o".as_ref(), prefix.as_os_str()],
    );
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("the two passwords differ"), "{screen}");
    assert!(!prefix.with_extension("key").exists());

    let (code, screen) = on_terminal(
        &prompts("tr0ub4dor", "tr0ub4dor"),
        &["keygen".as_ref(), "-o".as_ref(), prefix.as_os_str()],
    );
    assert_eq!(code, 0, "{screen}");
    assert!(
        !screen.contains("tr0ub4dor"),
        "the password was echoed: {screen}"
    );

    // Signing asks once; the wrong password is refused, the right one signs.
    let bundle = dir.path().join("b.archpack");
    let source = format!(
        "docker-archive:{}",
        fixtures().join("svc-amd64.tar").display()
    );
    let create = |password: &'static str| {
        on_terminal(
            &[("Password for the secret key:", password)],
            &[
                "create".as_ref(),
                "-q".as_ref(),
                "--sign".as_ref(),
                prefix.with_extension("key").as_os_str(),
                "-o".as_ref(),
                bundle.as_os_str(),
                source.as_ref(),
            ],
        )
    };
    let (code, screen) = create("wrong");
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains("wrong password for this secret key"),
        "{screen}"
    );
    assert!(!bundle.exists());
    let (code, screen) = create("tr0ub4dor");
    assert_eq!(code, 0, "{screen}");
    verify(&bundle, &prefix.with_extension("pub")).success();
}
