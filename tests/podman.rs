//! `load` into podman's Docker-compatible API (podman's own service on a private socket
//! and storage): podman reads only complete docker-archives, so no layer may be left out.

mod common;

use common::*;
use std::process::{Child, Command};

struct PodmanService {
    dir: tempfile::TempDir,
    child: Child,
    host: String,
}

impl PodmanService {
    fn start() -> PodmanService {
        let dir = tempfile::Builder::new()
            .prefix("pod-")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = dir.path().join("podman.sock");
        let child = Command::new("podman")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs", "system", "service", "--time=0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("podman (scripts/install-deps.sh installs it)");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(sock.exists(), "podman service did not start");
        let host = format!("unix://{}", sock.display());
        PodmanService { dir, child, host }
    }

    fn inspect(&self, name: &str, format: &str) -> Option<String> {
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["image", "inspect", "-f", format, name])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

#[test]
fn podman_loads_partially_present_bundles_with_full_archives() {
    if skip(&[Need::Fixtures, Need::OwnEngine, Need::Tool("podman")]) {
        return;
    }
    let podman = PodmanService::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let load = |extra: &[&str]| -> serde_json::Value {
        let out = archpack()
            .env("DOCKER_HOST", &podman.host)
            .args([
                "load",
                "--allow-unsigned",
                "--json",
                "--platform",
                "linux/arm64",
            ])
            .args(extra)
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = load(&["--image", "svc:v1.0"]);
    assert!(first["fullUploads"].as_str().unwrap().contains("podman"));
    // other shares layers with svc; podman still gets every one of them.
    let second = load(&[]);
    assert_eq!(second["layersPresent"], 0);
    let ids = image_ids(&bundle);
    for name in ["svc:v1.0", "other:v2"] {
        let want = id_for(&ids, name, "arm64");
        assert_eq!(
            podman.inspect(name, "{{.Id}}").as_deref(),
            Some(want.as_str())
        );
        assert_eq!(
            podman.inspect(name, "{{.Architecture}}").as_deref(),
            Some("arm64")
        );
    }
    let third = load(&[]);
    assert_eq!(third["archiveBytesSent"], 0);
}
