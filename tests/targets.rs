//! archpack on every target: the static binaries scripts/build-targets.sh makes, run
//! under qemu-user (scripts/binfmt.sh) for arm64, armv7 and armv6 (`QEMU_CPU=arm1176`, so
//! a v7 instruction fails); loaders carried in a bundle and put in place by
//! `archpack-install` inside busybox-only roots of each architecture; and an emulated
//! arm64 host whose own arm64 dockerd the arm64 archpack probes and loads into.
//!
//! The loader format itself (what a bundle carries, verify, inspect) is tested with
//! small stand-in ELF files, so those tests need nothing but archpack.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

/// The directory with archpack-linux-{arm64,arm-v7,arm-v6} (ARCHPACK_TARGETS).
fn targets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("ARCHPACK_TARGETS")?);
    ["arm64", "arm-v7", "arm-v6"]
        .iter()
        .all(|t| dir.join(format!("archpack-linux-{t}")).exists())
        .then_some(dir)
}

/// Static binaries and qemu-user, or a skip (a failure under scripts/test.sh).
fn need_targets() -> Option<PathBuf> {
    let binfmt = ["qemu-aarch64", "qemu-arm"]
        .iter()
        .all(|q| Path::new("/proc/sys/fs/binfmt_misc").join(q).exists());
    match (targets(), binfmt) {
        (Some(dir), true) => Some(dir),
        _ => {
            assert!(
                std::env::var_os("ARCHPACK_TEST_STRICT").is_none(),
                "this test needs the static binaries (ARCHPACK_TARGETS, scripts/build-targets.sh) and qemu-user (scripts/binfmt.sh)"
            );
            let _ = skip(&[Need::Tool(
                "archpack-static-targets (scripts/build-targets.sh)",
            )]);
            None
        }
    }
}

/// The CPU qemu emulates for a target: an ARM1176 (Pi Zero/1) for arm-v6.
fn qemu_cpu(target: &str) -> Option<&'static str> {
    (target == "arm-v6").then_some("arm1176")
}

fn static_archpack(dir: &Path, target: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(dir.join(format!("archpack-linux-{target}")));
    c.env_remove("SOURCE_DATE_EPOCH")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    if let Some(cpu) = qemu_cpu(target) {
        c.env("QEMU_CPU", cpu);
    }
    c
}

fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("release");
    archpack()
        .args(["keygen", "--no-password", "-o"])
        .arg(&prefix)
        .assert()
        .success();
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

#[test]
fn static_binaries_run_every_command_on_their_arm_targets() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let Some(bins) = need_targets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path());
    let bundle = fixture_bundle(dir.path(), &["--sign", key.to_str().unwrap()]);
    // A --level 19 bundle: its windows must be ones a 32-bit zstd decodes.
    let l19 = dir.path().join("l19.archpack");
    archpack()
        .args(["create", "-q", "--level", "19", "-o"])
        .arg(&l19)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-arm64.tar").display()
        ))
        .assert()
        .success();
    let engine = TestEngine::start();
    let ids = image_ids(&bundle);
    for (target, machine) in [
        ("arm64", "aarch64"),
        ("arm-v7", "armv7l"),
        ("arm-v6", "armv6l"),
    ] {
        static_archpack(&bins, target)
            .arg("--version")
            .assert()
            .success()
            .stdout(predicates::str::contains("archpack "));
        let out = static_archpack(&bins, target)
            .args(["platform", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{target}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["inputs"]["kernel"], machine, "{target}: {v}");
        static_archpack(&bins, target)
            .arg("inspect")
            .arg(&bundle)
            .assert()
            .success()
            .stdout(predicates::str::contains("svc:v1.0"));
        static_archpack(&bins, target)
            .args(["verify", "--trust"])
            .arg(&public)
            .arg(&bundle)
            .assert()
            .success()
            .stdout(predicates::str::contains("OK: signed by key"));
        static_archpack(&bins, target)
            .args(["verify", "--allow-unsigned"])
            .arg(&l19)
            .assert()
            .success();
        let out_file = dir.path().join(format!("{target}.oci.tar"));
        static_archpack(&bins, target)
            .args([
                "extract",
                "--platform",
                "linux/arm64",
                "--format",
                "oci-archive",
                "--trust",
            ])
            .arg(&public)
            .arg("-o")
            .arg(&out_file)
            .arg(&bundle)
            .assert()
            .success();
        assert!(out_file.exists());
        // Into a real engine, over its socket.
        static_archpack(&bins, target)
            .env("DOCKER_HOST", &engine.host)
            .args(["load", "-q", "--platform", "linux/arm64", "--trust"])
            .arg(&public)
            .arg(&bundle)
            .assert()
            .success();
        assert_eq!(
            engine
                .inspect("svc:v1.0", "{{.Id}} {{.Architecture}}")
                .as_deref(),
            Some(format!("{} arm64", id_for(&ids, "svc:v1.0", "arm64")).as_str()),
            "{target}"
        );
        serve_on_target(&bins, target, &bundle, &public, &ids);
    }
    // The v7 build on an ARMv6 CPU stops at its first v7 instruction: the v6 run above
    // really was on a v6 CPU.
    let out = Std::new(bins.join("archpack-linux-arm-v7"))
        .env("QEMU_CPU", "arm1176")
        .arg("--version")
        .output()
        .unwrap();
    assert!(!out.status.success(), "armv7 code ran on an ARM1176");
}

/// The target's binary serves `bundle` (signed by `public`): a zstd client and a gzip
/// client each get the arm64 platform's config and first layer, the bytes hashing to the
/// digests their manifests name (tokio, hyper and the parallel gzip on the board).
fn serve_on_target(
    bins: &Path,
    target: &str,
    bundle: &Path,
    public: &Path,
    ids: &[(String, String, String)],
) {
    let server = ServeOnTarget::start(
        bins,
        target,
        &bundle.with_file_name(format!("cache-{target}")),
        &["--trust".as_ref(), public.as_os_str(), bundle.as_os_str()],
    );
    let addr = &server.addr;
    let fetch = |path: &str, user_agent: &str| -> Vec<u8> {
        let mut r = ureq::get(format!("http://{addr}{path}"))
            .header("User-Agent", user_agent)
            .call()
            .unwrap_or_else(|e| panic!("{target}: GET {path}: {e}"));
        r.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap()
    };
    for user_agent in ["containerd/2.1.4", "docker/20.10.24"] {
        let index: Value =
            serde_json::from_slice(&fetch("/v2/svc/manifests/v1.0", user_agent)).unwrap();
        let arm64 = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == "arm64")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let manifest: Value =
            serde_json::from_slice(&fetch(&format!("/v2/svc/manifests/{arm64}"), user_agent))
                .unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap();
        assert_eq!(config, id_for(ids, "svc:v1.0", "arm64"), "{target}");
        for digest in [config, manifest["layers"][0]["digest"].as_str().unwrap()] {
            let blob = fetch(&format!("/v2/svc/blobs/{digest}"), user_agent);
            assert_eq!(
                format!("sha256:{}", sha256_hex(&blob)),
                digest,
                "{target} {user_agent}"
            );
        }
    }
}

/// The target's static binary running `serve` with `args` on a free loopback port, its
/// gzip digest cache in `cache`; killed on drop.
struct ServeOnTarget {
    child: std::process::Child,
    addr: String,
}

impl ServeOnTarget {
    /// Started and listening (under emulation the start pass, learning gzip digests,
    /// takes seconds, not milliseconds).
    fn start(bins: &Path, target: &str, cache: &Path, args: &[&std::ffi::OsStr]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = Std::new(bins.join(format!("archpack-linux-{target}")));
        if let Some(cpu) = qemu_cpu(target) {
            command.env("QEMU_CPU", cpu);
        }
        let child = command
            .env("XDG_CACHE_HOME", cache)
            .args(["serve", "-q", "--listen", &addr])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = ServeOnTarget { child, addr };
        assert!(
            port_opens_within(&server.addr, std::time::Duration::from_secs(120)),
            "{target}: serve never listened on {}",
            server.addr
        );
        server
    }
}

impl Drop for ServeOnTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root holding only busybox (static) for `arch`, with `/dev/null`.
fn busybox_root(dir: &Path, arch: &str) -> PathBuf {
    let root = dir.join(format!("root-{arch}"));
    for d in ["bin", "work", "dev", "proc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let deb = std::fs::read_dir(fixtures().join("debs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("_{arch}.deb")))
        .unwrap_or_else(|| panic!("no busybox-static for {arch} in the fixtures"));
    let unpacked = Std::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO ./bin/busybox > '{}/bin/busybox' && chmod 755 '{}/bin/busybox'",
            deb.display(),
            root.display(),
            root.display()
        ))
        .status()
        .unwrap();
    assert!(unpacked.success());
    let installed = Std::new("chroot")
        .arg(&root)
        .args(["/bin/busybox", "--install", "-s", "/bin"])
        .status()
        .unwrap();
    assert!(installed.success(), "{arch}");
    let null = Std::new("mknod")
        .args(["-m", "666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(null.success());
    root
}

/// `tar -xf BUNDLE archpack-install && sh archpack-install` inside `root`; its output.
fn install_in(root: &Path, cpu: Option<&str>) -> std::process::Output {
    let mut c = Std::new("chroot");
    c.arg(root).args([
        "/bin/sh",
        "-c",
        "cd /work && rm -f archpack archpack-install && tar -xf app.archpack archpack-install && sh archpack-install && ./archpack --version",
    ]);
    if let Some(cpu) = cpu {
        c.env("QEMU_CPU", cpu);
    }
    c.output().unwrap()
}

#[test]
fn archpack_install_picks_the_right_binary_in_busybox_only_roots() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let Some(bins) = need_targets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("app.archpack");
    archpack()
        .args(["create", "-q", "--loaders"])
        .arg(&bins)
        .args([
            "--loaders-for",
            "linux/arm64,linux/arm/v7,linux/arm/v6",
            "-o",
        ])
        .arg(&bundle)
        .arg(format!(
            "docker-archive:{}",
            fixtures().join("svc-arm64.tar").display()
        ))
        .assert()
        .success();
    // (busybox arch, qemu CPU, the loader it must get)
    for (arch, cpu, want) in [
        ("arm64", None, "linux/arm64"),
        ("armhf", None, "linux/arm/v7"),
        ("armel", Some("arm1176"), "linux/arm/v6"),
    ] {
        let root = busybox_root(dir.path(), arch);
        std::fs::copy(&bundle, root.join("work/app.archpack")).unwrap();
        let out = install_in(&root, cpu);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{arch}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("wrote ./archpack for {want}")),
            "{arch}: {text}"
        );
        assert!(text.contains("archpack 0.1"), "{arch}: {text}");
    }
    // A 32-bit userland on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4): uname says
    // aarch64, /bin/sh is ELF32: the arm/v7 binary.
    let root = dir.path().join("root-armhf");
    std::fs::remove_file(root.join("bin/uname")).unwrap();
    std::fs::write(root.join("bin/uname"), "#!/bin/sh\necho aarch64\n").unwrap();
    std::fs::set_permissions(
        root.join("bin/uname"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = install_in(&root, None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wrote ./archpack for linux/arm/v7"), "{text}");

    // A damaged loader is refused (sha256 against the index), and nothing is written.
    let index = bundle_index(&bundle);
    let arm64 = index["loaders"]["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == "arm64")
        .unwrap();
    let at = arm64["offset"].as_u64().unwrap() as usize + 1000;
    let root = dir.path().join("root-arm64");
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[at] ^= 0x55;
    std::fs::write(root.join("work/app.archpack"), &bytes).unwrap();
    let out = install_in(&root, None);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
    assert!(!root.join("work/archpack").exists());
}

/// For a site that trusts nothing unsigned, the README's check by hand: minisign on the
/// index, sha256sum on the loader, both without archpack.
#[test]
fn a_loader_checks_by_hand_with_minisign_and_sha256sum() {
    if skip(&[Need::Tool("minisign"), Need::Tool("sha256sum")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path());
    let loaders = fake_loaders(dir.path());
    let bundle = loader_bundle(dir.path(), &loaders, &["--sign", key.to_str().unwrap()]);
    let script = format!(
        "set -e; cd '{d}'; tar -xf '{b}' archpack-index.json archpack-index.json.minisig archpack-loaders/archpack-linux-arm64.gz; \
         minisign -Vm archpack-index.json -p '{p}' >/dev/null; \
         want=$(python3 -c 'import json;i=json.load(open(\"archpack-index.json\"));print([b[\"digest\"] for b in i[\"loaders\"][\"binaries\"] if b[\"target\"]==\"arm64\"][0][7:])'); \
         got=$(sha256sum archpack-loaders/archpack-linux-arm64.gz | cut -d' ' -f1); [ \"$want\" = \"$got\" ]",
        d = dir.path().display(),
        b = bundle.display(),
        p = public.display()
    );
    let out = Std::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stand-ins for the four static binaries: ELF headers of the right machine, class and
/// float ABI, and some bytes.
fn fake_loaders(dir: &Path) -> PathBuf {
    let out = dir.join("loaders");
    std::fs::create_dir_all(&out).unwrap();
    for (target, class, machine, flags) in [
        ("amd64", 2u8, 62u16, 0u32),
        ("arm64", 2, 183, 0),
        ("arm-v7", 1, 40, 0x0500_0400),
        ("arm-v6", 1, 40, 0x0500_0200),
    ] {
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = class;
        elf[5] = 1;
        elf[6] = 1;
        elf[18..20].copy_from_slice(&machine.to_le_bytes());
        elf[36..40].copy_from_slice(&flags.to_le_bytes());
        for (i, b) in elf.iter_mut().enumerate().skip(64) {
            *b = (i % 251) as u8 ^ target.len() as u8;
        }
        std::fs::write(out.join(format!("archpack-linux-{target}")), elf).unwrap();
    }
    out
}

fn loader_bundle(dir: &Path, loaders: &Path, extra: &[&str]) -> PathBuf {
    let sources = synthetic_sources(dir);
    let bundle = dir.join("with-loaders.archpack");
    archpack()
        .args(["create", "-q", "--force", "--loaders"])
        .arg(loaders)
        .args(extra)
        .arg("-o")
        .arg(&bundle)
        .args(&sources)
        .assert()
        .success();
    bundle
}

/// The two synthetic archives of common::synthetic_bundle (amd64 and arm64).
fn synthetic_sources(dir: &Path) -> Vec<String> {
    let _ = synthetic_bundle(dir);
    ["amd64", "arm64"]
        .iter()
        .map(|a| {
            format!(
                "docker-archive:{}",
                dir.join(format!("app-{a}.tar")).display()
            )
        })
        .collect()
}

#[test]
fn loaders_are_listed_signed_verified_and_skipped_by_loads() {
    let dir = tempfile::tempdir().unwrap();
    let loaders = fake_loaders(dir.path());
    let bundle = loader_bundle(dir.path(), &loaders, &[]);
    let index = bundle_index(&bundle);
    assert_eq!(index["format"], "archpack-bundle/1.1");
    let targets: Vec<&str> = index["loaders"]["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap())
        .collect();
    // The bundle's platforms only: amd64 and arm64.
    assert_eq!(targets, ["amd64", "arm64"]);
    let listing = Std::new("tar").arg("tf").arg(&bundle).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(names.lines().any(|l| l == "archpack-install"), "{names}");
    assert!(names.contains("archpack-loaders/archpack-linux-arm64.gz"));
    let info = inspect_json(&bundle);
    assert_eq!(info["loaders"].as_array().unwrap().len(), 2);
    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&bundle)
        .assert()
        .success();
    // Without loaders the same inputs still make a 1.0 bundle.
    let plain = synthetic_bundle(dir.path());
    assert_eq!(bundle_index(&plain)["format"], "archpack-bundle/1.0");

    // --loaders-for chooses; a platform with no loader build is refused by name.
    let more = dir.path().join("more.archpack");
    archpack()
        .args(["create", "-q", "--loaders"])
        .arg(&loaders)
        .args(["--loaders-for", "linux/arm/v7,linux/arm/v6", "-o"])
        .arg(&more)
        .args(synthetic_sources(dir.path()))
        .assert()
        .success();
    let t: Vec<String> = bundle_index(&more)["loaders"]["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(t, ["arm-v7", "arm-v6"]);
    archpack()
        .args(["create", "-q", "--force", "--loaders"])
        .arg(&loaders)
        .args(["--loaders-for", "linux/s390x", "-o"])
        .arg(&more)
        .args(synthetic_sources(dir.path()))
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "no archpack loader is built for linux/s390x",
        ));
    // A loader of the wrong kind for its name is refused before anything is written.
    std::fs::copy(
        loaders.join("archpack-linux-arm-v7"),
        loaders.join("archpack-linux-arm-v6"),
    )
    .unwrap();
    let wrong = dir.path().join("wrong.archpack");
    archpack()
        .args(["create", "-q", "--loaders"])
        .arg(&loaders)
        .args(["--loaders-for", "linux/arm/v6", "-o"])
        .arg(&wrong)
        .args(synthetic_sources(dir.path()))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("hard-float"));
    assert!(!wrong.exists());

    // A flipped byte in a loader: verify names it (exit 3); extracting images is not
    // touched by it.
    let b = &index["loaders"]["binaries"][1];
    let at = b["offset"].as_u64().unwrap() as usize + 100;
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&bundle, bytes).unwrap();
    let out = archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("archpack-linux-arm64.gz"));
    archpack()
        .args([
            "extract",
            "--allow-unsigned",
            "--platform",
            "linux/arm64",
            "-o",
        ])
        .arg(dir.path().join("x.tar"))
        .arg(&bundle)
        .assert()
        .success();
}

/// The static binary resolves names without glibc's NSS: `localhost` and a name from
/// `/etc/hosts` (bind-mounted over, in a private mount namespace) both reach a registry.
#[test]
fn the_static_binary_pushes_to_localhost_and_to_a_name_from_etc_hosts() {
    if skip(&[
        Need::Fixtures,
        Need::OwnEngine,
        Need::Tool("docker-registry"),
        Need::Tool("unshare"),
    ]) {
        return;
    }
    let Some(bins) = need_targets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut registry = Std::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(&format!("127.0.0.1:{port}"));
    let bundle = fixture_bundle(dir.path(), &["--platform", "linux/arm64"]);
    std::fs::write(
        dir.path().join("hosts"),
        "127.0.0.1 localhost\n127.0.0.1 site-registry.example site-registry\n",
    )
    .unwrap();
    for host in ["localhost", "site-registry.example"] {
        let script = format!(
            "mount --bind '{hosts}' /etc/hosts && exec '{bin}' push --allow-unsigned --insecure --json '{bundle}' {host}:{port}/static",
            hosts = dir.path().join("hosts").display(),
            bin = bins.join("archpack-linux-arm64").display(),
            bundle = bundle.display(),
        );
        let out = Std::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .env("DOCKER_CONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["images"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with(host));
    }
    let _ = registry.kill();
    let _ = registry.wait();
}

/// An emulated arm64 host: bookworm arm64's own dockerd under qemu-user, probed and
/// loaded by the arm64 archpack; a container of the arm64 image says `aarch64`; and the
/// arm64 archpack serving the bundle to that engine's pull.
#[test]
fn on_an_emulated_arm64_host_the_arm64_binary_probes_and_loads_arm64() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    let Some(bins) = need_targets() else { return };
    let ready = std::env::var_os("ARCHPACK_ARM64_ROOT")
        .is_some_and(|r| Path::new(&r).join(".archpack-complete").exists());
    if !ready {
        assert!(
            std::env::var_os("ARCHPACK_TEST_STRICT").is_none(),
            "this test needs the arm64 chroot (ARCHPACK_ARM64_ROOT)"
        );
        return;
    }
    let engine = TestEngine::start_kind(EngineKind::Arm64Docker, "");
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture_bundle(dir.path(), &[]);
    let arm64 = |args: &[&str]| {
        let mut c = static_archpack(&bins, "arm64");
        c.env("DOCKER_HOST", &engine.host).args(args);
        c
    };
    let out = arm64(&["platform", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decidedBy"], "engine", "{v}");
    assert_eq!(v["platform"], "linux/arm64/v8", "{v}");
    let out = arm64(&["load", "--json", "-q", "--allow-unsigned"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["platform"], "linux/arm64/v8");
    let ids = image_ids(&bundle);
    assert_eq!(
        engine
            .inspect("svc:v1.0", "{{.Id}} {{.Architecture}}")
            .as_deref(),
        Some(format!("{} arm64", id_for(&ids, "svc:v1.0", "arm64")).as_str())
    );
    // Host networking: with a network namespace of its own dockerd adds a prestart hook
    // that runs /proc/DOCKERD/exe, which under emulation is qemu, not dockerd.
    let run = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "svc:v1.0",
        "uname",
        "-m",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "aarch64");

    // The same board as the site's registry: the arm64 binary serves the bundle, and the
    // arm64 engine (Docker 20.10: the gzip set) pulls other:v2 for its own platform.
    let other = id_for(&ids, "other:v2", "arm64");
    let rmi = engine.docker(&["rmi", "-f", &other]);
    assert!(
        rmi.status.success(),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
    let server = ServeOnTarget::start(
        &bins,
        "arm64",
        &dir.path().join("cache"),
        &["--allow-unsigned".as_ref(), bundle.as_os_str()],
    );
    let reference = format!("{}/other:v2", server.addr);
    let pull = engine.docker(&["pull", "-q", &reference]);
    drop(server);
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    assert_eq!(
        engine
            .inspect(&reference, "{{.Id}} {{.Architecture}}")
            .as_deref(),
        Some(format!("{other} arm64").as_str())
    );
}
