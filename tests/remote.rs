//! Engines the docker CLI reaches and so must archpack: behind TLS (`DOCKER_TLS_VERIFY`,
//! `DOCKER_CERT_PATH`, `tcp://` and `https://`), over `ssh://` (through `ssh … docker
//! system dial-stdio`), and through the current docker context when DOCKER_HOST is
//! unset. Real engines, a real sshd, certificates made with openssl.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Std::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// `dockerd --tlsverify` and `docker --tlsverify` use them.
fn engine_pki(dir: &Path) {
    openssl(dir, &["genrsa", "-out", "ca-key.pem", "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-days",
            "2",
            "-key",
            "ca-key.pem",
            "-subj",
            "/CN=archpack-test-ca",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        openssl(dir, &["genrsa", "-out", &format!("{who}-key.pem"), "2048"]);
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{who}-key.pem"),
                "-subj",
                &format!("/CN={who}"),
                "-out",
                &format!("{who}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}.pem"),
            ],
        );
    }
    // What the docker CLI reads from DOCKER_CERT_PATH.
    let client = dir.join("client");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::copy(dir.join("ca.pem"), client.join("ca.pem")).unwrap();
    std::fs::copy(dir.join("client.pem"), client.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("client-key.pem"), client.join("key.pem")).unwrap();
}

/// A one-layer native image bundle, small.
fn small_bundle(dir: &Path, tag: &str) -> PathBuf {
    let archive = dir.join("small.tar");
    write_docker_archive(
        &archive,
        SyntheticImage {
            tag,
            architecture: Some(native_arch()),
            layers: vec![layer_tar(&[("hello", b"hello\n")])],
            diff_ids: None,
        },
    );
    let bundle = dir.join("small.archpack");
    archpack()
        .args(["create", "-q", "--force", "-o"])
        .arg(&bundle)
        .arg(format!("docker-archive:{}", archive.display()))
        .assert()
        .success();
    bundle
}

#[test]
fn an_engine_behind_tls_is_reached_with_the_docker_clis_environment() {
    if skip(&[Need::OwnEngine, Need::Tool("openssl")]) {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    engine_pki(pki.path());
    let port = free_port();
    let p = pki.path().display();
    let engine = TestEngine::start_with(&format!(
        "--tlsverify --tlscacert {p}/ca.pem --tlscert {p}/server.pem --tlskey {p}/server-key.pem -H tcp://127.0.0.1:{port}"
    ));
    let dir = tempfile::tempdir().unwrap();
    let bundle = small_bundle(dir.path(), "tls-app:1");
    let certs = pki.path().join("client");
    let over_tls = |host: &str, verify: bool| {
        let mut c = archpack();
        c.env("DOCKER_HOST", host).env("DOCKER_CERT_PATH", &certs);
        if verify {
            c.env("DOCKER_TLS_VERIFY", "1");
        } else {
            c.env_remove("DOCKER_TLS_VERIFY");
        }
        c
    };
    let tcp = format!("tcp://127.0.0.1:{port}");
    over_tls(&tcp, true)
        .args(["load", "-q", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .success();
    assert!(engine.inspect("tls-app:1", "{{.Id}}").is_some());
    let out = over_tls(&format!("https://127.0.0.1:{port}"), false)
        .args(["platform", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "engine", "{v}");

    // Plain HTTP to a TLS engine: said so, with what to set.
    let out = over_tls(&tcp, false)
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DOCKER_TLS_VERIFY"), "{stderr}");
    assert!(!stderr.contains("is the engine running"), "{stderr}");

    // A CA that did not sign the engine's certificate is refused, and says TLS.
    let other = tempfile::tempdir().unwrap();
    engine_pki(other.path());
    let out = archpack()
        .env("DOCKER_HOST", &tcp)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", other.path().join("client"))
        .args(["platform", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(v["decidedBy"], "engine", "{v}");
    let why = v["inputs"]["engineError"].as_str().unwrap_or_default();
    assert!(why.contains("TLS") || why.contains("certificate"), "{why}");
}

/// An sshd of the test's own on loopback, and an `ssh` on PATH that uses its key and
/// config (the user's own ssh configuration is never touched).
struct Sshd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (key, file) in [("host", "host_key"), ("user", "id_ed25519")] {
            let out = Std::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(file))
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\nPidFile {0}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {}/id_ed25519\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
                d.display()
            ),
        )
        .unwrap();
        let real_ssh = Std::new("sh")
            .args(["-c", "command -v ssh"])
            .output()
            .unwrap();
        let real_ssh = String::from_utf8_lossy(&real_ssh.stdout).trim().to_string();
        let bin = d.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(
            bin.join("ssh"),
            format!(
                "#!/bin/sh\nexec {real_ssh} -F {}/ssh_config \"$@\"\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            bin.join("ssh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Std::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(&format!("127.0.0.1:{port}"));
        Sshd { dir, child, port }
    }

    /// PATH with the wrapping `ssh` first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_engine_over_ssh_is_reached_through_docker_system_dial_stdio() {
    if skip(&[
        Need::OwnEngine,
        Need::Tool("ssh"),
        Need::Tool("ssh-keygen"),
        Need::Tool("docker"),
    ]) {
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            std::env::var_os("ARCHPACK_TEST_STRICT").is_none(),
            "this test needs /usr/sbin/sshd"
        );
        return;
    }
    let engine = TestEngine::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = small_bundle(dir.path(), "ssh-app:1");
    let socket = engine.host.trim_start_matches("unix://").to_string();
    let host = format!("ssh://root@127.0.0.1:{}{socket}", sshd.port);
    archpack()
        .env("DOCKER_HOST", &host)
        .env("PATH", sshd.path())
        .args(["load", "-q", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .success();
    assert!(engine.inspect("ssh-app:1", "{{.Id}}").is_some());
    let out = archpack()
        .env("DOCKER_HOST", &host)
        .env("PATH", sshd.path())
        .args(["platform", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "engine", "{v}");

    // A key the server no longer accepts: ssh's own words come through.
    std::fs::remove_file(sshd.dir.path().join("authorized_keys")).unwrap();
    let out = archpack()
        .env("DOCKER_HOST", &host)
        .env("PATH", sshd.path())
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn the_current_docker_context_is_used_when_docker_host_is_unset() {
    if skip(&[Need::OwnEngine]) {
        return;
    }
    use sha2::Digest as _;
    let engine = TestEngine::start();
    let config = tempfile::tempdir().unwrap();
    let id = hex::encode(sha2::Sha256::digest(b"lab"));
    let meta = config.path().join("contexts/meta").join(id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(
            r#"{{"Name":"lab","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{}","SkipTLSVerify":false}}}}}}"#,
            engine.host
        ),
    )
    .unwrap();
    std::fs::write(
        config.path().join("config.json"),
        r#"{"currentContext":"lab"}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = small_bundle(dir.path(), "ctx-app:1");
    archpack()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", config.path())
        .args(["load", "-q", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .success();
    assert!(engine.inspect("ctx-app:1", "{{.Id}}").is_some());
    // DOCKER_CONTEXT names it too, and a context that does not exist is named.
    std::fs::write(config.path().join("config.json"), "{}").unwrap();
    let out = archpack()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", config.path())
        .env("DOCKER_CONTEXT", "lab")
        .args(["platform", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "engine", "{v}");
    let out = archpack()
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", config.path())
        .env("DOCKER_CONTEXT", "gone")
        .args(["load", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("docker context \"gone\""), "{stderr}");
}
