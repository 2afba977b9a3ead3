//! Splitting a load on Docker's classic store into requests the engine overlaps.
//!
//! The classic store takes a `POST /images/load` whole into its tmp before it registers
//! the first layer, then registers the layers one after another: sent as one request, a
//! load is the whole upload, then every layer in turn. Sent as steps of the images'
//! layer chains instead:
//! - a base layer goes as an import (`POST /images/create?fromSrc=-`), which the engine
//!   registers as it arrives: no tmp copy, and the registration overlaps the
//!   decompression;
//! - every other step is a load request uploaded while the steps below it register; its
//!   tail (the archive's `manifest.json` and end) waits until the step below is in, so
//!   the engine finds those layers present and registers only the step's own;
//! - steps on the same parent (images that diverge above a shared base) register side by
//!   side.
//!
//! A step that ends no image of the bundle is loaded with a stand-in config naming its
//! chain; the stand-ins and the imports' images are removed when the load ends.
//! Measured on the benchmark corpus (Docker 20.10, 2 cores, fresh engines, alternating):
//! 2.2–2.4 s against 2.4–2.8 s for the same layers in one request. The engine's
//! registration is the floor: it keeps ~1.4 cores busy (SHA-256 of every layer, tar-split,
//! the untar), and an import of the base layer alone takes 1.2 s of it.

use super::{remove_images, request, take_out, Call, LoadError, LoadPlan, Sent, TEMPORARY_NOTE};
use crate::deliver::archive::{
    copy_in_blocks, fault_error, io_fault, layers_of, member, DockerArchive, NoExtraLayers, Skip,
};
use crate::digest::Digest;
use crate::docker::{Endpoint, Engine};
use crate::platform::{Platform, Selected};
use crate::progress::{Progress, Silent};
use archpack_format::{chain_ids, exit, BundleReader};
use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// One image to send: its layer chain IDs (bottom first) with each layer's bytes.
#[derive(Debug, Clone)]
pub struct ImageLayers {
    pub chains: Vec<(Digest, u64)>,
}

/// How a step reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A base layer that ends no image: `POST /images/create?fromSrc=-`.
    Import,
    /// A docker-archive through `POST /images/load`.
    Load,
}

/// One request of a pipelined load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The image (its position in the selection) whose chain holds the step's layers.
    pub image: usize,
    /// Which of that image's layers the step sends (bottom first). Empty for images whose
    /// layers the engine all has but which it lacks (the same layers, another config).
    pub layers: Range<usize>,
    /// Images whose last layer is the step's top: loaded with their own configs here.
    /// Empty: the step is loaded with a stand-in config (or imported).
    pub finishes: Vec<usize>,
    /// The step that registers the layer below this step's first, when the engine lacks
    /// it: this step's tail waits for it.
    pub after: Option<usize>,
    /// Uncompressed layer bytes the step sends.
    pub bytes: u64,
    pub kind: StepKind,
}

/// A step holding less than this takes the next layer of its chain along, where that
/// layer is the only one above it and no image ends below it: every request costs the
/// engine two helper processes (~80 ms on Docker 20.10, measured), and only bytes overlap.
pub const MIN_STEP_BYTES: u64 = 8 << 20;

/// A layer chain the engine lacks, as the steps are cut from them.
struct Node {
    image: usize,
    depth: usize,
    bytes: u64,
    parent: Option<usize>,
    children: usize,
    finishes: Vec<usize>,
}

/// The steps that send every image of `images` whose position is not in `skip`, given
/// the chains the engine has (`present`); parents before children.
pub fn plan_steps(
    images: &[ImageLayers],
    skip: &HashSet<usize>,
    present: &HashSet<Digest>,
) -> Vec<Step> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_of: HashMap<&Digest, usize> = HashMap::new();
    // Images the engine has every layer of, but not the image itself.
    let mut config_only: Vec<usize> = Vec::new();
    for (i, image) in images.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let mut parent = None;
        for (depth, (chain, bytes)) in image.chains.iter().enumerate() {
            if present.contains(chain) {
                continue;
            }
            let at = *node_of.entry(chain).or_insert_with(|| {
                nodes.push(Node {
                    image: i,
                    depth,
                    bytes: *bytes,
                    parent,
                    children: 0,
                    finishes: Vec::new(),
                });
                if let Some(p) = parent {
                    nodes[p].children += 1;
                }
                nodes.len() - 1
            });
            parent = Some(at);
        }
        match parent {
            Some(top) => nodes[top].finishes.push(i),
            None => config_only.push(i),
        }
    }

    // Nodes were made parents first: each joins its parent's step or starts its own.
    let mut steps: Vec<Step> = Vec::new();
    let mut step_of: Vec<usize> = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let joins = node.parent.filter(|&p| {
            let parent = &nodes[p];
            let step = &steps[step_of[p]];
            // A base stands alone (an import); an image's end or a fork ends a step.
            parent.depth > 0
                && parent.finishes.is_empty()
                && parent.children == 1
                && step.bytes < MIN_STEP_BYTES
        });
        match joins {
            Some(p) => {
                let s = step_of[p];
                steps[s].layers.end = node.depth + 1;
                steps[s].bytes += node.bytes;
                steps[s].finishes.clone_from(&node.finishes);
                step_of.push(s);
            }
            None => {
                steps.push(Step {
                    image: node.image,
                    layers: node.depth..node.depth + 1,
                    finishes: node.finishes.clone(),
                    after: node.parent.map(|p| step_of[p]),
                    bytes: node.bytes,
                    kind: if node.depth == 0 && node.finishes.is_empty() {
                        StepKind::Import
                    } else {
                        StepKind::Load
                    },
                });
                step_of.push(steps.len() - 1);
            }
        }
    }
    if let Some(&first) = config_only.first() {
        steps.push(Step {
            image: first,
            layers: 0..0,
            finishes: config_only,
            after: None,
            bytes: 0,
            kind: StepKind::Load,
        });
    }
    steps
}

/// Requests of a pipelined load under way at once, at most (uploading, waiting for the
/// step below, or registering). Started parents first, so one always can go on.
pub const IN_FLIGHT: usize = 4;

/// Requests decompressing at once, at most: each holds a zstd window (16 MiB). On 2
/// cores two load a release's new top layers side by side faster than one (0.49–0.55 s
/// against 0.56–0.58 on the benchmark's release 2), a whole bundle no slower; the peak
/// is 57–61 MiB instead of 37–41.
const DECODING: usize = 2;

/// A pipelined load under way in this process: its engine, and the images its steps
/// have put in so far (untagged until the load ends), for [`take_out_interrupted`].
static UNDER_WAY: Mutex<Option<UnderWay>> = Mutex::new(None);

struct UnderWay {
    endpoint: Endpoint,
    loaded: Vec<String>,
}

/// Takes out what a pipelined load cut short by a signal had put in: the images of its
/// finished steps (a step the engine is registering at that moment may still leave an
/// untagged one). Returns how many images it removed.
pub fn take_out_interrupted() -> usize {
    let Some(under_way) = lock(&UNDER_WAY).take() else {
        return 0;
    };
    if under_way.loaded.is_empty() {
        return 0;
    }
    let Ok(engine) = Engine::connect(&under_way.endpoint) else {
        return 0;
    };
    let left = remove_images(&engine, under_way.loaded.iter().rev());
    under_way.loaded.len() - left.len()
}

/// The load in this process has ended: its images are tagged, or were taken out.
pub fn load_ended() {
    *lock(&UNDER_WAY) = None;
}

/// Sends the steps of a pipelined load; on failure, takes out what earlier steps loaded.
pub(super) fn send(
    engine: &Engine,
    reader: &BundleReader,
    selected: &[Selected],
    plan: &LoadPlan,
    steps: &[Step],
    progress: &dyn Progress,
) -> Result<Sent, LoadError> {
    Pipeline::new(engine, reader, selected, plan, steps).run(progress)
}

/// A pipelined load under way: steps handed to workers parents first, each step's tail
/// held until the step below it is in.
struct Pipeline<'a> {
    engine: &'a Engine,
    reader: &'a BundleReader,
    selected: &'a [Selected<'a>],
    skip: Skip,
    steps: &'a [Step],
    /// The next step to start.
    next: Mutex<usize>,
    /// Each step's outcome once known; waiters are woken on every change.
    outcomes: Mutex<Vec<Outcome>>,
    changed: Condvar,
    /// Decompression permits left.
    decoders: Mutex<usize>,
    decoder_free: Condvar,
    /// Images the load put in so far (its own, untagged, and temporary ones).
    loaded: Mutex<Vec<String>>,
    temporary: Mutex<Vec<String>>,
    /// Bytes sent so far.
    sent: Mutex<u64>,
    /// This load, as its stand-in configs name it.
    load: String,
}

/// A step's failure, and whether it only gave up because a step below it failed.
struct StepError {
    error: LoadError,
    stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    In,
    Failed,
}

/// A decompression permit of a [`Pipeline`].
struct Decoder<'p>(&'p Pipeline<'p>);

impl Drop for Decoder<'_> {
    fn drop(&mut self) {
        *lock(&self.0.decoders) += 1;
        self.0.decoder_free.notify_one();
    }
}

/// Why a step gave up: a step it waited for failed.
const STOPPED: &str = "the load stopped: another of its requests failed";

impl<'a> Pipeline<'a> {
    fn new(
        engine: &'a Engine,
        reader: &'a BundleReader,
        selected: &'a [Selected<'a>],
        plan: &LoadPlan,
        steps: &'a [Step],
    ) -> Self {
        let mut skip = plan.skip.clone();
        skip.tags = true;
        Pipeline {
            engine,
            reader,
            selected,
            skip,
            steps,
            next: Mutex::new(0),
            outcomes: Mutex::new(vec![Outcome::Pending; steps.len()]),
            changed: Condvar::new(),
            decoders: Mutex::new(DECODING),
            decoder_free: Condvar::new(),
            loaded: Mutex::new(Vec::new()),
            temporary: Mutex::new(Vec::new()),
            sent: Mutex::new(0),
            load: format!(
                "load {} of process {}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
                std::process::id()
            ),
        }
    }

    fn run(self, progress: &dyn Progress) -> Result<Sent, LoadError> {
        *lock(&UNDER_WAY) = Some(UnderWay {
            endpoint: self.engine.endpoint.clone(),
            loaded: Vec::new(),
        });
        let total: u64 = self.steps.iter().map(|s| s.bytes).sum();
        progress.start(
            &format!("sending ({} requests, overlapping)", self.steps.len()),
            Some(total),
        );
        let shared = Overlapped(progress);
        let mut errors: Vec<StepError> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..IN_FLIGHT.min(self.steps.len()))
                .map(|_| scope.spawn(|| self.work(&shared)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![StepError {
                            error: LoadError::Refused("an archive writer panicked".into()),
                            stopped: false,
                        }]
                    })
                })
                .collect()
        });
        progress.finish();
        // The bundle's own fault is the better message when several failed; a step that
        // only stopped because another failed is never the reason.
        let reason = errors
            .iter()
            .position(|e| !e.stopped && e.error.exit_code() == exit::INTEGRITY)
            .or_else(|| errors.iter().position(|e| !e.stopped))
            .or((!errors.is_empty()).then_some(0));
        if let Some(at) = reason {
            let loaded = lock(&self.loaded).clone();
            let error = take_out(self.engine, &loaded, errors.swap_remove(at).error);
            load_ended();
            return Err(error);
        }
        Ok(Sent {
            bytes: *lock(&self.sent),
            temporary: lock(&self.temporary).clone(),
        })
    }

    /// Takes steps in order until none is left or one has failed; returns the errors.
    fn work(&self, sending: &dyn Progress) -> Vec<StepError> {
        let mut errors = Vec::new();
        loop {
            let at = {
                let mut next = lock(&self.next);
                let failed = lock(&self.outcomes).contains(&Outcome::Failed);
                if *next >= self.steps.len() || failed {
                    return errors;
                }
                *next += 1;
                *next - 1
            };
            let outcome = match self.send_step(at, sending) {
                Ok(()) => Outcome::In,
                Err(e) => {
                    errors.push(e);
                    Outcome::Failed
                }
            };
            lock(&self.outcomes)[at] = outcome;
            self.changed.notify_all();
        }
    }

    /// Waits until step `at` is in; an error when it failed.
    fn wait_for(&self, at: usize) -> io::Result<()> {
        let mut outcomes = lock(&self.outcomes);
        loop {
            match outcomes[at] {
                Outcome::In => return Ok(()),
                Outcome::Failed => return Err(io::Error::other(STOPPED)),
                Outcome::Pending => {}
            }
            if outcomes.contains(&Outcome::Failed) {
                return Err(io::Error::other(STOPPED));
            }
            outcomes = self
                .changed
                .wait(outcomes)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records an image a step put in: the bundle's own, or a `temporary` one.
    fn put_in(&self, image: &str, temporary: bool) {
        lock(&self.loaded).push(image.to_string());
        if temporary {
            lock(&self.temporary).push(image.to_string());
        }
        if let Some(under_way) = lock(&UNDER_WAY).as_mut() {
            under_way.loaded.push(image.to_string());
        }
    }

    /// A decompression permit, once one is free; given back when dropped.
    fn decoder(&self) -> Decoder<'_> {
        let mut free = lock(&self.decoders);
        while *free == 0 {
            free = self
                .decoder_free
                .wait(free)
                .unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Decoder(self)
    }

    fn send_step(&self, at: usize, sending: &dyn Progress) -> Result<(), StepError> {
        let stopped = AtomicBool::new(false);
        self.try_step(at, sending, &stopped)
            .map_err(|error| StepError {
                error,
                stopped: stopped.load(Ordering::Relaxed),
            })
    }

    /// Sends step `at`; `stopped` is set when it gave up because a step below failed.
    fn try_step(
        &self,
        at: usize,
        sending: &dyn Progress,
        stopped: &AtomicBool,
    ) -> Result<(), LoadError> {
        let step = &self.steps[at];
        let s = &self.selected[step.image];
        let layers = layers_of(self.reader, s)?;
        match step.kind {
            StepKind::Import => {
                let (blob, diff_id) = &layers[step.layers.start];
                let m = member(self.reader, blob)?;
                let done = request(self.engine, Call::Import, &Silent, &mut |out| {
                    let _decoder = self.decoder();
                    let mut layer = self.reader.layer_reader(m, sending).map_err(fault_error)?;
                    if self.skip.diff_id_hashing {
                        layer = layer.diff_id_checked_by_consumer();
                    }
                    copy_in_blocks(&mut layer, out).map_err(|e| io_fault(e, "the import"))
                })?;
                *lock(&self.sent) += done.bytes;
                let image = done.image.ok_or(LoadError::NothingLoaded)?;
                self.put_in(&image, true);
                // An import checks no diff_id, but the engine computed it: the layer
                // must be the one the index names, as a load would insist.
                let found = self
                    .engine
                    .runtime
                    .block_on(self.engine.client.inspect_image(&image))
                    .map_err(|e| self.engine.api_error(format!("inspecting {image}: {e}")))?
                    .root_fs
                    .and_then(|r| r.layers)
                    .unwrap_or_default();
                if found.first().map(String::as_str) != Some(diff_id.to_string().as_str()) {
                    return Err(LoadError::LayerMismatch(format!(
                        "{}: the engine registered it as {}, the index names diff_id {diff_id}",
                        m.name,
                        found.first().map_or("nothing", String::as_str)
                    )));
                }
            }
            StepKind::Load => {
                let finishes: Vec<Selected> = step
                    .finishes
                    .iter()
                    .map(|&i| self.selected[i].clone())
                    .collect();
                let diffs: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
                // Only the step's own layers travel: those below are in (or come in by
                // the steps it waits for); an image whose layers are all in sends none.
                let mut chains = chain_ids(&diffs);
                chains.drain(step.layers.clone());
                let skip = Skip {
                    chains: chains.into_iter().collect(),
                    ..self.skip.clone()
                };
                let mut archive = DockerArchive::of(self.reader, &finishes, &skip)?;
                let stand_in = if finishes.is_empty() {
                    let config =
                        stand_in_config(&s.entry.platform, &diffs[..step.layers.end], &self.load)?;
                    let id = Digest::of(&config).to_string();
                    archive.stand_in(config, &layers[..step.layers.end], &|c| {
                        skip.chains.contains(c)
                    })?;
                    Some(id)
                } else {
                    None
                };
                let mut archive = Some(archive);
                let done = request(self.engine, Call::Load, &Silent, &mut |out| {
                    let Some(archive) = archive.take() else {
                        return Ok(0);
                    };
                    // Decompress with a permit, given back before waiting: the tail
                    // goes once the step below is in.
                    let mut decoder = (!step.layers.is_empty()).then(|| self.decoder());
                    let written = archive.write(&NoExtraLayers, &mut *out, 0, sending, &mut || {
                        decoder.take();
                        let below = step.after.map_or(Ok(()), |after| self.wait_for(after));
                        stopped.store(below.is_err(), Ordering::Relaxed);
                        below
                    });
                    written.map(|stats| stats.bytes_written)
                })?;
                *lock(&self.sent) += done.bytes;
                for f in &finishes {
                    self.put_in(&f.entry.config.to_string(), false);
                }
                if let Some(id) = stand_in {
                    self.put_in(&id, true);
                }
            }
        }
        Ok(())
    }
}

/// The label on a stand-in image (`docker images --filter label=org.archpack.load`
/// finds one a load cut short left).
pub const TEMPORARY_LABEL: &str = "org.archpack.load";

/// Several requests' progress as one bar: only their byte counts reach it.
struct Overlapped<'a>(&'a dyn Progress);

impl Progress for Overlapped<'_> {
    fn advance(&self, bytes: u64) {
        self.0.advance(bytes);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config of a stand-in image: `diff_ids` as its chain, the image's platform, a
/// label saying what it is (should a load be cut short before removing it) and which
/// load made it: two loads at once make two stand-ins, each removing only its own.
fn stand_in_config(
    platform: &Platform,
    diff_ids: &[Digest],
    load: &str,
) -> Result<Vec<u8>, LoadError> {
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder, RootFsBuilder};
    let bad = |e: oci_spec::OciSpecError| LoadError::Refused(format!("a stand-in config: {e}"));
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(bad)?;
    let labels = HashMap::from([(
        TEMPORARY_LABEL.to_string(),
        format!("{TEMPORARY_NOTE} ({load})"),
    )]);
    let mut config = ImageConfigurationBuilder::default()
        .architecture(platform.architecture.as_str())
        .os(platform.os.as_str())
        .config(
            ConfigBuilder::default()
                .labels(labels)
                .build()
                .map_err(bad)?,
        )
        .rootfs(rootfs);
    if let Some(v) = &platform.variant {
        config = config.variant(v.clone());
    }
    serde_json::to_vec(&config.build().map_err(bad)?)
        .map_err(|e| LoadError::Refused(format!("a stand-in config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    const MIB: u64 = 1 << 20;

    /// An image from (layer name, MiB): chain IDs stand in as the names' digests,
    /// prefixed by the parent's so a shared name below a different parent differs.
    fn image(layers: &[(&str, u64)]) -> ImageLayers {
        let mut path = String::new();
        ImageLayers {
            chains: layers
                .iter()
                .map(|(name, n)| {
                    path.push('/');
                    path.push_str(name);
                    (d(&path), *n * MIB)
                })
                .collect(),
        }
    }

    fn none() -> HashSet<usize> {
        HashSet::new()
    }

    /// (image, layers, finishes, after, kind) of each step.
    #[allow(clippy::type_complexity)]
    fn shape(steps: &[Step]) -> Vec<(usize, Range<usize>, Vec<usize>, Option<usize>, StepKind)> {
        steps
            .iter()
            .map(|s| {
                (
                    s.image,
                    s.layers.clone(),
                    s.finishes.clone(),
                    s.after,
                    s.kind,
                )
            })
            .collect()
    }

    #[test]
    fn a_shared_base_is_imported_its_python_layer_follows_and_the_tops_go_side_by_side() {
        // The benchmark corpus's shape.
        let images = [
            image(&[("base", 167), ("py", 25), ("alpha", 24)]),
            image(&[("base", 167), ("py", 25), ("beta", 41)]),
            image(&[("base", 167), ("py", 25), ("gamma", 24)]),
        ];
        let steps = plan_steps(&images, &none(), &HashSet::new());
        use StepKind::*;
        assert_eq!(
            shape(&steps),
            vec![
                (0, 0..1, vec![], None, Import),
                (0, 1..2, vec![], Some(0), Load),
                (0, 2..3, vec![0], Some(1), Load),
                (1, 2..3, vec![1], Some(1), Load),
                (2, 2..3, vec![2], Some(1), Load),
            ]
        );
        // Each layer once.
        assert_eq!(
            steps.iter().map(|s| s.bytes / MIB).collect::<Vec<_>>(),
            [167, 25, 24, 41, 24]
        );
    }

    #[test]
    fn small_layers_travel_with_the_next_one_until_an_image_ends_or_the_chain_forks() {
        let images = [
            image(&[
                ("base", 30),
                ("env", 0),
                ("apt", 2),
                ("pip", 40),
                ("cfg", 0),
                ("app", 3),
            ]),
            image(&[
                ("base", 30),
                ("env", 0),
                ("apt", 2),
                ("pip", 40),
                ("other", 1),
            ]),
        ];
        let steps = plan_steps(&images, &none(), &HashSet::new());
        use StepKind::*;
        assert_eq!(
            shape(&steps),
            vec![
                (0, 0..1, vec![], None, Import),
                // env and apt are small: they go with pip, where the chain forks.
                (0, 1..4, vec![], Some(0), Load),
                (0, 4..6, vec![0], Some(1), Load),
                (1, 4..5, vec![1], Some(1), Load),
            ]
        );
    }

    #[test]
    fn an_image_ending_inside_another_ends_a_step_with_its_own_config() {
        let images = [
            image(&[("base", 100), ("py", 1)]),
            image(&[("base", 100), ("py", 1), ("app", 5)]),
        ];
        let steps = plan_steps(&images, &none(), &HashSet::new());
        use StepKind::*;
        assert_eq!(
            shape(&steps),
            vec![
                (0, 0..1, vec![], None, Import),
                (0, 1..2, vec![0], Some(0), Load),
                (1, 2..3, vec![1], Some(1), Load),
            ]
        );
        // A single-layer image is loaded, not imported (the import would make its own config).
        let single = [
            image(&[("busybox", 1)]),
            image(&[("busybox", 1), ("app", 1)]),
        ];
        assert_eq!(
            shape(&plan_steps(&single, &none(), &HashSet::new())),
            vec![
                (0, 0..1, vec![0], None, Load),
                (1, 1..2, vec![1], Some(0), Load)
            ]
        );
    }

    #[test]
    fn what_the_engine_has_is_left_out_and_images_it_has_whole_need_nothing() {
        let images = [
            image(&[("base", 100), ("alpha", 22)]),
            image(&[("base", 100), ("beta", 38)]),
            image(&[("base", 100), ("alpha", 22)]),
        ];
        let present: HashSet<Digest> = [d("/base")].into();
        let steps = plan_steps(&images, &[2].into(), &present);
        use StepKind::*;
        assert_eq!(
            shape(&steps),
            vec![
                (0, 1..2, vec![0], None, Load),
                (1, 1..2, vec![1], None, Load)
            ]
        );
        assert!(plan_steps(&images, &[0, 1, 2].into(), &present).is_empty());
    }

    #[test]
    fn images_with_every_layer_present_go_together_as_configs_only() {
        let images = [
            image(&[("base", 100)]),
            image(&[("base", 100), ("app", 5)]),
            image(&[("base", 100), ("app", 5)]),
        ];
        let present: HashSet<Digest> = [d("/base"), d("/base/app")].into();
        let steps = plan_steps(&images, &none(), &present);
        assert_eq!(
            shape(&steps),
            vec![(0, 0..0, vec![0, 1, 2], None, StepKind::Load)]
        );
        assert_eq!(steps[0].bytes, 0);
    }

    #[test]
    fn every_missing_layer_is_in_exactly_one_step_after_the_step_of_its_parent() {
        let images = [
            image(&[("b1", 50), ("m1", 20), ("t1", 5)]),
            image(&[("b1", 50), ("m1", 20), ("t2", 9)]),
            image(&[("b1", 50), ("m2", 2)]),
            image(&[("b2", 70), ("t3", 3), ("u", 1), ("v", 60)]),
            image(&[("b2", 70), ("t4", 8)]),
            image(&[("b3", 10)]),
            image(&[("b3", 10)]),
        ];
        let present: HashSet<Digest> = HashSet::new();
        let steps = plan_steps(&images, &none(), &present);
        let mut sent: HashMap<Digest, usize> = HashMap::new();
        for (s, step) in steps.iter().enumerate() {
            if let Some(a) = step.after {
                assert!(a < s, "step {s} waits for a later one");
                // The step below ends where this one begins.
                let below = &steps[a];
                let chain = &images[step.image].chains;
                assert_eq!(below.layers.end, step.layers.start);
                assert_eq!(
                    images[below.image].chains[below.layers.end - 1].0,
                    chain[step.layers.start - 1].0
                );
            } else {
                assert_eq!(step.layers.start, 0);
            }
            for k in step.layers.clone() {
                let chain = images[step.image].chains[k].0.clone();
                assert!(sent.insert(chain, s).is_none(), "a layer in two steps");
            }
            for &f in &step.finishes {
                assert_eq!(images[f].chains.len(), step.layers.end, "image {f}");
            }
        }
        let every: HashSet<&Digest> = images
            .iter()
            .flat_map(|i| &i.chains)
            .map(|c| &c.0)
            .collect();
        assert_eq!(sent.len(), every.len());
        // Every image is finished by exactly one step.
        let mut finished: Vec<usize> = steps.iter().flat_map(|s| s.finishes.clone()).collect();
        finished.sort_unstable();
        assert_eq!(finished, (0..images.len()).collect::<Vec<_>>());
    }
}
