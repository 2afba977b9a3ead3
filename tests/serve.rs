//! `serve`: bundles answered as a read-only registry, pulled by clients nobody here
//! wrote — skopeo, Docker 20.10 and 28 (both stores), podman 5, containerd 2's `ctr` —
//! and checked byte for byte: image IDs equal the bundle's configs.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running `archpack serve --json`, its log collected as it comes.
struct Served {
    child: Child,
    addr: String,
    listening: Value,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn serve_command(bundles: &[&Path], extra: &[&str], cache: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("archpack"));
    c.env("XDG_CACHE_HOME", cache)
        .args(["serve", "--json", "--listen", "127.0.0.1:0"])
        .args(extra)
        .args(bundles);
    c
}

impl Served {
    /// Starts `archpack serve` on a free loopback port (unsigned bundles allowed unless
    /// `extra` says how to trust), with the gzip digest cache in `cache`.
    fn start(bundles: &[&Path], extra: &[&str], cache: &Path) -> Served {
        let mut args = extra.to_vec();
        if !extra.contains(&"--trust") {
            args.push("--allow-unsigned");
        }
        let mut child = serve_command(bundles, &args, cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let collected = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if v["event"] == "listening" {
                    let _ = tx.send(v.clone());
                }
                collected.lock().unwrap().push(v);
            }
        });
        let listening = match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "serve did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let url = listening["listening"]["url"].as_str().unwrap().to_string();
        let addr = url.split("://").nth(1).unwrap().to_string();
        Served {
            child,
            addr,
            listening: listening["listening"].clone(),
            lines,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The access log so far.
    fn requests(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == "request")
            .map(|v| v["request"].clone())
            .collect()
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
    }

    /// SIGTERM; the exit code and the summary printed on the way out.
    fn stop(mut self) -> (i32, Value) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let summary = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["event"] == "stopped")
            .map(|v| v["summary"].clone())
            .unwrap_or(Value::Null);
        (status.code().unwrap_or(-1), summary)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, response headers, body) of a GET with extra headers.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap();
    (status, headers, body)
}

fn header<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// `skopeo copy` of `reference` into an OCI layout (digests checked by skopeo);
/// returns the config digest of the copied manifest.
fn skopeo_copy(server: &Served, reference: &str, extra: &[&str], dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let layout = tempfile::Builder::new()
        .prefix(&format!("oci-{}-", reference.replace([':', '/'], "-")))
        .tempdir_in(dir)
        .unwrap()
        .keep();
    skopeo_pull(&format!("{}/{reference}", server.addr), &layout, extra).0
}

fn layer_types(server: &Served, repo: &str, manifest_digest: &str) -> Vec<String> {
    let (status, _, body) = get(
        &server.url(&format!("/v2/{repo}/manifests/{manifest_digest}")),
        &[],
    );
    assert_eq!(status, 200);
    let m: Value = serde_json::from_slice(&body).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_image_copies_with_its_digests_and_the_api_answers_as_the_spec_says() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let index = bundle_index(&bundle);
    let server = Served::start(&[&bundle], &[], &dir.path().join("cache"));
    assert!(server.listening["gzipPasses"].as_u64().unwrap() > 0);

    // skopeo (containers/image) takes zstd: the bundle's own documents, byte for byte.
    for (name, platform, id) in &ids {
        let arch = if platform.contains("arm64") {
            "arm64"
        } else {
            "amd64"
        };
        let config = skopeo_copy(&server, name, &["--override-arch", arch], dir.path());
        assert_eq!(&config, id, "{name} {platform}");
    }
    let svc = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "svc:v1.0")
        .unwrap();
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/svc:v1.0", server.addr),
    ]);
    assert!(out.status.success());
    assert_eq!(
        format!("sha256:{}", sha256_hex(&out.stdout)),
        svc["index"].as_str().unwrap(),
        "skopeo is served the bundle's own index"
    );
    // `--all`: every platform at once, each blob checked against its digest.
    let out = skopeo(&[
        "copy",
        "-q",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/other:v2", server.addr),
        &format!("oci:{}:all", dir.path().join("all").display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A client that does not say it takes zstd gets the gzip set: the same configs.
    let (status, h, body) = get(&server.url("/v2/svc/manifests/v1.0"), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        header(&h, "docker-content-digest"),
        format!("sha256:{}", sha256_hex(&body))
    );
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    let gzip_index: Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(
        header(&h, "docker-content-digest"),
        svc["index"].as_str().unwrap()
    );
    let manifests = gzip_index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for m in manifests {
        let types = layer_types(&server, "svc", m["digest"].as_str().unwrap());
        assert!(
            types
                .iter()
                .all(|t| t == "application/vnd.oci.image.layer.v1.tar+gzip"),
            "{types:?}"
        );
    }
    let config = skopeo_copy(
        &server,
        "svc:v1.0",
        &["--override-arch", "arm64"],
        &dir.path().join("again"),
    );
    assert_eq!(config, id_for(&ids, "svc:v1.0", "arm64"));
    // Docker Hub's library/ name answers too (a containerd mirror of docker.io asks it).
    let (status, _, _) = get(&server.url("/v2/library/svc/manifests/v1.0"), &[]);
    assert_eq!(status, 200);

    // HEAD: the length and digest without the body.
    let resp = agent()
        .head(server.url("/v2/svc/manifests/v1.0"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(resp.headers(), "content-length"),
        body.len().to_string()
    );

    // Blobs: whole, HEAD, one range, a range outside.
    let layer = manifests[0]["digest"].as_str().unwrap();
    let m: Value =
        serde_json::from_slice(&get(&server.url(&format!("/v2/svc/manifests/{layer}")), &[]).2)
            .unwrap();
    let blob = m["layers"][0]["digest"].as_str().unwrap();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    let blob_url = server.url(&format!("/v2/svc/blobs/{blob}"));
    let (status, h, whole) = get(&blob_url, &[]);
    assert_eq!(status, 200);
    assert_eq!(whole.len() as u64, size);
    assert_eq!(format!("sha256:{}", sha256_hex(&whole)), blob);
    assert_eq!(header(&h, "docker-content-digest"), blob);
    let resp = agent().head(&blob_url).call().unwrap();
    assert_eq!(header(resp.headers(), "content-length"), size.to_string());
    assert_eq!(header(resp.headers(), "accept-ranges"), "bytes");
    let (status, h, part) = get(&blob_url, &[("Range", "bytes=100-4195")]);
    assert_eq!(status, 206);
    assert_eq!(part, whole[100..4196]);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes 100-4195/{size}")
    );
    let (status, _, tail) = get(&blob_url, &[("Range", "bytes=-10")]);
    assert_eq!((status, &tail[..]), (206, &whole[whole.len() - 10..]));
    let (status, h, _) = get(&blob_url, &[("Range", &format!("bytes={size}-"))]);
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), format!("bytes */{size}"));
    // A stored (zstd) blob's range comes from the bundle in place.
    let config_digest = id_for(&ids, "svc:v1.0", "amd64");
    let cfg_url = server.url(&format!("/v2/svc/blobs/{config_digest}"));
    let (_, _, cfg) = get(&cfg_url, &[]);
    let (status, _, cfg_part) = get(&cfg_url, &[("Range", "bytes=5-20")]);
    assert_eq!((status, &cfg_part[..]), (206, &cfg[5..21]));

    // Names: catalog (paginated), tags; unknowns with the spec's codes.
    let (_, _, body) = get(&server.url("/v2/_catalog"), &[]);
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["other", "svc"]));
    let (_, h, body) = get(&server.url("/v2/_catalog?n=1"), &[]);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["repositories"],
        serde_json::json!(["other"])
    );
    assert!(header(&h, "link").contains("last=other"), "{h:?}");
    let (_, _, body) = get(&server.url("/v2/_catalog?n=1&last=other"), &[]);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["repositories"],
        serde_json::json!(["svc"])
    );
    let (_, _, body) = get(&server.url("/v2/svc/tags/list"), &[]);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        serde_json::json!({"name": "svc", "tags": ["v1.0"]})
    );
    for (path, status, code) in [
        ("/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/svc/manifests/v9", 404, "MANIFEST_UNKNOWN"),
        (
            &format!("/v2/svc/blobs/sha256:{}", "0".repeat(64)) as &str,
            404,
            "BLOB_UNKNOWN",
        ),
    ] {
        let (s, _, body) = get(&server.url(path), &[]);
        let e: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (s, e["errors"][0]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    // other's blob is not in svc's repository.
    let other_config = id_for(&ids, "other:v2", "amd64");
    let (s, _, _) = get(&server.url(&format!("/v2/svc/blobs/{other_config}")), &[]);
    assert_eq!(s, 404);

    // Every write is refused with the spec's UNSUPPORTED, and nothing changes.
    let a = agent();
    let refusals = [
        a.post(server.url("/v2/svc/blobs/uploads/"))
            .send_empty()
            .unwrap(),
        a.put(server.url("/v2/svc/manifests/v1.0"))
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .send(&b"{}"[..])
            .unwrap(),
        a.patch(server.url("/v2/svc/blobs/uploads/x"))
            .send(&b"x"[..])
            .unwrap(),
        a.delete(server.url(&format!(
            "/v2/svc/manifests/{}",
            svc["index"].as_str().unwrap()
        )))
        .call()
        .unwrap(),
    ];
    for mut r in refusals {
        assert_eq!(r.status().as_u16(), 405);
        let e: Value = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
        assert_eq!(e["errors"][0]["code"], "UNSUPPORTED");
    }
    let (s, _, _) = get(&server.url("/v2/svc/manifests/v1.0"), &[]);
    assert_eq!(s, 200);

    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r["method"] == "DELETE" && r["status"] == 405));
    assert!(requests
        .iter()
        .any(|r| r["path"] == "/v2/svc/manifests/v1.0" && r["layers"] == "gzip"));
    // A blob's line is written when its body is done with, which may be after the
    // client has all of it: count the log once the server has stopped.
    let log = server.lines.clone();
    let (code, summary) = server.stop();
    assert_eq!(code, 0, "a stop by SIGTERM is a clean exit");
    let logged = log
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["event"] == "request")
        .count();
    assert!(logged >= requests.len());
    assert_eq!(summary["requests"].as_u64().unwrap() as usize, logged);
    assert_eq!(summary["serverErrors"], 0);
    assert!(summary["bytesSent"].as_u64().unwrap() > whole.len() as u64);

    // A second start remembers the gzip digests: no compression pass.
    let again = Served::start(&[&bundle], &[], &dir.path().join("cache"));
    assert_eq!(again.listening["gzipPasses"], 0);
}

#[test]
fn a_gzip_encoding_is_made_once_kept_for_later_pulls_and_checked_each_time() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let cache = dir.path().join("cache");
    let server = Served::start(&[&bundle], &["--layer-format", "gzip"], &cache);
    let (_, _, body) = get(&server.url("/v2/svc/manifests/v1.0"), &[]);
    let index: Value = serde_json::from_slice(&body).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let (_, _, body) = get(&server.url(&format!("/v2/svc/manifests/{manifest}")), &[]);
    let m: Value = serde_json::from_slice(&body).unwrap();
    let blob = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    let url = server.url(&format!("/v2/svc/blobs/{blob}"));

    // The first pull encodes; the next ones, whole or a range, read the kept encoding.
    let (status, _, first) = get(&url, &[]);
    assert_eq!((status, first.len() as u64), (200, size));
    assert_eq!(format!("sha256:{}", sha256_hex(&first)), blob);
    let (status, _, again) = get(&url, &[]);
    assert_eq!(status, 200);
    assert!(again == first, "a kept encoding differs from the first");
    let (status, _, part) = get(&url, &[("Range", "bytes=10-99")]);
    assert_eq!((status, &part[..]), (206, &first[10..100]));

    // A kept copy that no longer matches is never sent whole, and not blamed on the
    // bundle: it is dropped and the next pull encodes again.
    let kept: Vec<PathBuf> = std::fs::read_dir(cache.join("archpack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("serve-gzip.")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let copy = kept[0].join(&blob["sha256:".len()..]);
    let mut bytes = std::fs::read(&copy).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    let cut = agent().get(&url).call().ok().and_then(|mut r| {
        r.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .ok()
    });
    assert!(
        cut.as_ref() != Some(&bytes),
        "a corrupt kept copy was sent whole"
    );
    assert!(
        cut.as_ref() != Some(&first),
        "a corrupt kept copy was sent as good"
    );
    let (status, _, healed) = get(&url, &[]);
    assert_eq!(status, 200);
    assert!(
        healed == first,
        "the encoding made again differs from the first"
    );

    let (code, summary) = server.stop();
    assert_eq!(code, 0);
    assert_eq!(summary["faultyMembers"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["gzipEncodings"], 2, "{summary}");
    assert_eq!(summary["gzipCacheHits"], 3, "{summary}");
    assert!(!kept[0].exists(), "the kept encodings outlived the server");
}

/// A throwaway engine pulls `reference`; returns `docker image inspect`'s Id.
fn engine_pull(engine: &TestEngine, reference: &str) -> String {
    let pull = engine.docker(&["pull", "-q", reference]);
    assert!(
        pull.status.success(),
        "{:?} pull {reference}: {}",
        engine.kind,
        String::from_utf8_lossy(&pull.stderr)
    );
    engine
        .inspect(reference, "{{.Id}}")
        .unwrap_or_else(|| panic!("{reference} not in the engine after its pull"))
}

/// The image index digest of `name` in the bundle.
fn index_of(bundle: &Path, name: &str) -> String {
    bundle_index(bundle)["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap()["index"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn docker_20_pulls_gzip_and_docker_28_on_both_stores_pulls_zstd_with_the_bundles_ids() {
    if skip(&[Need::Fixtures, Need::OwnEngine, Need::SidEngines]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let server = Served::start(&[&bundle], &[], &dir.path().join("cache"));
    let arch = native_arch();
    let reference = format!("{}/svc:v1.0", server.addr);
    for kind in [
        EngineKind::Docker20,
        EngineKind::Docker28,
        EngineKind::Docker28Containerd,
    ] {
        let engine = TestEngine::start_kind(kind, "");
        let before = server.requests().len();
        let id = engine_pull(&engine, &reference);
        // The classic stores name an image by its config; the containerd store by what
        // the tag points at: here the bundle's own image index, byte for byte.
        let want = if kind == EngineKind::Docker28Containerd {
            index_of(&bundle, "svc:v1.0")
        } else {
            id_for(&ids, "svc:v1.0", arch)
        };
        assert_eq!(id, want, "{kind:?}");
        assert_eq!(
            engine.inspect(&reference, "{{.Architecture}}").as_deref(),
            Some(arch)
        );
        // What the tag resolved to for this engine: gzip for 20.10, zstd for 28.
        let resolved: Vec<Value> = server.requests()[before..]
            .iter()
            .filter(|r| r["path"] == "/v2/svc/manifests/v1.0")
            .map(|r| r["layers"].clone())
            .collect();
        let want = if kind == EngineKind::Docker20 {
            "gzip"
        } else {
            "zstd"
        };
        assert!(
            !resolved.is_empty() && resolved.iter().all(|l| l == want),
            "{kind:?}: {resolved:?}"
        );
        // The image runs where containers can.
        if kind.runs_containers() {
            let out = engine.docker(&["run", "--rm", "--network", "none", &reference, "true"]);
            assert!(
                out.status.success(),
                "{kind:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let (code, summary) = server.stop();
    assert_eq!((code, summary["serverErrors"].as_u64()), (0, Some(0)));
}

#[test]
fn podman_5_and_containerd_2_pull_their_platform_and_a_docker_io_mirror_works() {
    if skip(&[Need::Fixtures, Need::SidEngines]) {
        return;
    }
    let root = std::env::var("ARCHPACK_SID_ROOT").unwrap();
    std::fs::create_dir_all("/tmp/apsid").unwrap();
    let dir = tempfile::Builder::new()
        .prefix("serve-")
        .tempdir_in("/tmp/apsid")
        .unwrap();
    let d = dir.path().display().to_string();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let server = Served::start(&[&bundle], &[], &dir.path().join("cache"));
    let in_sid = |args: &[&str]| {
        Command::new(script("sid-chroot.sh"))
            .args(["run", &root])
            .args(args)
            .output()
            .unwrap()
    };

    // podman 5 (containers/image: zstd), the arm64 image on this amd64 host.
    let podman = |args: &[&str]| {
        in_sid(
            &[
                &[
                    "podman",
                    "--root",
                    &format!("{d}/podman"),
                    "--runroot",
                    &format!("{d}/podman-run"),
                    "--storage-driver",
                    "overlay",
                    "--cgroup-manager",
                    "cgroupfs",
                    "--events-backend",
                    "file",
                ][..],
                args,
            ]
            .concat(),
        )
    };
    let reference = format!("{}/other:v2", server.addr);
    let out = podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--arch",
        "arm64",
        &reference,
    ]);
    assert!(
        out.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Architecture}}",
        &reference,
    ]);
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = id_for(&ids, "other:v2", "arm64");
    assert_eq!(got, format!("{} arm64", &want[7..]));

    // containerd 2.1 with a hosts.toml mirror of docker.io, as k3s writes from
    // registries.yaml: `svc:v1.0` from "Docker Hub" is answered by serve.
    let hosts = dir.path().join("hosts/docker.io");
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            server.addr
        ),
    )
    .unwrap();
    let containerd = Containerd::start(dir.path());
    let ctr = |args: &[&str]| containerd.ctr(args);
    let before = server.requests().len();
    let out = ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        &format!("{d}/hosts"),
        "--platform",
        "linux/arm64",
        "docker.io/library/svc:v1.0",
    ]);
    drop(containerd);
    assert!(
        out.status.success(),
        "ctr pull: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let asked: Vec<Value> = server.requests()[before..].to_vec();
    assert!(
        asked.iter().any(
            |r| r["path"] == "/v2/library/svc/manifests/v1.0?ns=docker.io"
                || r["path"] == "/v2/library/svc/manifests/v1.0"
        ),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|r| r["status"] == 200 || r["method"] == "HEAD"),
        "{asked:?}"
    );
    // containerd fetched the arm64 config: the bundle's.
    let config = id_for(&ids, "svc:v1.0", "arm64");
    assert!(
        asked
            .iter()
            .any(|r| r["path"].as_str().unwrap().contains(&config)),
        "{asked:?}"
    );
}

#[test]
fn twelve_concurrent_pulls_with_the_servers_memory_bounded() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 48 MiB of incompressible layer: more than every transfer's buffers together.
    let big = noise_bundle(dir.path(), "noise:1", 48 << 20, 7);
    let bundle = fixture_bundle(dir.path(), &[]);
    // The zstd set: no start pass, so the peak is the transfers' own.
    let server = Served::start(
        &[&bundle, &big],
        &["--max-transfers", "4", "--layer-format", "zstd"],
        &dir.path().join("cache"),
    );
    let addr = server.addr.clone();
    let pulls: Vec<_> = (0..12)
        .map(|i| {
            let addr = addr.clone();
            let out = dir.path().join(format!("pull-{i}"));
            std::thread::spawn(move || {
                let (image, arch) = match i % 3 {
                    0 => ("noise:1", native_arch()),
                    1 => ("svc:v1.0", "arm64"),
                    _ => ("other:v2", "amd64"),
                };
                let o = Command::new("skopeo")
                    .args([
                        "copy",
                        "-q",
                        "--src-tls-verify=false",
                        "--override-arch",
                        arch,
                    ])
                    .arg(format!("docker://{addr}/{image}"))
                    .arg(format!("oci:{}:x", out.display()))
                    .output()
                    .unwrap();
                (image, o)
            })
        })
        .collect();
    for p in pulls {
        let (image, o) = p.join().unwrap();
        assert!(
            o.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let peak_mib = server.peak_rss_mib();
    // Four transfers of a few MiB of buffers each, and the process itself: below the
    // one 48 MiB layer, let alone the four sends of it (measured: about 31 MiB).
    assert!(peak_mib < 48, "serve's peak RSS was {peak_mib} MiB");
    let noise_sends = server
        .requests()
        .iter()
        .filter(|r| r["status"] == 200 && r["bytes"].as_u64().unwrap() > (40 << 20))
        .count();
    assert_eq!(noise_sends, 4);
    let (code, summary) = server.stop();
    assert_eq!(code, 0);
    let by_bundle = summary["byBundle"].as_array().unwrap();
    assert_eq!(by_bundle.len(), 2);
    assert!(
        by_bundle.iter().all(|b| b["bytes"].as_u64().unwrap() > 0),
        "{by_bundle:?}"
    );

    // gzip: each re-encoding holds the layer's zstd window and the compressor's
    // blocks (about 24 MiB here), so at most two run at once; six clients of the
    // 48 MiB layer get the right bytes and the peak stays that of two.
    let server = Served::start(
        &[&big],
        &["--layer-format", "gzip"],
        &dir.path().join("cache"),
    );
    let (_, _, body) = get(&server.url("/v2/noise/manifests/1"), &[]);
    let index: Value = serde_json::from_slice(&body).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let (_, _, body) = get(&server.url(&format!("/v2/noise/manifests/{manifest}")), &[]);
    let layer = serde_json::from_slice::<Value>(&body).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let url = server.url(&format!("/v2/noise/blobs/{layer}"));
    let gets: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || sha256_hex(&get(&url, &[]).2))
        })
        .collect();
    for g in gets {
        assert_eq!(format!("sha256:{}", g.join().unwrap()), layer);
    }
    let peak_mib = server.peak_rss_mib();
    assert!(
        peak_mib < 100,
        "serve's peak RSS with six gzip clients was {peak_mib} MiB"
    );
}

/// Flips a byte in the middle of a layer every `arch` platform has and no other does
/// (the fixtures' arm64 base); returns its member's name.
fn corrupt_a_layer(bundle: &Path, arch: &str) -> String {
    let index = bundle_index(bundle);
    let platforms: Vec<&Value> = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["platforms"].as_array().unwrap())
        .collect();
    let (mine, others): (Vec<&Value>, Vec<&Value>) = platforms
        .into_iter()
        .partition(|p| p["platform"]["architecture"] == arch);
    let layer = mine[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            mine.iter()
                .all(|p| p["layers"].as_array().unwrap().contains(l))
                && others
                    .iter()
                    .all(|p| !p["layers"].as_array().unwrap().contains(l))
        })
        .expect("a layer only that architecture has");
    let m = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == *layer)
        .unwrap();
    let mut bytes = std::fs::read(bundle).unwrap();
    let at = (m["offset"].as_u64().unwrap() + m["size"].as_u64().unwrap() / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(bundle, &bytes).unwrap();
    m["name"].as_str().unwrap().to_string()
}

#[test]
fn a_corrupt_layer_fails_its_pull_is_named_and_the_rest_still_pull() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let member = corrupt_a_layer(&bundle, "arm64");

    // zstd only: nothing reads the layer before a client asks; the blob is cut short
    // when its check fails at the end, and it is 500 from then on.
    let server = Served::start(
        &[&bundle],
        &["--layer-format", "zstd"],
        &dir.path().join("c1"),
    );
    let out = skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{}/svc:v1.0", server.addr),
        &format!("oci:{}:x", dir.path().join("bad").display()),
    ]);
    assert!(!out.status.success(), "a corrupt layer was pulled");
    let failed: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r["error"].as_str().is_some_and(|e| e.contains(&member)))
        .collect();
    assert!(
        !failed.is_empty(),
        "the log names the member: {:?}",
        server.requests()
    );
    assert!(failed
        .iter()
        .all(|r| r["status"] == 200 || r["status"] == 500));
    // The rest pulls: both images for amd64.
    for (name, arch) in [("svc:v1.0", "amd64"), ("other:v2", "amd64")] {
        let config = skopeo_copy(&server, name, &["--override-arch", arch], dir.path());
        assert_eq!(config, id_for(&ids, name, arch));
    }
    let (code, summary) = server.stop();
    assert_eq!(code, 0);
    assert!(summary["serverErrors"].as_u64().unwrap() >= 1);
    assert_eq!(
        summary["faultyMembers"][0]["member"],
        member.as_str(),
        "{summary}"
    );

    // auto: the start pass finds it; the platform is left out of the gzip set and the
    // member is never served, while everything else is.
    let server = Served::start(&[&bundle], &[], &dir.path().join("c2"));
    assert_eq!(
        server.listening["faultyMembers"][0]["member"],
        member.as_str()
    );
    let svc = server.listening["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "svc:v1.0")
        .unwrap()
        .clone();
    assert!(
        svc["notInGzip"][0].as_str().unwrap().contains("arm64"),
        "{svc}"
    );
    let (_, _, body) = get(&server.url("/v2/svc/manifests/v1.0"), &[]);
    let gzip_index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(gzip_index["manifests"].as_array().unwrap().len(), 1);
    let config = skopeo_copy(
        &server,
        "other:v2",
        &["--override-arch", "amd64"],
        &dir.path().join("ok"),
    );
    assert_eq!(config, id_for(&ids, "other:v2", "amd64"));
    let (status, _, _) = get(
        &server.url(&format!(
            "/v2/other/blobs/{}",
            bundle_index(&bundle)["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == member.as_str())
                .unwrap()["digest"]
                .as_str()
                .unwrap()
        )),
        &[],
    );
    assert_eq!(status, 500, "a faulty member is never served");
}

#[test]
fn https_with_a_site_ca_and_bad_tls_files_refused_before_listening() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo"), Need::Tool("openssl")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let ids = image_ids(&bundle);
    let (ca, cert, key) = site_pki(dir.path());
    let server = Served::start(
        &[&bundle],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    );
    assert!(server.listening["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    let reference = format!("docker://{}/svc:v1.0", server.addr);
    // Without the site's CA: refused by the client.
    let out = skopeo(&["inspect", "--raw", &reference]);
    assert!(!out.status.success());
    // With it (skopeo's --cert-dir takes *.crt): pulled and checked.
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let out = skopeo(&[
        "copy",
        "-q",
        "--src-cert-dir",
        certs.to_str().unwrap(),
        "--override-arch",
        "arm64",
        &reference,
        &format!("oci:{}:x", dir.path().join("tls").display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("tls/index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("tls/blobs/sha256").join(&d[7..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        m["config"]["digest"],
        id_for(&ids, "svc:v1.0", "arm64").as_str()
    );
    drop(server);

    // A key that is not the certificate's, a certificate that is not PEM: named, exit 1.
    let other = tempfile::tempdir().unwrap();
    let (_, _, other_key) = site_pki(other.path());
    for (c, k, named) in [
        (cert.clone(), other_key.clone(), other_key.clone()),
        (bundle.clone(), key.clone(), bundle.clone()),
    ] {
        let out = serve_command(
            &[&bundle],
            &[
                "--allow-unsigned",
                "--tls-cert",
                c.to_str().unwrap(),
                "--tls-key",
                k.to_str().unwrap(),
            ],
            &dir.path().join("cache"),
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&named.display().to_string()), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    }
}

fn bundle_of(dir: &Path, name: &str, sources: &[&str], extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    archpack()
        .args(["create", "-q", "-o"])
        .arg(&out)
        .args(extra)
        .args(sources.iter().map(|s| {
            format!(
                "docker-archive:{}",
                fixtures().join(format!("{s}.tar")).display()
            )
        }))
        .assert()
        .success();
    out
}

#[test]
fn several_bundles_and_volumes_are_served_together_and_conflicts_refused() {
    if skip(&[Need::Fixtures, Need::Tool("skopeo")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = bundle_of(dir.path(), "svc.archpack", &["svc-amd64", "svc-arm64"], &[]);
    // other, cut into volumes: served from NAME (the .001, .002, … beside each other).
    let other = bundle_of(
        dir.path(),
        "other.archpack",
        &["other-amd64", "other-arm64"],
        &["--volume-size", "300KiB"],
    );
    assert!(!other.exists() && other.with_extension("archpack.001").exists());
    let ids = image_ids(&bundle_of(
        dir.path(),
        "all.archpack",
        &["svc-amd64", "svc-arm64", "other-amd64", "other-arm64"],
        &[],
    ));
    let server = Served::start(
        &[&svc, &other],
        &["--prefix", "site"],
        &dir.path().join("cache"),
    );
    let (_, _, body) = get(&server.url("/v2/_catalog"), &[]);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["repositories"],
        serde_json::json!(["site/other", "site/svc"])
    );
    for (name, arch) in [
        ("svc:v1.0", "arm64"),
        ("other:v2", "arm64"),
        ("other:v2", "amd64"),
    ] {
        let config = skopeo_copy(
            &server,
            &format!("site/{name}"),
            &["--override-arch", arch],
            dir.path(),
        );
        assert_eq!(config, id_for(&ids, name, arch));
    }
    let (code, summary) = server.stop();
    assert_eq!(code, 0);
    assert!(
        summary["byBundle"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["requests"].as_u64().unwrap() > 0),
        "{summary}"
    );

    // A volume missing: refused at start, naming it.
    let third = other.with_extension("archpack.002");
    let moved = dir.path().join("elsewhere.002");
    std::fs::rename(&third, &moved).unwrap();
    let out = serve_command(&[&other], &["--allow-unsigned"], &dir.path().join("cache"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("002"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&moved, &third).unwrap();

    // svc:v1.0 from two bundles that disagree: refused, naming both files.
    let svc_amd64 = bundle_of(dir.path(), "svc-amd64.archpack", &["svc-amd64"], &[]);
    let out = serve_command(
        &[&svc, &svc_amd64],
        &["--allow-unsigned"],
        &dir.path().join("cache"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("svc.archpack")
            && err.contains("svc-amd64.archpack")
            && err.contains("svc:v1.0"),
        "{err}"
    );
    // The same bundle twice agrees with itself.
    let server = Served::start(&[&svc, &svc], &[], &dir.path().join("cache"));
    assert_eq!(server.listening["images"].as_array().unwrap().len(), 1);
}

#[test]
fn trust_is_decided_before_listening() {
    if skip(&[Need::Fixtures]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    // Unsigned without --allow-unsigned: refused (untrusted, exit 4), nothing listens.
    let out = serve_command(&[&bundle], &[], &dir.path().join("cache"))
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    // Standard input is not a bundle serve can answer from.
    let out = serve_command(
        &[Path::new("-")],
        &["--allow-unsigned"],
        &dir.path().join("cache"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
    // A prefix no registry client could pull from: named.
    let out = serve_command(
        &[&bundle],
        &["--allow-unsigned", "--prefix", "Site"],
        &dir.path().join("cache"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prefix \"Site\""));
    // A port already taken: said so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(assert_cmd::cargo::cargo_bin("archpack"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .args([
            "serve",
            "--allow-unsigned",
            "--layer-format",
            "zstd",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server has that port"));
}
