//! Delivering into a Docker-compatible engine: plan against what the engine already has,
//! stream one docker-archive built on the fly into `POST /images/load`, then tag and
//! prove the result (image ID = config digest, architecture = the chosen platform).
//!
//! Engine facts that shape this (see shared notes): Docker 20.10 reads only the
//! docker-archive form and rejects zstd, so layers are decompressed as they stream;
//! the graphdriver store skips layers whose chain it has (they may be absent from the
//! upload), the containerd store does not; errors arrive inside a 200 response; the
//! daemon unpacks the whole upload under its root before registering anything, so an
//! aborted upload loads nothing.

use crate::deliver::archive::{write_docker_archive, ArchiveError, Skip};
use crate::digest::Digest;
use crate::docker::{Engine, EngineError};
use crate::platform::{Platform, Selected};
use crate::progress::Progress;
use crate::reference::ImageRef;
use archpack_format::{chain_ids, exit, BundleReader};
use bollard::query_parameters::{ImportImageOptions, ListImagesOptions, TagImageOptions};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
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

impl LoadError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Archive(e) => e.exit_code(),
            LoadError::LayerMismatch(_) => exit::INTEGRITY,
            LoadError::Engine(_)
            | LoadError::NoSpace { .. }
            | LoadError::Refused(_)
            | LoadError::NothingLoaded
            | LoadError::Mismatch { .. } => exit::FAILURE,
        }
    }
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
    /// The engine's disk is this host's (a local socket): free space can be checked.
    pub local: bool,
}

pub fn engine_state(engine: &Engine) -> Result<EngineState, LoadError> {
    let info = engine.info()?;
    let containerd_store = crate::docker::uses_containerd_store(engine)?;
    let podman = crate::docker::is_podman(engine)?;
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
        local: engine.endpoint.is_local(),
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
        let diffs = index
            .diff_ids_of(s.entry)
            .ok_or_else(|| ArchiveError::Corrupt {
                member: s.image.name.clone(),
                detail: "the index gives a layer no diffId".into(),
            })?;
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
        .filter(|_| state.local)
        .and_then(|root| fs4::available_space(root).ok());
    Ok(LoadPlan {
        skip,
        bytes_to_send,
        layers_to_send,
        layers_present,
        free_space,
    })
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
    let (writer, receiver) = crate::bridge::chunk_channel(8, "the engine closed the load request");
    let body = receiver.into_stream();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut out = writer;
            let result = write_docker_archive(reader, selected, &plan.skip, &mut out, 0, progress);
            match &result {
                // Fail the request body: the engine aborts the load, nothing is tagged.
                Err(e) => out.fail(io::Error::other(e.to_string())),
                Ok(_) => {
                    let _ = out.close();
                }
            }
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
        match (produced, response) {
            // The bundle's own fault is the better message when both failed.
            (Err(e), _) if e.exit_code() == exit::INTEGRITY => Err(e.into()),
            // moby's load.go: "invalid diffID for layer N: expected ..., got ...".
            (_, (_, Some(refusal))) if refusal.contains("invalid diffID") => {
                Err(LoadError::LayerMismatch(refusal))
            }
            (_, (_, Some(refusal))) => Err(LoadError::Refused(refusal)),
            // The engine went away without a word: the write failed.
            (Err(e), _) => Err(e.into()),
            (Ok(_), (false, None)) => Err(LoadError::NothingLoaded),
            (Ok(stats), (true, None)) => Ok(stats.bytes_written),
        }
    })
}

/// Tags every selected image where a tag is missing (the load itself applied the tags
/// of the images it sent) and checks that each tag names the bundle's image ID and that
/// the image has the chosen platform.
pub fn tag_and_check(engine: &Engine, selected: &[Selected]) -> Result<(), LoadError> {
    let tags = crate::deliver::archive::checked_tags(selected)?;
    for (s, tags) in selected.iter().zip(tags) {
        let id = s.entry.config.to_string();
        let found = engine
            .runtime
            .block_on(engine.client.inspect_image(&id))
            .map_err(|e| engine.api_error(format!("inspecting {} ({id}): {e}", s.image.name)))?;
        let have: HashSet<String> = found
            .repo_tags
            .iter()
            .flatten()
            .map(|t| crate::reference::familiar(t))
            .collect();
        // Tags the engine lists under another spelling (podman's `localhost/`) are
        // tagged again: harmless, and then checked by name.
        for tag in tags.iter().filter(|t| !have.contains(*t)) {
            let name = ImageRef::parse_tagged(tag).map_err(ArchiveError::from)?;
            let (repo, short) = (name.familiar_repository(), name.tag().to_string());
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
