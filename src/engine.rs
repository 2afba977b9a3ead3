//! Loading into a Docker-compatible engine: plan against what the engine already has,
//! stream one docker-archive built on the fly into `POST /images/load`, then tag and
//! prove the result (image ID = config digest, architecture = the chosen platform).
//!
//! Engine facts that shape this (see shared notes): Docker 20.10 reads only the
//! docker-archive form and rejects zstd, so layers are decompressed as they stream;
//! the graphdriver store skips layers whose chain it has (they may be absent from the
//! upload), the containerd store does not; errors arrive inside a 200 response; the
//! daemon unpacks the whole upload under its root before registering anything, so an
//! aborted upload loads nothing.

use crate::bundle::BundleReader;
use crate::digest::Digest;
use crate::docker::{Engine, EngineError};
use crate::extract::{chain_ids, diff_ids, write_docker_archive, ExtractError, Selected, Skip};
use crate::platform::Platform;
use crate::progress::Progress;
use bollard::query_parameters::{ImportImageOptions, ListImagesOptions, TagImageOptions};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("not enough free space under the engine's root {root}: the load needs about {needed} bytes (the upload unpacked in its tmp, plus the layers), {available} are free")]
    NoSpace {
        root: String,
        needed: u64,
        available: u64,
    },
    #[error("the engine refused the load: {0}")]
    Refused(String),
    #[error("the engine refused the load: {0} (a layer's content does not match the diff_id its image config names: the bundle is inconsistent; recreate it)")]
    LayerMismatch(String),
    #[error("the engine ended the load without loading an image; nothing was tagged")]
    NothingLoaded,
    #[error("after loading, {image} is {found} in the engine, expected {expected}")]
    Mismatch {
        image: String,
        found: String,
        expected: String,
    },
}

/// What the engine has that a load can skip, and how it stores images.
#[derive(Debug, Clone, Default)]
pub struct EngineState {
    pub present_images: HashSet<Digest>,
    pub present_chains: HashSet<Digest>,
    /// Why every layer of a missing image must be sent, when the engine cannot take
    /// a docker-archive with layers left out (containerd image store, podman).
    pub full_uploads: Option<String>,
    pub root_dir: Option<String>,
}

pub fn engine_state(engine: &Engine) -> Result<EngineState, LoadError> {
    let info = engine.info()?;
    let containerd_store = info
        .driver_status
        .iter()
        .flatten()
        .any(|kv| kv.iter().any(|v| v.contains("io.containerd.snapshotter")));
    let version = engine.version()?;
    let podman = version
        .components
        .iter()
        .flatten()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    let full_uploads = if podman {
        Some("podman reads only complete docker-archives".to_string())
    } else if containerd_store {
        Some("the containerd image store reads only complete docker-archives".to_string())
    } else {
        None
    };
    let images = engine
        .runtime
        .block_on(engine.client.list_images(Some(ListImagesOptions {
            all: true,
            ..Default::default()
        })))
        .map_err(|e| engine.api_error(e))?;
    let mut state = EngineState {
        full_uploads,
        root_dir: info.docker_root_dir.clone(),
        ..Default::default()
    };
    // The layers of every image present: their chains need not be sent again. Asked
    // 16 at a time: an engine with thousands of images answers in a second or two.
    let ids: Vec<Digest> = images
        .iter()
        .filter_map(|summary| summary.id.parse().ok())
        .collect();
    let layers: Vec<Vec<Digest>> = engine.runtime.block_on(
        futures_util::stream::iter(&ids)
            .map(|id| async move {
                let inspect = engine.client.inspect_image(&id.to_string()).await.ok();
                inspect
                    .and_then(|i| i.root_fs)
                    .and_then(|r| r.layers)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| d.parse().ok())
                    .collect()
            })
            .buffer_unordered(16)
            .collect(),
    );
    for diffs in layers {
        state.present_chains.extend(chain_ids(&diffs));
    }
    state.present_images.extend(ids);
    Ok(state)
}

/// What a load will do.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub skip: Skip,
    /// Uncompressed bytes of configs and layers that will be sent.
    pub bytes_to_send: u64,
    pub layers_to_send: usize,
    pub layers_present: usize,
    pub free_space: Option<u64>,
}

pub fn plan(
    reader: &BundleReader,
    selected: &[Selected],
    state: &EngineState,
) -> Result<LoadPlan, LoadError> {
    let index = &reader.index;
    // Docker's graphdriver store computes every layer's diff_id and refuses a mismatch
    // (image/tarexport/load.go; tests/hostile.rs shows it). Other stores: hash here too.
    let mut skip = Skip {
        diff_id_hashing: state.full_uploads.is_none(),
        ..Skip::default()
    };
    let mut bytes_to_send = 0;
    let mut layers_to_send = 0;
    let mut layers_present = 0;
    let mut counted = HashSet::new();
    for s in selected {
        if state.present_images.contains(&s.entry.config) {
            skip.images.insert(s.entry.config.clone());
            continue;
        }
        if let Some(m) = index.member_by_digest(&s.entry.config) {
            bytes_to_send += m.size;
        }
        let diffs = diff_ids(index, s.entry)?;
        for ((blob, chain), _) in s.entry.layers.iter().zip(chain_ids(&diffs)).zip(&diffs) {
            if state.full_uploads.is_none() && state.present_chains.contains(&chain) {
                skip.chains.insert(chain);
                layers_present += 1;
            } else if counted.insert(blob.clone()) {
                layers_to_send += 1;
                bytes_to_send += index
                    .member_by_digest(blob)
                    .and_then(|m| m.uncompressed_size)
                    .unwrap_or(0);
            }
        }
    }
    let free_space = state
        .root_dir
        .as_deref()
        .filter(|_| engine_is_local())
        .and_then(|root| fs4::available_space(root).ok());
    Ok(LoadPlan {
        skip,
        bytes_to_send,
        layers_to_send,
        layers_present,
        free_space,
    })
}

/// A unix socket means the engine's disk is this host's disk.
fn engine_is_local() -> bool {
    std::env::var("DOCKER_HOST")
        .map(|h| h.is_empty() || h.starts_with("unix://"))
        .unwrap_or(true)
}

/// Space the engine needs: the upload unpacked under its tmp, then the layers.
pub fn space_needed(plan: &LoadPlan) -> u64 {
    plan.bytes_to_send.saturating_mul(2)
}

/// Refuses a load that cannot fit, before a byte is sent.
pub fn check_space(plan: &LoadPlan, state: &EngineState) -> Result<(), LoadError> {
    if let (Some(available), Some(root)) = (plan.free_space, &state.root_dir) {
        let needed = space_needed(plan);
        if needed > available {
            return Err(LoadError::NoSpace {
                root: root.clone(),
                needed,
                available,
            });
        }
    }
    Ok(())
}

/// Streams the planned images into the engine. Returns the number of archive bytes sent.
pub fn send(
    engine: &Engine,
    reader: &BundleReader,
    selected: &[Selected],
    plan: &LoadPlan,
    progress: &dyn Progress,
) -> Result<u64, LoadError> {
    if selected
        .iter()
        .all(|s| plan.skip.images.contains(&s.entry.config))
    {
        return Ok(0);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(8);
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = write_docker_archive(reader, selected, &plan.skip, out, 0, progress);
            if let Err(e) = &result {
                // Fail the request body: the engine aborts the load, nothing is tagged.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            drop(tx);
            result
        });
        let response = engine.runtime.block_on(async {
            let mut stream = std::pin::pin!(engine.client.import_image_stream(
                ImportImageOptions {
                    quiet: false,
                    ..Default::default()
                },
                body,
                None,
            ));
            let mut loaded = false;
            let mut refusal = None;
            // The engine reports per-layer progress once it has the whole upload.
            let mut engine_layer: Option<String> = None;
            let mut engine_done = 0u64;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let (Some(id), Some(detail)) = (&info.id, &info.progress_detail) {
                            let (current, total) = (
                                detail.current.unwrap_or(0).max(0) as u64,
                                detail.total.unwrap_or(0).max(0) as u64,
                            );
                            if engine_layer.as_deref() != Some(id) {
                                progress.finish();
                                progress.start(
                                    &format!("engine: layer {}", &id[..id.len().min(12)]),
                                    (total > 0).then_some(total),
                                );
                                engine_layer = Some(id.clone());
                                engine_done = 0;
                            }
                            progress.advance(current.saturating_sub(engine_done));
                            engine_done = current.max(engine_done);
                        }
                        if let Some(line) = info.stream.as_deref() {
                            if line.contains("Loaded image") {
                                loaded = true;
                            }
                        }
                        if let Some(e) = info.error_detail.and_then(|d| d.message) {
                            refusal = Some(e);
                        }
                    }
                    Err(e) => {
                        refusal = Some(e.to_string());
                        break;
                    }
                }
            }
            progress.finish();
            (loaded, refusal)
        });
        let produced = producer
            .join()
            .map_err(|_| LoadError::Refused("the archive writer panicked".into()))?;
        // The bundle's own fault is the better message when both failed.
        let stats = produced?;
        match response {
            // moby's load.go: "invalid diffID for layer N: expected ..., got ...".
            (_, Some(refusal)) if refusal.contains("invalid diffID") => {
                Err(LoadError::LayerMismatch(refusal))
            }
            (_, Some(refusal)) => Err(LoadError::Refused(refusal)),
            (false, None) => Err(LoadError::NothingLoaded),
            (true, None) => Ok(stats.bytes_written),
        }
    })
}

const CHUNK: usize = 256 << 10;

/// Sends written bytes to the request body in 256 KiB chunks through a bounded channel.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine closed the load request",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Splits `name[:tag]` into repository and tag (a registry port is not a tag).
pub fn split_tag(reference: &str) -> (String, String) {
    match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => {
            (reference[..i].to_string(), reference[i + 1..].to_string())
        }
        _ => (reference.to_string(), "latest".to_string()),
    }
}

/// Docker's familiar form of a tag, as `RepoTags` lists it (`docker.io/library/x` is `x`).
fn familiar(reference: &str) -> String {
    let short = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|prefix| reference.strip_prefix(prefix))
    .unwrap_or(reference);
    let (repo, tag) = split_tag(short);
    format!("{repo}:{tag}")
}

/// Tags every selected image where a tag is missing (the load itself applied the tags
/// of the images it sent) and checks that each tag names the bundle's image ID and that
/// the image has the chosen platform.
pub fn tag_and_check(engine: &Engine, selected: &[Selected]) -> Result<(), LoadError> {
    for s in selected {
        let id = s.entry.config.to_string();
        let found = engine
            .runtime
            .block_on(engine.client.inspect_image(&id))
            .map_err(|e| engine.api_error(format!("inspecting {} ({id}): {e}", s.image.name)))?;
        let have: HashSet<String> = found
            .repo_tags
            .iter()
            .flatten()
            .map(|t| familiar(t))
            .collect();
        // Tags the engine lists under another spelling (podman's `localhost/`) are
        // tagged again: harmless, and then checked by name.
        for tag in s.tags().iter().filter(|t| !have.contains(&familiar(t))) {
            let (repo, short) = split_tag(tag);
            engine
                .runtime
                .block_on(engine.client.tag_image(
                    &id,
                    Some(TagImageOptions {
                        repo: Some(repo),
                        tag: Some(short),
                    }),
                ))
                .map_err(|e| engine.api_error(format!("tagging {id}: {e}")))?;
            let named = engine
                .runtime
                .block_on(engine.client.inspect_image(tag))
                .map_err(|e| engine.api_error(format!("inspecting {tag}: {e}")))?;
            if named.id.as_deref() != Some(id.as_str()) {
                return Err(LoadError::Mismatch {
                    image: tag.clone(),
                    found: format!("image {}", named.id.unwrap_or_default()),
                    expected: format!("image {id}"),
                });
            }
        }
        if found.id.as_deref() != Some(id.as_str()) {
            return Err(LoadError::Mismatch {
                image: s.image.name.clone(),
                found: format!("image {}", found.id.unwrap_or_default()),
                expected: format!("image {id}"),
            });
        }
        let platform = Platform::new(
            found.os.as_deref().unwrap_or(""),
            found.architecture.as_deref().unwrap_or(""),
            found.variant.as_deref(),
        );
        if !platform.same_arch(&s.entry.platform)
            || (platform.variant.is_some() && platform.variant != s.entry.platform.variant)
        {
            return Err(LoadError::Mismatch {
                image: s.image.name.clone(),
                found: platform.to_string(),
                expected: s.entry.platform.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("svc:v1.0"), ("svc".into(), "v1.0".into()));
        assert_eq!(split_tag("svc"), ("svc".into(), "latest".into()));
        assert_eq!(
            split_tag("reg:5000/team/svc"),
            ("reg:5000/team/svc".into(), "latest".into())
        );
        assert_eq!(
            split_tag("reg:5000/svc:2"),
            ("reg:5000/svc".into(), "2".into())
        );
    }

    #[test]
    fn familiar_tags_match_repo_tags() {
        assert_eq!(
            familiar("docker.io/library/alpha:v1-amd64"),
            "alpha:v1-amd64"
        );
        assert_eq!(familiar("docker.io/team/svc"), "team/svc:latest");
        assert_eq!(familiar("svc:v1.0"), "svc:v1.0");
        assert_eq!(familiar("reg:5000/svc"), "reg:5000/svc:latest");
    }
}
