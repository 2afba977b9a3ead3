//! Delivering into a Docker-compatible engine: plan against what the engine already has,
//! stream archives built on the fly into `POST /images/load` (one, or overlapping steps
//! of the layer chains on the classic store: [`pipeline`]), then tag and prove the result
//! (the image's identity and architecture in the engine are the bundle's).
//!
//! What the archive is depends on how the engine stores images ([`Store`]):
//! - Docker's classic (graphdriver) store reads only the docker-archive form and Docker
//!   20.10 rejects zstd, so layers are decompressed as they stream; it skips layers whose
//!   chain it has (they may be absent from the upload) and checks every diff_id itself.
//!   Image ID = config digest.
//! - The containerd image store (Docker 29's default) keeps compressed blobs: it gets an
//!   OCI archive with the layers as stored (zstd; measured on Docker 28.5: loaded and run,
//!   no decompression here), and the image ID there is the bundle's manifest digest, as a
//!   registry pull would give.
//! - podman reads only complete docker-archives; image ID = config digest.
//!
//! Errors arrive inside a 200 response; the daemon takes the whole upload before it
//! registers anything, so an aborted upload loads nothing.

use crate::bridge::ChunkWriter;
use crate::deliver::archive::{
    write_docker_archive, write_oci_archive, ArchiveError, ExtraLayers, Skip,
};
use pipeline::{plan_steps, ImageLayers, Step};

pub mod pipeline;
use crate::digest::Digest;
use crate::docker::{Engine, EngineError};
use crate::platform::{Platform, Selected};
use crate::progress::Progress;
use crate::reference::ImageRef;
use archpack_format::{chain_ids, exit, BundleReader};
use bollard::query_parameters::{
    CreateImageOptions, ImportImageOptions, ListImagesOptions, RemoveImageOptions, TagImageOptions,
};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
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
    #[error("{bundle} is a delta made against {made_against}; this engine lacks what it needs:\n  {}\n{fix}; nothing was loaded", missing.join("\n  "))]
    DeltaIncomplete {
        bundle: String,
        made_against: String,
        missing: Vec<String>,
        fix: String,
    },
    #[error("{error}\nthe images an earlier request of this load put in could not all be taken out again: {}; remove them with `docker rmi`", left.join(", "))]
    PartlyLoaded {
        error: Box<LoadError>,
        left: Vec<String>,
    },
    #[error("the images are loaded and tagged, but images this load made only to carry its requests are left: {}; remove them with `docker rmi`", left.join(", "))]
    TemporaryLeft { left: Vec<String> },
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
            LoadError::PartlyLoaded { error, .. } => error.exit_code(),
            LoadError::LayerMismatch(_) => exit::INTEGRITY,
            LoadError::Engine(_)
            | LoadError::NoSpace { .. }
            | LoadError::Refused(_)
            | LoadError::NothingLoaded
            | LoadError::DeltaIncomplete { .. }
            | LoadError::TemporaryLeft { .. }
            | LoadError::Mismatch { .. } => exit::FAILURE,
        }
    }
}

/// How an engine stores images: what it reads, and what it calls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// Docker's graphdriver store (overlay2): docker-archives, layers it has may be left
    /// out; image ID = config digest.
    Classic,
    /// Docker's containerd image store: OCI archives with compressed layers; image ID =
    /// manifest digest.
    Containerd,
    /// podman's Docker-compatible API: complete docker-archives; image ID = config digest.
    Podman,
}

impl Store {
    /// What the engine calls an image of the bundle.
    pub fn image_id<'a>(&self, entry: &'a archpack_format::PlatformEntry) -> &'a Digest {
        match self {
            Store::Containerd => &entry.manifest,
            Store::Classic | Store::Podman => &entry.config,
        }
    }

    /// Why every layer of a missing image is sent, where that is so.
    pub fn full_uploads(&self) -> Option<&'static str> {
        match self {
            Store::Classic => None,
            Store::Containerd => {
                Some("the containerd image store takes whole images (layers as stored, zstd)")
            }
            Store::Podman => Some("podman reads only complete docker-archives"),
        }
    }
}

/// What the engine has that a load can skip, and how it stores images.
#[derive(Debug, Clone)]
pub struct EngineState {
    pub store: Store,
    /// Image IDs the engine has, as it names them ([`Store::image_id`]).
    pub present_images: HashSet<Digest>,
    /// Layer chains the classic store has.
    pub present_chains: HashSet<Digest>,
    /// diff_id → the images that have the layer, as (image ID, its size in bytes): to
    /// read it back from (delta loads).
    pub held_layers: HashMap<Digest, Vec<(String, u64)>>,
    pub root_dir: Option<String>,
    /// The engine's disk is this host's (a local socket): free space can be checked.
    pub local: bool,
    /// The engine host's CPUs, as it reports them.
    pub cpus: usize,
}

impl EngineState {
    pub fn full_uploads(&self) -> Option<&'static str> {
        self.store.full_uploads()
    }
}

/// What the engine holds. `every_layer`: also which layers each image has, on every
/// store (a delta load reads layers back from the engine); the classic store's chains
/// are always gathered.
pub fn engine_state(engine: &Engine, every_layer: bool) -> Result<EngineState, LoadError> {
    let info = engine.info()?;
    let store = store_of(engine)?;
    // Multi-platform images on the containerd store are indexes; their manifests are
    // images too (Docker 28 lists them with `manifests`; older engines ignore it).
    let images = engine
        .runtime
        .block_on(engine.client.list_images(Some(ListImagesOptions {
            all: true,
            manifests: store == Store::Containerd,
            ..Default::default()
        })))
        .map_err(|e| engine.api_error(e))?;
    let mut state = EngineState {
        store,
        present_images: HashSet::new(),
        present_chains: HashSet::new(),
        held_layers: HashMap::new(),
        root_dir: info.docker_root_dir.clone(),
        local: engine.endpoint.is_local(),
        cpus: info.ncpu.unwrap_or(1).max(1) as usize,
    };
    let ids: Vec<Digest> = images
        .iter()
        .filter_map(|summary| summary.id.parse().ok())
        .collect();
    for summary in &images {
        for m in summary.manifests.iter().flatten() {
            if m.available {
                if let Ok(d) = m.id.parse() {
                    state.present_images.insert(d);
                }
            }
        }
    }
    if store == Store::Classic || every_layer {
        // The layers of every image present: their chains need not be sent again.
        // Asked 16 at a time: thousands of images answer in a second or two.
        let mut layers: Vec<(String, u64, Vec<Digest>)> = engine.runtime.block_on(
            futures_util::stream::iter(&ids)
                .map(|id| async move {
                    let inspect = engine.client.inspect_image(&id.to_string()).await.ok();
                    let size = inspect.as_ref().and_then(|i| i.size).unwrap_or(0).max(0);
                    let diffs = inspect
                        .and_then(|i| i.root_fs)
                        .and_then(|r| r.layers)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|d| d.parse().ok())
                        .collect();
                    (id.to_string(), size as u64, diffs)
                })
                .buffer_unordered(16)
                .collect(),
        );
        // Which image a layer is read back from must not depend on answer order.
        layers.sort();
        for (id, size, diffs) in &layers {
            if store == Store::Classic {
                state.present_chains.extend(chain_ids(diffs));
            }
            for d in diffs {
                state
                    .held_layers
                    .entry(d.clone())
                    .or_default()
                    .push((id.clone(), *size));
            }
        }
    }
    state.present_images.extend(ids);
    Ok(state)
}

impl Store {
    /// The store's name in an inventory.
    pub fn as_str(&self) -> &'static str {
        match self {
            Store::Classic => "classic",
            Store::Containerd => "containerd",
            Store::Podman => "podman",
        }
    }
}

/// How the engine stores images.
pub fn store_of(engine: &Engine) -> Result<Store, LoadError> {
    Ok(if crate::docker::is_podman(engine)? {
        Store::Podman
    } else if crate::docker::uses_containerd_store(engine)? {
        Store::Containerd
    } else {
        Store::Classic
    })
}

/// Every image the engine lists, described for an inventory: ID, tags, platform,
/// layers. Untagged intermediate images are left out (their layers are their
/// children's); images the engine cannot describe (no platform) too.
pub fn inventory_images(
    engine: &Engine,
    store: Store,
) -> Result<Vec<archpack_format::inventory::InventoryImage>, LoadError> {
    let images = engine
        .runtime
        .block_on(engine.client.list_images(None::<ListImagesOptions>))
        .map_err(|e| engine.api_error(e))?;
    let ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
    let inspected = engine.runtime.block_on(
        futures_util::stream::iter(&ids)
            .map(|id| async move { engine.client.inspect_image(id).await })
            .buffer_unordered(16)
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::new();
    for inspect in inspected {
        let inspect = inspect.map_err(|e| engine.api_error(e))?;
        let Some(id) = inspect.id.as_deref().and_then(|i| i.parse::<Digest>().ok()) else {
            continue;
        };
        let (Some(os), Some(arch)) = (inspect.os.as_deref(), inspect.architecture.as_deref())
        else {
            continue;
        };
        let diff_ids = inspect
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        out.push(archpack_format::inventory::InventoryImage {
            config: (store != Store::Containerd).then(|| id.clone()),
            manifest: (store == Store::Containerd).then(|| id.clone()),
            id,
            tags: inspect
                .repo_tags
                .iter()
                .flatten()
                .filter(|t| !t.ends_with("<none>:<none>"))
                .map(|t| crate::reference::familiar(t))
                .collect(),
            platform: Platform::new(os, arch, inspect.variant.as_deref()),
            diff_ids,
        });
    }
    Ok(out)
}

/// What a load will do.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub store: Store,
    pub skip: Skip,
    /// Bytes of configs and layers that will be sent (layers uncompressed, or as stored
    /// for the containerd store).
    pub bytes_to_send: u64,
    /// Bytes the engine will hold once they are unpacked (every layer sent, uncompressed).
    pub bytes_unpacked: u64,
    pub layers_to_send: usize,
    pub layers_present: usize,
    pub free_space: Option<u64>,
    /// The requests that send it.
    pub requests: Requests,
}

/// How a load reaches the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requests {
    /// The engine has every image.
    Nothing,
    /// One `POST /images/load` with every missing image.
    One,
    /// Steps of the layer chains, overlapping (Docker's classic store; see
    /// [`pipeline`]).
    Pipelined(Vec<Step>),
}

impl LoadPlan {
    /// How many requests the load makes.
    pub fn requests(&self) -> usize {
        match &self.requests {
            Requests::Nothing => 0,
            Requests::One => 1,
            Requests::Pipelined(steps) => steps.len(),
        }
    }

    /// The most requests at once.
    pub fn most_at_once(&self) -> usize {
        self.requests().min(pipeline::IN_FLIGHT)
    }
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
        diff_id_hashing: state.store == Store::Classic,
        ..Skip::default()
    };
    let mut bytes_to_send = 0;
    let mut bytes_unpacked = 0;
    let mut layers_to_send = 0;
    let mut layers_present = 0;
    let mut counted = HashSet::new();
    // Each image's chains with their layer bytes, for the pipeline; present images skipped.
    let mut layered: Vec<ImageLayers> = Vec::with_capacity(selected.len());
    let mut present_at = HashSet::new();
    for (at, s) in selected.iter().enumerate() {
        if state.present_images.contains(state.store.image_id(s.entry)) {
            skip.images.insert(s.entry.config.clone());
            present_at.insert(at);
            layered.push(ImageLayers { chains: Vec::new() });
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
        let mut chains = Vec::with_capacity(diffs.len());
        for (blob, chain) in s.entry.layers.iter().zip(chain_ids(&diffs)) {
            let layer = index.layer(blob);
            chains.push((chain.clone(), layer.map_or(0, |l| l.uncompressed_size())));
            // A delta's layer whose blob a manifest the containerd store has names.
            let blob_in_engine = state.store == Store::Containerd
                && matches!(layer, Some(archpack_format::LayerStorage::Required(r))
                    if r.manifests.iter().any(|m| state.present_images.contains(m)));
            if state.store == Store::Classic && state.present_chains.contains(&chain) {
                skip.chains.insert(chain);
                layers_present += 1;
            } else if blob_in_engine {
                layers_present += 1;
            } else if counted.insert(blob.clone()) {
                layers_to_send += 1;
                let unpacked = layer.map_or(0, |l| l.uncompressed_size());
                bytes_unpacked += unpacked;
                bytes_to_send += match state.store {
                    Store::Containerd => layer.map_or(0, |l| l.blob_size()),
                    Store::Classic | Store::Podman => unpacked,
                };
            }
        }
        layered.push(ImageLayers { chains });
    }
    // Several requests need the bundle readable in any order, and whole: a delta's other
    // layers come from one reader of the engine's export or a base bundle.
    let requests = if present_at.len() == selected.len() {
        Requests::Nothing
    } else if state.store == Store::Classic && reader.random_access() && !index.is_delta() {
        let steps = plan_steps(&layered, &present_at, &skip.chains);
        if steps.len() > 1 {
            Requests::Pipelined(steps)
        } else {
            Requests::One
        }
    } else {
        Requests::One
    };
    let free_space = state
        .root_dir
        .as_deref()
        .filter(|_| state.local)
        .and_then(|root| fs4::available_space(root).ok());
    Ok(LoadPlan {
        store: state.store,
        skip,
        bytes_to_send,
        bytes_unpacked,
        layers_to_send,
        layers_present,
        free_space,
        requests,
    })
}

/// Space the engine needs. The classic store and podman unpack the whole upload under
/// their tmp, then register the layers: twice the upload. The containerd store keeps the
/// compressed blobs it was sent and unpacks them into snapshots beside them.
pub fn space_needed(plan: &LoadPlan) -> u64 {
    match plan.store {
        Store::Containerd => plan.bytes_to_send.saturating_add(plan.bytes_unpacked),
        Store::Classic | Store::Podman => plan.bytes_to_send.saturating_mul(2),
    }
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

/// What sending a load did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Archive (and import) bytes sent.
    pub bytes: u64,
    /// Images made only to carry a pipelined load's steps (stand-ins, imports): for
    /// [`remove_temporary`] once the load's own images are tagged.
    pub temporary: Vec<String>,
}

/// Streams the planned images into the engine. Every image of a pipelined load goes
/// untagged ([`tag_and_check`] tags at the end), and a failure takes out again what
/// earlier requests put in: a load is still all or nothing.
pub fn send(
    engine: &Engine,
    reader: &BundleReader,
    selected: &[Selected],
    plan: &LoadPlan,
    extra: &(dyn ExtraLayers + Sync),
    progress: &dyn Progress,
) -> Result<Sent, LoadError> {
    match &plan.requests {
        Requests::Nothing => Ok(Sent::default()),
        Requests::One => {
            let skip = &plan.skip;
            let done = request(engine, Call::Load, progress, &mut |out| {
                let write = match plan.store {
                    Store::Containerd => write_oci_archive,
                    Store::Classic | Store::Podman => write_docker_archive,
                };
                write(reader, selected, skip, extra, out, 0, progress).map(|s| s.bytes_written)
            })?;
            Ok(Sent {
                bytes: done.bytes,
                temporary: Vec::new(),
            })
        }
        Requests::Pipelined(steps) => {
            pipeline::send(engine, reader, selected, plan, steps, progress)
        }
    }
}

/// Removes the images a pipelined load made only to carry its steps.
pub fn remove_temporary(engine: &Engine, temporary: &[String]) -> Result<(), LoadError> {
    let left = remove_images(engine, temporary.iter());
    if left.is_empty() {
        Ok(())
    } else {
        Err(LoadError::TemporaryLeft { left })
    }
}

/// Removes images (untagged, made by this load); says which could not be removed.
fn remove_images<'a>(engine: &Engine, ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    ids.filter_map(|id| {
        let removed = engine.runtime.block_on(engine.client.remove_image(
            id,
            Some(RemoveImageOptions {
                force: false,
                noprune: false,
                ..Default::default()
            }),
            None,
        ));
        match removed {
            // Gone already (another load of the same images took it out): as wanted.
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => Some(format!("{id} ({e})")),
        }
    })
    .collect()
}

/// What an image made only to carry a pipelined load's step says of itself (an
/// import's history comment, a stand-in's label).
const TEMPORARY_NOTE: &str = "temporary: removed when the load that made it ends";

/// Takes the images earlier requests loaded (untagged, absent before) out again after
/// `error`; says which stayed if any could not be removed.
fn take_out(engine: &Engine, loaded: &[String], error: LoadError) -> LoadError {
    let left = remove_images(engine, loaded.iter().rev());
    if left.is_empty() {
        error
    } else {
        LoadError::PartlyLoaded {
            error: Box::new(error),
            left,
        }
    }
}

/// Which engine call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `POST /images/load`: a docker-archive (or OCI archive).
    Load,
    /// `POST /images/create?fromSrc=-`: one uncompressed layer, registered as it arrives.
    Import,
}

/// What a request did.
struct Done {
    bytes: u64,
    /// The image an import made.
    image: Option<String>,
}

/// One engine request whose body `write` produces on another thread as the engine reads
/// it; `engine_side` sees the engine's per-layer progress. A failing `write` fails the
/// body, so the engine aborts: nothing of it is loaded.
fn request(
    engine: &Engine,
    call: Call,
    engine_side: &dyn Progress,
    write: &mut (dyn FnMut(&mut ChunkWriter) -> Result<u64, ArchiveError> + Send),
) -> Result<Done, LoadError> {
    let (writer, receiver) = crate::bridge::chunk_channel(8, "the engine closed the load request");
    let body = receiver.into_stream();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut out = writer;
            let result = write(&mut out);
            match &result {
                // Fail the request body: the engine aborts the load, nothing is tagged.
                Err(e) => out.fail(io::Error::other(e.to_string())),
                Ok(_) => {
                    let _ = out.close();
                }
            }
            result
        });
        let answer = engine.runtime.block_on(async {
            match call {
                Call::Load => {
                    let stream = engine.client.import_image_stream(
                        ImportImageOptions {
                            quiet: false,
                            ..Default::default()
                        },
                        body,
                        None,
                    );
                    load_answer(stream, engine_side).await
                }
                Call::Import => {
                    let stream = engine.client.create_image(
                        Some(CreateImageOptions {
                            from_src: Some("-".into()),
                            message: Some(TEMPORARY_NOTE.into()),
                            ..Default::default()
                        }),
                        Some(bollard::body_try_stream(body)),
                        None,
                    );
                    import_answer(stream).await
                }
            }
        });
        let produced = producer
            .join()
            .map_err(|_| LoadError::Refused("the archive writer panicked".into()))?;
        match (produced, answer) {
            // The bundle's own fault is the better message when both failed.
            (Err(e), _) if e.exit_code() == exit::INTEGRITY => Err(e.into()),
            // moby's load.go: "invalid diffID for layer N: expected ..., got ...".
            (
                _,
                Answer {
                    refusal: Some(r), ..
                },
            ) if r.contains("invalid diffID") => Err(LoadError::LayerMismatch(r)),
            (
                _,
                Answer {
                    refusal: Some(r), ..
                },
            ) => Err(LoadError::Refused(r)),
            // The engine went away without a word: the write failed.
            (Err(e), _) => Err(e.into()),
            (Ok(_), Answer { done: false, .. }) => Err(LoadError::NothingLoaded),
            (Ok(bytes), Answer { image, .. }) => Ok(Done { bytes, image }),
        }
    })
}

/// What the engine answered.
#[derive(Default)]
struct Answer {
    /// It said it loaded (or imported) an image.
    done: bool,
    /// The image an import made.
    image: Option<String>,
    refusal: Option<String>,
}

/// Reads a load's answer: per-layer progress once the engine has the whole upload,
/// `Loaded image` lines, or an error.
async fn load_answer(
    stream: impl futures_util::Stream<Item = Result<bollard::models::BuildInfo, bollard::errors::Error>>,
    engine_side: &dyn Progress,
) -> Answer {
    let mut stream = std::pin::pin!(stream);
    let mut answer = Answer::default();
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
                        engine_side.finish();
                        engine_side.start(
                            &format!("engine: layer {}", &id[..id.len().min(12)]),
                            (total > 0).then_some(total),
                        );
                        engine_layer = Some(id.clone());
                        engine_done = 0;
                    }
                    engine_side.advance(current.saturating_sub(engine_done));
                    engine_done = current.max(engine_done);
                }
                if let Some(line) = info.stream.as_deref() {
                    if line.contains("Loaded image") {
                        answer.done = true;
                    }
                }
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    answer.refusal = Some(e);
                }
            }
            Err(e) => {
                answer.refusal = Some(e.to_string());
                break;
            }
        }
    }
    engine_side.finish();
    answer
}

/// Reads an import's answer: the image it made (`{"status":"sha256:…"}`), or an error.
async fn import_answer(
    stream: impl futures_util::Stream<
        Item = Result<bollard::models::CreateImageInfo, bollard::errors::Error>,
    >,
) -> Answer {
    let mut stream = std::pin::pin!(stream);
    let mut answer = Answer::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(id) = info.status.filter(|s| s.parse::<Digest>().is_ok()) {
                    answer.done = true;
                    answer.image = Some(id);
                }
            }
            Err(e) => {
                answer.refusal = Some(e.to_string());
                break;
            }
        }
    }
    answer
}

/// Tags every selected image where a tag is missing (the load itself applied the tags
/// of the images it sent) and checks that each tag names the bundle's image ID and that
/// the image has the chosen platform.
pub fn tag_and_check(
    engine: &Engine,
    store: Store,
    selected: &[Selected],
) -> Result<(), LoadError> {
    let tags = crate::deliver::archive::checked_tags(selected)?;
    for (s, tags) in selected.iter().zip(tags) {
        let id = store.image_id(s.entry).to_string();
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
