//! Shared test helpers: the fixture images built by scripts/make-test-images.sh, the
//! throwaway engine started by scripts/test.sh, and synthetic archives for bad input.
#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// What a test needs beyond the archpack binary.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// The two-arch test images scripts/make-test-images.sh builds (ARCHPACK_FIXTURES).
    Fixtures,
    /// The throwaway engine scripts/test.sh starts (ARCHPACK_TEST_DOCKER_HOST) with the
    /// fixture images loaded.
    SharedEngine,
    /// Engines of the test's own: root and dockerd.
    OwnEngine,
    /// A program on PATH.
    Tool(&'static str),
    /// The Debian sid chroot with Docker 28, containerd 2 and podman 5
    /// (scripts/sid-chroot.sh; ARCHPACK_SID_ROOT).
    SidEngines,
}

impl Need {
    fn missing(&self) -> Option<String> {
        match self {
            Need::Fixtures => match std::env::var_os("ARCHPACK_FIXTURES") {
                Some(d) if Path::new(&d).join(".complete").exists() => None,
                _ => Some("the fixture images (ARCHPACK_FIXTURES)".into()),
            },
            Need::SharedEngine => std::env::var_os("ARCHPACK_TEST_DOCKER_HOST")
                .is_none()
                .then(|| "the test engine (ARCHPACK_TEST_DOCKER_HOST)".into()),
            Need::OwnEngine => {
                let root = rustix::process::geteuid().is_root();
                (!root || !on_path("dockerd")).then(|| "root and dockerd".into())
            }
            Need::Tool(t) => (!on_path(t)).then(|| format!("`{t}`")),
            Need::SidEngines => match std::env::var_os("ARCHPACK_SID_ROOT") {
                Some(r) if Path::new(&r).join(".archpack-complete").exists() => None,
                _ => Some("the sid chroot with the newer engines (ARCHPACK_SID_ROOT)".into()),
            },
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether a test must be skipped for want of `needs`. A skip prints one line (once per
/// test binary) saying what to run; under scripts/test.sh (ARCHPACK_TEST_STRICT) a
/// missing need fails the test instead, so the full suite can never skip silently.
pub fn skip(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        return false;
    }
    if std::env::var_os("ARCHPACK_TEST_STRICT").is_some() {
        panic!("this test needs {}", missing.join(", "));
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        use std::io::Write;
        let binary = std::env::args().next().unwrap_or_default();
        // target/debug/deps/create-0123abcd → tests/create.rs
        let stem = Path::new(&binary)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("tests/{}.rs", stem.rsplit_once('-').map_or(&*stem, |(s, _)| s));
        // Written past the test harness's capture, so a plain `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "note: {name}: skipping tests that need {}; run scripts/test.sh (as root) for the whole suite",
            missing.join(", ")
        );
    });
    true
}

/// Where scripts/test.sh put the real two-arch test images.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var("ARCHPACK_FIXTURES").unwrap_or_else(|_| {
        panic!("ARCHPACK_FIXTURES is not set: run the suite with scripts/test.sh (it builds the test images and starts an engine)")
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join(".complete").exists(),
        "{} holds no complete fixture set",
        dir.display()
    );
    dir
}

/// DOCKER_HOST of the throwaway engine scripts/test.sh started.
pub fn engine_host() -> String {
    std::env::var("ARCHPACK_TEST_DOCKER_HOST").unwrap_or_else(|_| {
        panic!("ARCHPACK_TEST_DOCKER_HOST is not set: run the suite with scripts/test.sh")
    })
}

pub fn archpack() -> Command {
    let mut c = Command::cargo_bin("archpack").expect("archpack binary");
    c.env_remove("SOURCE_DATE_EPOCH");
    c.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    c
}

/// archpack talking to the test engine.
pub fn archpack_engine() -> Command {
    let mut c = archpack();
    c.env("DOCKER_HOST", engine_host());
    c
}

pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", engine_host())
        .output()
        .expect("docker client");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn inspect_json(bundle: &Path) -> Value {
    let out = archpack()
        .args(["inspect", "--json"])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bundle's own index, read with tar (an independent reader).
pub fn bundle_index(bundle: &Path) -> Value {
    let out = std::process::Command::new("tar")
        .args(["-xOf"])
        .arg(bundle)
        .arg("archpack-index.json")
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// image name → platform → image ID, from `inspect --json`.
pub fn image_ids(bundle: &Path) -> Vec<(String, String, String)> {
    let v = inspect_json(bundle);
    let mut out = Vec::new();
    for image in v["images"].as_array().unwrap() {
        for p in image["platforms"].as_array().unwrap() {
            out.push((
                image["name"].as_str().unwrap().to_string(),
                p["platform"].as_str().unwrap().to_string(),
                p["imageId"].as_str().unwrap().to_string(),
            ));
        }
    }
    out.sort();
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A layer tar holding the given files.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        append_file(&mut b, name, data);
    }
    b.into_inner().unwrap()
}

/// Appends a plain file (mode 0644, mtime 0) to a tar.
pub fn append_file<W: std::io::Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// What the format's independent reader (`bundle-format/reference_reader.py`) makes of
/// `bundle`, which it must accept.
pub fn reference_read(bundle: &Path, args: &[&str]) -> Value {
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-format/reference_reader.py");
    let out = std::process::Command::new("python3")
        .arg(reader)
        .arg(bundle)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `v` with every object's keys in sorted order (the vector recipe's config form).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Options for a synthetic `docker save` archive.
pub struct SyntheticImage<'a> {
    pub tag: &'a str,
    pub architecture: Option<&'a str>,
    pub layers: Vec<Vec<u8>>,
    /// Replace the config's diff_ids (to make them lie).
    pub diff_ids: Option<Vec<String>>,
}

/// Writes a docker-archive with one image; returns its config digest.
pub fn write_docker_archive(path: &Path, image: SyntheticImage) -> String {
    let diff_ids = image.diff_ids.clone().unwrap_or_else(|| {
        image
            .layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect()
    });
    let mut config = json!({
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Cmd": ["/bin/sh"]},
    });
    if let Some(a) = image.architecture {
        config["architecture"] = json!(a);
    }
    let config = serde_json::to_vec(&sorted(config)).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .enumerate()
        .map(|(i, _)| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [image.tag],
        "Layers": layer_names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    for (name, data) in layer_names.iter().zip(&image.layers) {
        add(name, data);
    }
    add(&config_name, &config);
    add("manifest.json", &manifest);
    b.finish().unwrap();
    format!("sha256:{}", sha256_hex(&config))
}

/// Waits for `child`; returns its exit code and its own peak RSS in KiB, read from
/// /proc (VmHWM). getrusage cannot isolate it: posix_spawn shares the parent's memory
/// until exec, and Linux carries that high-water mark into the child's maxrss.
pub fn wait_with_max_rss(mut child: std::process::Child) -> (i32, u64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The engines archpack is tested against (scripts/engine.sh's kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// bookworm's Docker 20.10, classic store.
    Docker20,
    /// sid's Docker 28, classic (overlay2) store.
    Docker28,
    /// sid's Docker 28 with the containerd image store.
    Docker28Containerd,
    /// sid's podman 5 Docker-compatible service.
    Podman5,
    /// bookworm arm64's dockerd under qemu-user (ARCHPACK_ARM64_ROOT): an arm64 host.
    Arm64Docker,
}

impl EngineKind {
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Docker20,
        EngineKind::Docker28,
        EngineKind::Docker28Containerd,
        EngineKind::Podman5,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker20 => "docker20",
            EngineKind::Docker28 => "docker28",
            EngineKind::Docker28Containerd => "docker28-containerd",
            EngineKind::Podman5 => "podman5",
            EngineKind::Arm64Docker => "arm64-docker",
        }
    }

    fn in_chroot(self) -> bool {
        self != EngineKind::Docker20
    }

    /// Whether containers can run in it here (podman's crun cannot in this sandbox:
    /// "cgroups in hybrid mode not supported").
    pub fn runs_containers(self) -> bool {
        self != EngineKind::Podman5
    }

    /// What `docker images` calls an image of the bundle: the config digest, or the
    /// manifest digest on the containerd store.
    pub fn id_of<'a>(self, config: &'a str, manifest: &'a str) -> &'a str {
        if self == EngineKind::Docker28Containerd {
            manifest
        } else {
            config
        }
    }
}

/// A throwaway engine of the test's own (scripts/engine.sh), stopped and removed on drop.
pub struct TestEngine {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub kind: EngineKind,
}

impl TestEngine {
    pub fn start() -> TestEngine {
        TestEngine::start_kind(EngineKind::Docker20, "")
    }

    /// An engine started with extra dockerd flags (a TLS listener, ...).
    pub fn start_with(extra_args: &str) -> TestEngine {
        TestEngine::start_kind(EngineKind::Docker20, extra_args)
    }

    /// An engine of `kind`; those in the sid chroot keep their data under /tmp/apsid.
    pub fn start_kind(kind: EngineKind, extra_args: &str) -> TestEngine {
        let parent = if kind.in_chroot() {
            "/tmp/apsid"
        } else {
            "/tmp"
        };
        std::fs::create_dir_all(parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("ap-")
            .tempdir_in(parent)
            .unwrap();
        let out = std::process::Command::new(script("engine.sh"))
            .arg("start")
            .arg(dir.path())
            .env("ARCHPACK_ENGINE_ARGS", extra_args)
            .env("ARCHPACK_ENGINE_KIND", kind.name())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "engine.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host = format!("unix://{}/docker.sock", dir.path().display());
        TestEngine { dir, host, kind }
    }

    pub fn archpack(&self) -> Command {
        let mut c = archpack();
        c.env("DOCKER_HOST", &self.host);
        c
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .unwrap()
    }

    /// `docker image inspect -f FORMAT NAME`, or None when the engine lacks it.
    pub fn inspect(&self, name: &str, format: &str) -> Option<String> {
        let out = self.docker(&["image", "inspect", "-f", format, name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `archpack load -q --allow-unsigned BUNDLE` into this engine, running (stderr piped).
    pub fn spawn_load(&self, bundle: &Path) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("archpack"))
            .env("DOCKER_HOST", &self.host)
            .args(["load", "-q", "--allow-unsigned"])
            .arg(bundle)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Every image in the engine (`docker images -aq`), tagged or not.
    pub fn images(&self) -> Vec<String> {
        let out = self.docker(&["images", "-aq"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Every tag in the engine.
    pub fn tags(&self) -> Vec<String> {
        let out = self.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(out.status.success());
        let mut t: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        t.sort();
        t
    }

    pub fn stop(&self) {
        let _ = std::process::Command::new(script("engine.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        self.stop();
        // overlay mounts under the data root must go before the directory can (an engine
        // in the chroot mounts them under the chroot's view of the same directory).
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let root = self.dir.path().display().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.contains(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = std::process::Command::new("umount")
                    .args(["-l", p])
                    .status();
            }
        }
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A bundle of the four fixture images (svc and other, amd64 and arm64).
pub fn fixture_bundle(dir: &Path, extra: &[&str]) -> PathBuf {
    let bundle = dir.join("app.archpack");
    archpack()
        .args(["create", "-q", "-o"])
        .arg(&bundle)
        .args(extra)
        .args(
            ["svc-amd64", "svc-arm64", "other-amd64", "other-arm64"].map(|f| {
                format!(
                    "docker-archive:{}",
                    fixtures().join(format!("{f}.tar")).display()
                )
            }),
        )
        .assert()
        .success();
    bundle
}

/// A small unsigned two-arch bundle (`app:1` for amd64 and arm64, a shared layer) made
/// from synthetic archives: needs nothing but archpack.
pub fn synthetic_bundle(dir: &Path) -> PathBuf {
    let shared = layer_tar(&[("app/hello.txt", b"hello\n")]);
    let mut sources = Vec::new();
    for arch in ["amd64", "arm64"] {
        let p = dir.join(format!("app-{arch}.tar"));
        write_docker_archive(
            &p,
            SyntheticImage {
                tag: &format!("app:1-{arch}"),
                architecture: Some(arch),
                layers: vec![layer_tar(&[("bin/app", arch.as_bytes())]), shared.clone()],
                diff_ids: None,
            },
        );
        sources.push(format!("docker-archive:{}", p.display()));
    }
    let bundle = dir.join("synthetic.archpack");
    archpack()
        .args(["create", "-q", "--force", "-o"])
        .arg(&bundle)
        .args(&sources)
        .assert()
        .success();
    bundle
}

/// Rewrites an (unsigned) bundle's index in place, keeping its reserved size.
pub fn rewrite_index(bundle: &Path, change: impl FnOnce(&mut Value)) {
    let mut bytes = std::fs::read(bundle).unwrap();
    let size = usize::from_str_radix(
        std::str::from_utf8(&bytes[124..135])
            .unwrap()
            .trim_matches(char::from(0))
            .trim(),
        8,
    )
    .unwrap();
    let mut index: Value = serde_json::from_slice(&bytes[512..512 + size]).unwrap();
    change(&mut index);
    let mut text = serde_json::to_vec(&index).unwrap();
    assert!(text.len() < size, "rewritten index does not fit");
    text.resize(size - 1, b' ');
    text.push(b'\n');
    bytes[512..512 + size].copy_from_slice(&text);
    std::fs::write(bundle, bytes).unwrap();
}

/// `len` bytes of xorshift noise: incompressible, reproducible from `seed`.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x = seed;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 5 s) until something listens on `addr`.
pub fn wait_for_port(addr: &str) {
    assert!(
        port_opens_within(addr, std::time::Duration::from_secs(5)),
        "nothing listens on {addr}"
    );
}

/// Whether something listens on `addr` within `limit` (polled every 50 ms).
pub fn port_opens_within(addr: &str, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The image ID `ids` (from [`image_ids`]) gives `name` on the platform naming `arch`.
pub fn id_for(ids: &[(String, String, String)], name: &str, arch: &str) -> String {
    ids.iter()
        .find(|(n, p, _)| n == name && p.contains(arch))
        .map(|(_, _, id)| id.clone())
        .unwrap_or_else(|| panic!("the bundle has no {name} for {arch}"))
}

/// This machine's architecture as images name it.
pub fn native_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    }
}

/// A bundle (zstd level 1) of one native image `tag` whose only layer holds `len` bytes
/// of noise: slow enough to push or load that something can happen meanwhile.
pub fn noise_bundle(dir: &Path, tag: &'static str, len: usize, seed: u64) -> PathBuf {
    let archive = dir.join(format!("{}.tar", tag.replace(':', "-")));
    let noise = incompressible(len, seed);
    write_docker_archive(
        &archive,
        SyntheticImage {
            tag,
            architecture: Some(native_arch()),
            layers: vec![layer_tar(&[("noise", &noise)])],
            diff_ids: None,
        },
    );
    drop(noise);
    let bundle = dir.join(format!("{}.archpack", tag.replace(':', "-")));
    archpack()
        .args(["create", "-q", "--level", "1", "-o"])
        .arg(&bundle)
        .arg(format!("docker-archive:{}", archive.display()))
        .assert()
        .success();
    bundle
}

/// `shared:1` for amd64 and arm64 whose layers differ in one small file and carry the
/// same 512 KiB after it, as a `--share-parts` bundle (format 2.2): the arm64 layer is
/// stored as a frame of its own plus the amd64 layer's shared frame.
pub fn shared_parts_bundle(dir: &Path) -> PathBuf {
    let data = incompressible(512 << 10, 11);
    let notes = "what every platform has alike\n".repeat(2000);
    let mut sources = Vec::new();
    for arch in ["amd64", "arm64"] {
        let p = dir.join(format!("shared-{arch}.tar"));
        write_image_archive(
            &p,
            &format!("shared:1-{arch}"),
            json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]}}),
            &[layer_tar(&[
                ("bin/app", arch.as_bytes()),
                ("share/data", &data),
                ("share/notes", notes.as_bytes()),
            ])],
        );
        sources.push(format!("docker-archive:{}", p.display()));
    }
    let bundle = dir.join("shared-parts.archpack");
    archpack()
        .args(["create", "-q", "--force", "--share-parts", "-o"])
        .arg(&bundle)
        .args(&sources)
        .assert()
        .success();
    assert_eq!(bundle_index(&bundle)["format"], "archpack-bundle/2.2");
    bundle
}

/// Three images on one base, diverging above it (a base of 300 KiB, then tops of 2, 200
/// and 150 KiB of noise: what can overlap is a quarter of the load): a bundle made from
/// their docker-archives, and each top's diff_id.
pub fn diverging_bundle(dir: &Path) -> (PathBuf, Vec<String>) {
    let base = layer_tar(&[("base/data", &incompressible(300 << 10, 1))]);
    let mut sources = Vec::new();
    let mut tops = Vec::new();
    for (name, kib, seed) in [("lean", 2, 2), ("heavy", 200, 3), ("middle", 150, 4)] {
        let top = layer_tar(&[(
            &format!("{name}/data") as &str,
            &incompressible(kib << 10, seed),
        )]);
        tops.push(format!("sha256:{}", sha256_hex(&top)));
        sources.push(image_source(
            dir,
            name,
            json!({"architecture": native_arch(), "os": "linux", "config": {"Cmd": ["/bin/sh"]}}),
            &[base.clone(), top],
        ));
    }
    let bundle = dir.join("diverging.archpack");
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    create_bundle(&bundle, &sources);
    (bundle, tops)
}

/// `NAME.tar` in `dir`: a docker-archive of `NAME:v1` (`config` over `layers`, as
/// [`write_image_archive`] writes it), as a `create` source.
pub fn image_source(dir: &Path, name: &str, config: Value, layers: &[Vec<u8>]) -> String {
    let archive = dir.join(format!("{name}.tar"));
    write_image_archive(&archive, &format!("{name}:v1"), config, layers);
    format!("docker-archive:{}", archive.display())
}

/// `create -q --level 1` of `sources` to `path` (fast: test layers are noise).
pub fn create_bundle(path: &Path, sources: &[&str]) {
    archpack()
        .args(["create", "-q", "--level", "1", "-o"])
        .arg(path)
        .args(sources)
        .assert()
        .success();
}

/// A docker-archive of one image from its layers and a config document (its
/// `rootfs.diff_ids` set to the layers'); returns the config digest.
pub fn write_image_archive(
    path: &Path,
    tag: &str,
    mut config: Value,
    layers: &[Vec<u8>],
) -> String {
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": [tag], "Layers": names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    for (name, data) in names.iter().zip(layers) {
        add(name, data);
    }
    add(&config_name, &config);
    add("manifest.json", &manifest);
    b.finish().unwrap();
    format!("sha256:{}", sha256_hex(&config))
}

/// A docker-archive's config and layers (small archives only: read whole).
pub fn read_image_archive(path: &Path) -> (Value, Vec<Vec<u8>>) {
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_symlink() {
            let target = entry
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.insert(name, Err(target.trim_start_matches("../").to_string()));
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.insert(name, Ok(data));
    }
    let get = |name: &str| -> Vec<u8> {
        match &files[name] {
            Ok(d) => d.clone(),
            Err(target) => match &files[target.as_str()] {
                Ok(d) => d.clone(),
                Err(_) => panic!("{name}: link to a link"),
            },
        }
    };
    let manifest: Value = serde_json::from_slice(&get("manifest.json")).unwrap();
    let config = serde_json::from_slice(&get(manifest[0]["Config"].as_str().unwrap())).unwrap();
    let layers = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| get(l.as_str().unwrap()))
        .collect();
    (config, layers)
}

/// A site CA and a server certificate for 127.0.0.1 it signed (openssl).
pub fn site_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=archpack-test-ca",
        "-days",
        "2",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// containerd 2.1 from the sid chroot (ARCHPACK_SID_ROOT), alone on a socket of its own
/// under `dir` (a directory in /tmp/apsid, which the chroot sees), as k3s runs it.
/// Killed on drop.
pub struct Containerd {
    pub child: std::process::Child,
    root: String,
    pub sock: String,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        let root = std::env::var("ARCHPACK_SID_ROOT").unwrap();
        let d = dir.display().to_string();
        let sock = format!("{d}/containerd.sock");
        std::fs::write(
            dir.join("config.toml"),
            format!("version = 3\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{sock}\"\n"),
        )
        .unwrap();
        let mount = std::process::Command::new(script("sid-chroot.sh"))
            .args(["mount", &root])
            .status()
            .unwrap();
        assert!(mount.success());
        let child = std::process::Command::new("chroot")
            .args([&root, "containerd", "--config", &format!("{d}/config.toml")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if Path::new(&sock).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Containerd { child, root, sock }
    }

    /// `ctr -n k8s.io ARGS` against it.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("chroot")
            .args([
                self.root.as_str(),
                "ctr",
                "--address",
                &self.sock,
                "-n",
                "k8s.io",
            ])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CNCF distribution (`docker-registry`) on a free loopback port, with its data in a
/// temporary directory; stopped when dropped.
pub struct Registry {
    dir: tempfile::TempDir,
    pub child: std::process::Child,
    pub addr: String,
}

impl Registry {
    pub fn start(user: Option<(&str, &str)>) -> Registry {
        Self::start_with(user, None)
    }

    /// `tls`: (certificate, key) PEM files to serve HTTPS with.
    pub fn start_with(user: Option<(&str, &str)>, tls: Option<(&Path, &Path)>) -> Registry {
        Self::start_full(user, tls, None)
    }

    /// `token`: (realm URL, signing certificate) of a token service to require.
    pub fn start_full(
        user: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
        token: Option<(&str, &Path)>,
    ) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = user {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .unwrap();
            assert!(out.status.success());
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: archpack-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if let Some((realm, cert)) = token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: archpack-test-registry\n    issuer: archpack-test-issuer\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/install-deps.sh installs it)");
        wait_for_port(&addr);
        Registry { dir, child, addr }
    }

    pub fn raw(&self, reference: &str, creds: Option<&str>) -> Option<Value> {
        let mut cmd = std::process::Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = cmd
            .arg(format!("docker://{}/{reference}", self.addr))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// `skopeo copy` of `docker://{source}` into a new OCI layout at `layout` (every blob's
/// digest checked by skopeo), with `extra` flags; returns the copied manifest's config
/// digest (the image ID) and the blobs' total size.
pub fn skopeo_pull(source: &str, layout: &Path, extra: &[&str]) -> (String, u64) {
    let out = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{source}"))
        .arg(format!("oci:{}:x", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy {source} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob =
        |digest: &str| std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let size = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    (
        manifest["config"]["digest"].as_str().unwrap().to_string(),
        size,
    )
}
