//! Delta bundles: `inventory`, `create --base` (an inventory or an earlier bundle), and
//! `load` of a delta on both Docker stores — onto a site with the base, onto an empty
//! engine (refused, nothing loaded), with a corrupt patch (refused, nothing tagged),
//! after a base layer left the engine (refused, naming it), and with `--base` given on
//! the site. The format side (reproducible, patches, caps, inspect, verify, what
//! `extract`/`push` and older readers say) needs nothing but archpack.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A model file: `len` bytes of noise; release 2 changes every tenth 4 KiB block.
fn model(len: usize, release: u32) -> Vec<u8> {
    let mut m = incompressible(len, 42);
    if release > 1 {
        let fresh = incompressible(len, 4242);
        for block in (0..len / 4096).step_by(10) {
            m[block * 4096..(block + 1) * 4096]
                .copy_from_slice(&fresh[block * 4096..(block + 1) * 4096]);
        }
    }
    m
}

/// Release `n` of an app built on the fixture svc image: its base layer, an app layer
/// (version file, a 512 KiB model), then the fixture's /etc/app layer again — the same
/// diff_id as release 1's top layer but, on top of another app layer, another chain.
fn release(dir: &Path, n: u32) -> PathBuf {
    let (config, layers) = read_image_archive(&fixtures().join("svc-amd64.tar"));
    let version = format!("v{n}\n");
    let model = model(512 << 10, n);
    let app = layer_tar(&[
        ("app/version.txt", version.as_bytes()),
        ("app/model.bin", &model),
    ]);
    let path = dir.join(format!("app-v{n}.tar"));
    write_image_archive(
        &path,
        &format!("app:v{n}"),
        config,
        &[layers[0].clone(), app, layers[2].clone()],
    );
    path
}

fn source(path: &Path) -> String {
    format!("docker-archive:{}", path.display())
}

/// `create` with SOURCE_DATE_EPOCH=0; the `--json` report.
fn create(out: &Path, args: &[&str], sources: &[String]) -> Value {
    let o = archpack()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["create", "-q", "--json", "--force", "-o"])
        .arg(out)
        .args(args)
        .args(sources)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The (config, manifest) digests of `name` in a bundle.
fn ids(bundle: &Path, name: &str) -> (String, String) {
    let index = bundle_index(bundle);
    let image = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {}", bundle.display()));
    let p = &image["platforms"][0];
    (
        p["config"].as_str().unwrap().to_string(),
        p["manifest"].as_str().unwrap().to_string(),
    )
}

fn load(engine: &TestEngine, bundle: &Path, extra: &[&str]) -> std::process::Output {
    engine
        .archpack()
        .args(["load", "-q", "--json", "--allow-unsigned"])
        .args(extra)
        .arg(bundle)
        .output()
        .unwrap()
}

fn loaded(engine: &TestEngine, bundle: &Path, extra: &[&str]) -> Value {
    let out = load(engine, bundle, extra);
    assert!(
        out.status.success(),
        "{}: load of {} failed: {}",
        engine.kind.name(),
        bundle.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `app:v2` is in the engine, and what it holds when it runs.
fn check_release_2(engine: &TestEngine, full: &Path) {
    let (config, manifest) = ids(full, "app:v2");
    let expected = engine.kind.id_of(&config, &manifest);
    assert_eq!(
        engine
            .inspect("app:v2", "{{.Id}} {{.Architecture}}")
            .as_deref(),
        Some(format!("{expected} amd64").as_str()),
        "{}: app:v2 is not release 2 as the full bundle has it",
        engine.kind.name()
    );
    if !engine.kind.runs_containers() {
        return;
    }
    let run = engine.docker(&[
        "run",
        "--rm",
        "app:v2",
        "sh",
        "-c",
        "cat /app/version.txt; wc -c </app/model.bin",
    ]);
    assert!(
        run.status.success(),
        "{}: running app:v2: {}",
        engine.kind.name(),
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.starts_with("v2\n"),
        "{}: the container says {said:?}",
        engine.kind.name()
    );
    assert!(said.contains(&(512 << 10).to_string()), "{said:?}");
}

fn remove(engine: &TestEngine, tags: &[&str]) {
    for t in tags {
        let out = engine.docker(&["rmi", "-f", t]);
        assert!(
            out.status.success(),
            "rmi {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The whole site story on one engine.
fn site_story(kind: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (r1, r2) = (release(d, 1), release(d, 2));
    let full1 = d.join("app-1.0.archpack");
    let full2 = d.join("app-1.1.archpack");
    create(&full1, &[], &[source(&r1)]);
    create(&full2, &[], &[source(&r2)]);
    let delta = d.join("app-1.1.delta.archpack");
    let report = create(&delta, &["--base", full1.to_str().unwrap()], &[source(&r2)]);
    assert_eq!(report["delta"]["layersPatched"], 1, "{report}");
    assert_eq!(report["delta"]["layersRequired"], 2, "{report}");
    let engine = TestEngine::start_kind(kind, "");

    // An empty engine: refused before a byte is sent, naming what is missing and where.
    let out = load(&engine, &delta, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", kind.name());
    let said = String::from_utf8_lossy(&out.stderr);
    let base_layer = bundle_index(&full1)["members"][0]["diffId"]
        .as_str()
        .unwrap()
        .to_string();
    for needed in [
        "lacks what it needs",
        "app-1.0.archpack",
        &base_layer,
        "nothing was loaded",
    ] {
        assert!(said.contains(needed), "{}: {said}", kind.name());
    }
    assert!(
        engine.tags().is_empty(),
        "{}: {:?}",
        kind.name(),
        engine.tags()
    );

    // A site with release 1: the delta loads, and is release 2 exactly.
    loaded(&engine, &full1, &[]);
    let report = loaded(&engine, &delta, &[]);
    assert_eq!(report["delta"]["layersPatched"], 1, "{report}");
    if kind == EngineKind::Docker28Containerd {
        // The engine holds release 1's manifest, so the blobs it names: none is sent.
        assert_eq!(report["delta"]["layersInEngine"], 2, "{report}");
    } else if kind == EngineKind::Podman5 {
        // podman reads only whole archives: both are read back from its export.
        assert_eq!(report["delta"]["layersFromEngine"], 2, "{report}");
    } else {
        // The base layer's chain is there; /etc/app's chain is not (it sits on another
        // app layer now): that layer is read back from the engine's export of app:v1.
        assert_eq!(report["layersPresent"], 1, "{report}");
        assert_eq!(report["delta"]["layersFromEngine"], 1, "{report}");
    }
    check_release_2(&engine, &full2);

    // A corrupt patch: refused, nothing tagged.
    remove(&engine, &["app:v2"]);
    let corrupt = d.join("corrupt.archpack");
    std::fs::copy(&delta, &corrupt).unwrap();
    let index = bundle_index(&corrupt);
    let patch = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "layer-patch")
        .unwrap();
    let at = patch["offset"].as_u64().unwrap() + patch["size"].as_u64().unwrap() / 2;
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[at as usize] ^= 0x55;
    std::fs::write(&corrupt, bytes).unwrap();
    let out = load(&engine, &corrupt, &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}: {}",
        kind.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        engine.inspect("app:v2", "{{.Id}}").is_none(),
        "{}: app:v2 was tagged",
        kind.name()
    );

    // From the site's inventory: layers it holds are left out (no patches: an inventory
    // has no bytes to patch against).
    let inventory = d.join("site-42.inventory");
    engine
        .archpack()
        .args(["inventory", "-q", "-o"])
        .arg(&inventory)
        .assert()
        .success();
    let inv: Value = serde_json::from_slice(&std::fs::read(&inventory).unwrap()).unwrap();
    assert_eq!(inv["format"], "archpack-inventory/1.0");
    assert_eq!(inv["name"], "site-42");
    assert_eq!(inv["platform"]["architecture"], native_arch());
    assert!(inv["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["diffId"] == base_layer.as_str()));
    let from_inventory = d.join("app-1.1.site-42.archpack");
    let report = create(
        &from_inventory,
        &["--base", inventory.to_str().unwrap()],
        &[source(&r2)],
    );
    assert_eq!(report["delta"]["layersRequired"], 2, "{report}");
    assert_eq!(report["delta"]["layersPatched"], 0, "{report}");
    let report = loaded(&engine, &from_inventory, &[]);
    // The containerd store is sent every blob it cannot be shown to hold: read back
    // and compressed as the writer did, to the digest the manifest names.
    let from_engine = if kind == EngineKind::Docker20 { 1 } else { 2 };
    assert_eq!(report["delta"]["layersFromEngine"], from_engine, "{report}");
    check_release_2(&engine, &full2);

    // A base layer that left the engine after the inventory: refused, naming it.
    remove(&engine, &["app:v2", "app:v1"]);
    let out = load(&engine, &from_inventory, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", kind.name());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&base_layer) && said.contains("site-42"),
        "{}: {said}",
        kind.name()
    );
    assert!(
        engine.tags().is_empty(),
        "{}: {:?}",
        kind.name(),
        engine.tags()
    );

    // The base bundle given on the site instead: everything comes from it, with the
    // delta itself arriving on standard input.
    let out = engine
        .archpack()
        .args(["load", "-q", "--json", "--allow-unsigned", "--base"])
        .arg(&full1)
        .arg("-")
        .pipe_stdin(&delta)
        .unwrap()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["delta"]["layersFromBase"], 2, "{report}");
    check_release_2(&engine, &full2);
}

#[test]
fn a_delta_loads_where_its_base_is_on_the_classic_store() {
    if skip(&[Need::Fixtures, Need::OwnEngine]) {
        return;
    }
    site_story(EngineKind::Docker20);
}

#[test]
fn a_delta_loads_where_its_base_is_on_the_containerd_store() {
    if skip(&[Need::Fixtures, Need::OwnEngine, Need::SidEngines]) {
        return;
    }
    site_story(EngineKind::Docker28Containerd);
}

#[test]
fn a_delta_loads_where_its_base_is_on_podman() {
    if skip(&[Need::Fixtures, Need::OwnEngine, Need::SidEngines]) {
        return;
    }
    site_story(EngineKind::Podman5);
}

/// Two releases of a synthetic image (no engine needed).
fn synthetic_releases(dir: &Path) -> (PathBuf, PathBuf) {
    let base = layer_tar(&[("bin/tool", &incompressible(256 << 10, 1))]);
    let paths: Vec<PathBuf> = [1, 2]
        .iter()
        .map(|&n| {
            let app = layer_tar(&[("app/model.bin", &model(1 << 20, n))]);
            let p = dir.join(format!("syn-v{n}.tar"));
            write_image_archive(
                &p,
                &format!("syn:v{n}"),
                json!({"architecture": "amd64", "os": "linux", "config": {}}),
                &[base.clone(), app],
            );
            p
        })
        .collect();
    (paths[0].clone(), paths[1].clone())
}

#[test]
fn deltas_are_reproducible_small_and_say_what_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v1, v2) = synthetic_releases(d);
    let base = d.join("base.archpack");
    create(&base, &[], &[source(&v1)]);
    let full = d.join("full.archpack");
    create(&full, &[], &[source(&v2)]);
    let delta = d.join("delta.archpack");
    let report = create(
        &delta,
        &["--base", base.to_str().unwrap(), "--threads", "1"],
        &[source(&v2)],
    );
    let first = std::fs::read(&delta).unwrap();
    create(
        &delta,
        &["--base", base.to_str().unwrap(), "--threads", "0"],
        &[source(&v2)],
    );
    assert_eq!(
        first,
        std::fs::read(&delta).unwrap(),
        "a delta is not reproducible"
    );

    // 10% of the model changed: the patch is about that, the delta far below the full.
    let full_len = std::fs::metadata(&full).unwrap().len();
    assert!(
        first.len() as u64 * 5 < full_len,
        "delta {} B, full {full_len} B",
        first.len()
    );
    assert_eq!(report["delta"]["layersPatched"], 1);
    assert_eq!(report["delta"]["layersRequired"], 1);

    let index = bundle_index(&delta);
    assert_eq!(index["format"], "archpack-bundle/2.0");
    assert_eq!(index["requires"], json!(["delta"]));
    // Same images as the full bundle: the manifests and configs are byte for byte.
    assert_eq!(ids(&delta, "syn:v2"), ids(&full, "syn:v2"));
    // No OCI view: a delta is not a complete image layout.
    assert!(!index["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "index.json"));

    let inspect = inspect_json(&delta);
    let patches = inspect["delta"]["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    assert!(patches[0]["memory"].as_u64().unwrap() >= 1 << 20);
    assert!(patches[0]["referenceHeldBy"]
        .as_str()
        .unwrap()
        .contains("syn:v1"));
    assert_eq!(
        inspect["delta"]["required"][0]["usedBy"],
        json!(["syn:v2 (linux/amd64)"])
    );

    archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&delta)
        .assert()
        .success();
    // extract and push say plainly that a delta needs its base.
    for cmd in [
        vec!["extract", "-o", "/dev/null"],
        vec!["push", "--insecure"],
    ] {
        let mut c = archpack();
        c.args(&cmd[..1]).arg("--allow-unsigned").arg(&delta);
        if cmd[0] == "push" {
            c.arg("127.0.0.1:9");
        }
        c.args(&cmd[1..]);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("delta bundle made against base (base.archpack)"),
            "{said}"
        );
        assert!(said.contains("full bundle"), "{said}");
    }
}

#[test]
fn a_layer_that_moved_is_patched_against_the_base_layer_sharing_most() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v1, _) = synthetic_releases(d);
    let base = d.join("base.archpack");
    create(&base, &[], &[source(&v1)]);
    // Release 3 under another name: a new layer in the middle pushes the app layer up a
    // place, so no base layer sits at its position in the same repository.
    let (_, layers) = read_image_archive(&v1);
    let app = layer_tar(&[("app/model.bin", &model(1 << 20, 2))]);
    let moved = d.join("moved.tar");
    write_image_archive(
        &moved,
        "renamed:v3",
        json!({"architecture": "amd64", "os": "linux", "config": {}}),
        &[layers[0].clone(), layer_tar(&[("etc/motd", b"hi\n")]), app],
    );
    let delta = d.join("delta.archpack");
    let report = create(
        &delta,
        &["--base", base.to_str().unwrap()],
        &[source(&moved)],
    );
    assert_eq!(report["delta"]["layersPatched"], 1, "{report}");
    let inspect = inspect_json(&delta);
    let patch = &inspect["delta"]["patches"][0];
    assert!(
        patch["referenceHeldBy"]
            .as_str()
            .unwrap()
            .starts_with("syn:v1"),
        "{patch}"
    );
    assert!(
        patch["patchBytes"].as_u64().unwrap() * 4 < patch["layerBytes"].as_u64().unwrap(),
        "{patch}"
    );
}

#[test]
fn patches_can_be_turned_off_or_capped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v1, v2) = synthetic_releases(d);
    let base = d.join("base.archpack");
    create(&base, &[], &[source(&v1)]);
    let b = base.to_str().unwrap();
    for args in [vec!["--no-patches"], vec!["--patch-max-ref", "512KiB"]] {
        let delta = d.join("delta.archpack");
        let mut all = vec!["--base", b];
        all.extend(&args);
        let report = create(&delta, &all, &[source(&v2)]);
        assert_eq!(report["delta"]["layersPatched"], 0, "{args:?}: {report}");
        assert_eq!(report["delta"]["layersWhole"], 1, "{args:?}: {report}");
    }
    for (bad, said) in [
        ("1GiB", "at most"),
        ("40MB", "KiB, MiB or GiB"),
        ("lots", "expected a number"),
    ] {
        let out = archpack()
            .args(["create", "-q", "--patch-max-ref", bad, "--base", b, "-o"])
            .arg(d.join("x.archpack"))
            .arg(source(&v2))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!d.join("x.archpack").exists());
    }
    // A base that is neither an inventory nor a bundle is named.
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    let out = archpack()
        .args(["create", "-q", "--base"])
        .arg(d.join("notes.txt"))
        .arg("-o")
        .arg(d.join("x.archpack"))
        .arg(source(&v2))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("notes.txt") && said.contains("neither an inventory"),
        "{said}"
    );
}

#[test]
fn readers_refuse_what_they_do_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (v1, v2) = synthetic_releases(d);
    let base = d.join("base.archpack");
    create(&base, &[], &[source(&v1)]);
    let delta = d.join("delta.archpack");
    create(&delta, &["--base", base.to_str().unwrap()], &[source(&v2)]);
    // A feature this archpack does not know is refused by name, not misread.
    let future = d.join("future.archpack");
    std::fs::copy(&delta, &future).unwrap();
    rewrite_index(&future, |i| i["requires"] = json!(["delta", "volumes-v9"]));
    let out = archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&future)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("\"volumes-v9\"") && said.contains("upgrade archpack"),
        "{said}"
    );
    // A newer major too.
    rewrite_index(&future, |i| i["format"] = json!("archpack-bundle/3.0"));
    let out = archpack().args(["inspect"]).arg(&future).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer than this archpack reads"));
    // A delta that does not say it is one is inconsistent.
    let unmarked = d.join("unmarked.archpack");
    std::fs::copy(&delta, &unmarked).unwrap();
    rewrite_index(&unmarked, |i| {
        i["requires"] = json!([]);
    });
    let out = archpack()
        .args(["verify", "--allow-unsigned"])
        .arg(&unmarked)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The spec's reference reader (1.x and 2.0) reads the delta.
    reference_read(&delta, &[]);
}

#[test]
fn load_of_a_full_bundle_takes_no_base() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path());
    let out = archpack()
        .args(["load", "--allow-unsigned", "--base"])
        .arg(&bundle)
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--base is for delta bundles"));
}
