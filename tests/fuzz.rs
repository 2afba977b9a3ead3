//! Bounded property fuzzing of the readers (run in CI; `PROPTEST_CASES=N` for longer
//! runs by hand). Mutated and truncated bundles and source archives must give an error
//! or a verified result, never a panic.

mod common;

use archpack::deliver::archive::{
    write_docker_archive as stream_docker_archive, NoExtraLayers, Skip,
};
use archpack::digest::Digest;
use archpack::docker::Endpoint;
use archpack::format::BundleReader;
use archpack::platform::probe::forced;
use archpack::platform::select;
use archpack::progress::Silent;
use archpack::source::{self, LayerSink, SourceError, SourceRef};
use common::*;
use proptest::prelude::*;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A small two-arch bundle and one of its source archives, made once.
fn seeds() -> &'static (Vec<u8>, Vec<u8>) {
    static SEEDS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let shared = layer_tar(&[("app/hello.txt", b"hello\n")]);
        let mut sources = Vec::new();
        for arch in ["amd64", "arm64"] {
            let p = dir.path().join(format!("{arch}.tar"));
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
        let bundle = dir.path().join("b.archpack");
        archpack()
            .args(["create", "-q", "-o"])
            .arg(&bundle)
            .args(&sources)
            .assert()
            .success();
        (
            std::fs::read(&bundle).unwrap(),
            std::fs::read(dir.path().join("amd64.tar")).unwrap(),
        )
    })
}

fn mutate(seed: &[u8], flips: &[(usize, u8)], keep: Option<usize>) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(at, byte) in flips {
        let i = at % bytes.len();
        bytes[i] ^= byte.max(1);
    }
    if let Some(k) = keep {
        bytes.truncate(k % (bytes.len() + 1));
    }
    bytes
}

fn write_temp(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Everything the loader does with a bundle, minus the engine.
fn exercise_bundle(path: &std::path::Path) {
    let Ok(reader) = BundleReader::open(path) else {
        return;
    };
    let verified = reader.verify(&Silent).is_ok();
    for platform in ["linux/amd64", "linux/arm64"] {
        let decision = forced(&platform.parse().unwrap());
        if let Ok(selected) = select(&reader.index, &decision, &[]) {
            let streamed = stream_docker_archive(
                &reader,
                &selected,
                &Skip::default(),
                &NoExtraLayers,
                std::io::sink(),
                0,
                &Silent,
            );
            // A bundle that verifies must also stream: members and layers agree (a
            // delta streams only with its base).
            if verified && !reader.index.is_delta() {
                assert!(
                    streamed.is_ok(),
                    "verified bundle failed to stream: {streamed:?}"
                );
            }
        }
    }
}

struct HashSink;

impl LayerSink for HashSink {
    fn wants(&self, _: &Digest) -> bool {
        true
    }
    fn has_size(&self, _: &Digest) -> Option<u64> {
        None
    }
    fn layer(
        &mut self,
        _: &str,
        _: Option<&Digest>,
        data: &mut dyn Read,
    ) -> Result<(), SourceError> {
        let mut buf = [0u8; 8192];
        while let Ok(n) = data.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        Ok(())
    }
    fn config(&mut self, _: &Digest, _: &str, _: Vec<u8>) -> Result<(), SourceError> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bundles_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        keep in proptest::option::of(any::<usize>()),
    ) {
        let bytes = mutate(&seeds().0, &flips, keep);
        let (_dir, path) = write_temp(&bytes, "b.archpack");
        exercise_bundle(&path);
    }

    #[test]
    fn mutated_source_archives_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        keep in proptest::option::of(any::<usize>()),
    ) {
        let bytes = mutate(&seeds().1, &flips, keep);
        let (_dir, path) = write_temp(&bytes, "src.tar");
        let reference = SourceRef::DockerArchive { path };
        let endpoint = Endpoint::from_host("unix:///nonexistent").unwrap();
        if let Ok(mut sources) = source::open_all(&[reference], &endpoint) {
            for src in &mut sources {
                let all: Vec<usize> = (0..src.images().len()).collect();
                let _ = src.read_layers(&all, &mut HashSink);
            }
        }
    }
}
