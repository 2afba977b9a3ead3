//! Loading a delta bundle: the layers it leaves to its target, and the references its
//! patches apply to, are found on this host before a byte is sent — in the engine
//! (the classic store's layer chains, the containerd store's blobs, or a layer read
//! back from the engine's own export of an image that has it), or in a base bundle
//! given with `--base`. What cannot be found is named, with the bundle that carries
//! it, and nothing is loaded.
//!
//! Layers read back from the engine are spooled to unnamed temporary files, each
//! checked against its diff_id. A patched layer is rebuilt as it streams into the
//! upload: its reference is held in memory (the patch's `memory` says how much), the
//! result checked against its diff_id (and, for the containerd store, compressed as
//! the bundle's writer does and checked against the blob digest its manifest names).

use crate::deliver::archive::{io_fault, ArchiveError, CheckedBlob, ExtraLayers, Skip};
use crate::deliver::engine::{EngineState, LoadError, Store};
use crate::digest::{Digest, HashingReader};
use crate::docker::Endpoint;
use crate::platform::Selected;
use crate::progress::{Progress, Silent};
use crate::source::engine::EngineSource;
use crate::source::{LayerSink, SourceError};
use archpack_format::codec::{CheckedReader, CompressingReader};
use archpack_format::delta::{apply_patch, BaseKind, LayerPatch};
use archpack_format::{chain_ids, BundleReader, LayerStorage, Member};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;

/// Where a layer (or a patch's reference) comes from on this host.
#[derive(Debug, Clone)]
enum Origin {
    /// Read back from the engine: spooled from its export of this image.
    Engine { image: String },
    /// A layer member of a base bundle given with `--base`.
    Base { bundle: usize, member: Member },
}

#[derive(Debug, Clone)]
enum Supply {
    /// The engine holds the blob itself (the containerd store has a manifest naming it).
    InEngine,
    Layer {
        diff_id: Digest,
        size: u64,
        origin: Origin,
    },
    Patch {
        patch: Box<LayerPatch>,
        member: Member,
        reference: Origin,
    },
}

/// What a delta load takes from where, for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaLoadSummary {
    /// The bases the delta was made against, in words.
    pub made_against: Vec<String>,
    /// Layers the delta leaves out that the engine already has (not sent).
    pub layers_in_engine: usize,
    /// Layers read back from the engine's own export and sent again.
    pub layers_from_engine: usize,
    /// Layers taken from a `--base` bundle.
    pub layers_from_base: usize,
    /// Layers rebuilt from a patch.
    pub layers_patched: usize,
    /// The most memory one patch needs (its reference and window).
    pub patch_memory: u64,
}

/// The plan for a delta's missing parts.
pub struct DeltaPlan {
    supplies: HashMap<Digest, Supply>,
    /// Engine image → diff_ids to read back from its export.
    exports: BTreeMap<String, BTreeSet<Digest>>,
    /// diff_id → uncompressed size of what is read back.
    spool_sizes: HashMap<Digest, u64>,
    pub summary: DeltaLoadSummary,
}

impl DeltaPlan {
    /// Layers the classic store has as chains (recorded in `skip`) need nothing; every
    /// other layer of an image to send that the bundle does not hold whole gets a
    /// supply, or is named as missing.
    pub fn new(
        reader: &BundleReader,
        bundle_label: &str,
        selected: &[Selected],
        state: &EngineState,
        skip: &Skip,
        bases: &[BundleReader],
    ) -> Result<DeltaPlan, LoadError> {
        let index = &reader.index;
        let delta = index.delta.as_ref();
        let made_against: Vec<String> = delta
            .map(|d| d.bases.iter().map(describe_base).collect())
            .unwrap_or_default();
        let mut plan = DeltaPlan {
            supplies: HashMap::new(),
            exports: BTreeMap::new(),
            spool_sizes: HashMap::new(),
            summary: DeltaLoadSummary {
                made_against: made_against.clone(),
                ..Default::default()
            },
        };
        let mut missing: Vec<String> = Vec::new();
        let base_layer = |diff_id: &Digest| -> Option<Origin> {
            bases.iter().enumerate().find_map(|(bundle, b)| {
                b.index
                    .members
                    .iter()
                    .find(|m| {
                        m.kind == archpack_format::MemberKind::Layer
                            && m.diff_id.as_ref() == Some(diff_id)
                    })
                    .map(|m| Origin::Base {
                        bundle,
                        member: m.clone(),
                    })
            })
        };
        // An engine export sends whole images: read a layer back from an image already
        // being exported, else from the smallest image that has it.
        let engine_layer = |diff_id: &Digest, chosen: &BTreeMap<String, BTreeSet<Digest>>| {
            let holders = state.held_layers.get(diff_id)?;
            holders
                .iter()
                .find(|(id, _)| chosen.contains_key(id))
                .or_else(|| holders.iter().min_by_key(|(id, size)| (*size, id.clone())))
                .map(|(id, _)| Origin::Engine { image: id.clone() })
        };
        for s in selected {
            if skip.images.contains(&s.entry.config) {
                continue;
            }
            let diffs = index.diff_ids_of(s.entry).unwrap_or_default();
            let image = format!("{} ({})", s.image.name, s.entry.platform);
            for ((blob, diff_id), chain) in s.entry.layers.iter().zip(&diffs).zip(chain_ids(&diffs))
            {
                if plan.supplies.contains_key(blob) || skip.chains.contains(&chain) {
                    continue;
                }
                let supply = match index.layer(blob) {
                    None | Some(LayerStorage::Whole { .. }) => continue,
                    Some(LayerStorage::Required(r)) => {
                        let in_engine = state.store == Store::Containerd
                            && r.manifests.iter().any(|m| state.present_images.contains(m));
                        // The containerd store takes the blob as the manifest names it:
                        // a base bundle's copy is that blob; the engine's is recompressed.
                        let origin = if state.store == Store::Containerd {
                            base_layer(diff_id)
                                .filter(|o| matches!(o, Origin::Base { member, .. } if member.digest == *blob))
                                .or_else(|| engine_layer(diff_id, &plan.exports))
                                .or_else(|| base_layer(diff_id))
                        } else {
                            base_layer(diff_id).or_else(|| engine_layer(diff_id, &plan.exports))
                        };
                        match (in_engine, origin) {
                            (true, _) => Supply::InEngine,
                            (false, Some(origin)) => Supply::Layer {
                                diff_id: diff_id.clone(),
                                size: r.uncompressed_size,
                                origin,
                            },
                            (false, None) => {
                                let held = r.holders.join(", ");
                                missing.push(format!(
                                    "layer {} of {image}, which the delta leaves to its target{}",
                                    diff_id,
                                    base_note(index, r.base, &held)
                                ));
                                continue;
                            }
                        }
                    }
                    Some(LayerStorage::Patched { patch, member }) => {
                        let reference = &patch.reference;
                        let origin = base_layer(&reference.diff_id)
                            .or_else(|| engine_layer(&reference.diff_id, &plan.exports));
                        match origin {
                            Some(origin) => Supply::Patch {
                                patch: Box::new(patch.clone()),
                                member: member.clone(),
                                reference: origin,
                            },
                            None => {
                                missing.push(format!(
                                    "layer {} (the reference the patch for layer {} of {image} applies to){}",
                                    reference.diff_id,
                                    patch.diff_id,
                                    base_note(index, reference.base, &reference.holder)
                                ));
                                continue;
                            }
                        }
                    }
                };
                plan.count(&supply);
                plan.supplies.insert(blob.clone(), supply);
            }
        }
        if !missing.is_empty() {
            let carried_by: Vec<String> = delta
                .map(|d| {
                    d.bases
                        .iter()
                        .filter(|b| b.kind == BaseKind::Bundle)
                        .map(|b| b.file.clone())
                        .collect()
                })
                .unwrap_or_default();
            return Err(LoadError::DeltaIncomplete {
                bundle: bundle_label.to_string(),
                made_against: made_against.join(", "),
                missing,
                fix: if carried_by.is_empty() {
                    "load the images the inventory listed first (or make a full bundle: create without --base)".into()
                } else {
                    format!(
                        "load {} first, or give it here with --base {}",
                        carried_by.join(" / "),
                        carried_by[0]
                    )
                },
            });
        }
        Ok(plan)
    }

    fn count(&mut self, supply: &Supply) {
        let mut spool = |origin: &Origin, diff_id: &Digest, size: u64| {
            if let Origin::Engine { image } = origin {
                self.exports
                    .entry(image.clone())
                    .or_default()
                    .insert(diff_id.clone());
                self.spool_sizes.insert(diff_id.clone(), size);
            }
        };
        match supply {
            Supply::InEngine => self.summary.layers_in_engine += 1,
            Supply::Layer {
                diff_id,
                size,
                origin,
            } => {
                spool(origin, diff_id, *size);
                match origin {
                    Origin::Engine { .. } => self.summary.layers_from_engine += 1,
                    Origin::Base { .. } => self.summary.layers_from_base += 1,
                }
            }
            Supply::Patch {
                patch, reference, ..
            } => {
                spool(
                    reference,
                    &patch.reference.diff_id,
                    patch.reference.uncompressed_size,
                );
                self.summary.layers_patched += 1;
                self.summary.patch_memory = self.summary.patch_memory.max(patch.memory);
            }
        }
    }

    /// Whether the engine must be read back before the load.
    pub fn needs_engine_export(&self) -> bool {
        !self.exports.is_empty()
    }

    /// Reads back what the plan takes from the engine (each image's export, once),
    /// keeping only the layers it wants, each checked against its diff_id.
    pub fn gather<'a>(
        self,
        endpoint: &Endpoint,
        reader: &'a BundleReader,
        bases: &'a [BundleReader],
        level: i32,
        progress: &dyn Progress,
    ) -> Result<DeltaLayers<'a>, LoadError> {
        let mut spooled: HashMap<Digest, File> = HashMap::new();
        if !self.exports.is_empty() {
            let mut source = EngineSource::connect(endpoint).map_err(source_error)?;
            for image in self.exports.keys() {
                source
                    .add(image, format!("image {image}"))
                    .map_err(source_error)?;
            }
            let total: u64 = self.spool_sizes.values().sum();
            progress.start("reading base layers from the engine", Some(total));
            let mut sink = SpoolSink {
                wanted: self.spool_sizes.clone(),
                spooled: &mut spooled,
                progress,
            };
            source
                .read_layers_at_once(&mut sink)
                .map_err(source_error)?;
            progress.finish();
            if let Some(missing) = self.spool_sizes.keys().find(|d| !spooled.contains_key(*d)) {
                return Err(LoadError::Refused(format!(
                    "the engine's export did not carry layer {missing}, which it lists; nothing was loaded"
                )));
            }
        }
        Ok(DeltaLayers {
            supplies: self.supplies,
            spooled,
            reader,
            bases,
            level,
            threads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        })
    }
}

fn describe_base(b: &archpack_format::delta::DeltaBase) -> String {
    match b.kind {
        BaseKind::Bundle => format!("{} (bundle {})", b.name, b.file),
        BaseKind::Inventory => format!("{} (inventory {})", b.name, b.file),
    }
}

fn base_note(index: &archpack_format::BundleIndex, base: usize, held: &str) -> String {
    let Some(b) = index.delta.as_ref().and_then(|d| d.bases.get(base)) else {
        return String::new();
    };
    let held = if held.is_empty() {
        String::new()
    } else {
        format!("held by {held} in ")
    };
    format!("; {held}{}", describe_base(b))
}

fn source_error(e: SourceError) -> LoadError {
    LoadError::Refused(format!("reading the engine's own images back: {e}"))
}

/// Keeps the layers it wants from an engine export, each in an unnamed temporary file.
struct SpoolSink<'s> {
    wanted: HashMap<Digest, u64>,
    spooled: &'s mut HashMap<Digest, File>,
    progress: &'s dyn Progress,
}

impl LayerSink for SpoolSink<'_> {
    fn wants(&self, diff_id: &Digest) -> bool {
        self.wanted.contains_key(diff_id) && !self.spooled.contains_key(diff_id)
    }

    fn has_size(&self, _: &Digest) -> Option<u64> {
        None
    }

    fn wants_size(&self, size: u64) -> bool {
        self.wanted
            .iter()
            .any(|(d, s)| *s == size && !self.spooled.contains_key(d))
    }

    fn layer(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
    ) -> Result<(), SourceError> {
        let io_err = |e: io::Error| SourceError::EngineImage {
            what: origin.to_string(),
            detail: format!("spooling a layer: {e}"),
        };
        let mut file = tempfile::tempfile().map_err(io_err)?;
        let mut hashing = HashingReader::new(data);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match hashing.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            file.write_all(&buf[..n]).map_err(io_err)?;
            self.progress.advance(n as u64);
        }
        let (diff_id, size) = hashing.finish();
        if let Some(e) = expected {
            if *e != diff_id {
                return Err(SourceError::EngineImage {
                    what: origin.to_string(),
                    detail: format!("a layer named {e} hashes to {diff_id}"),
                });
            }
        }
        if self.wanted.get(&diff_id) == Some(&size) && !self.spooled.contains_key(&diff_id) {
            file.rewind().map_err(io_err)?;
            self.spooled.insert(diff_id, file);
        }
        Ok(())
    }

    fn config(&mut self, _: &Digest, _: &str, _: Vec<u8>) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The layers of a delta load that the bundle does not hold whole, ready to stream.
pub struct DeltaLayers<'a> {
    supplies: HashMap<Digest, Supply>,
    spooled: HashMap<Digest, File>,
    reader: &'a BundleReader,
    bases: &'a [BundleReader],
    level: i32,
    threads: u32,
}

/// A spooled file read positionally (the file is shared; no cursor moves).
struct SpoolReader<'f> {
    file: &'f File,
    pos: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl DeltaLayers<'_> {
    /// A layer's uncompressed tar from where the plan found it, checked.
    fn open<'s>(
        &'s self,
        origin: &'s Origin,
        diff_id: &Digest,
        size: u64,
    ) -> Result<Box<dyn Read + 's>, ArchiveError> {
        match origin {
            Origin::Engine { image } => {
                let file = self
                    .spooled
                    .get(diff_id)
                    .ok_or_else(|| ArchiveError::NeedsBase {
                        layer: diff_id.to_string(),
                    })?;
                Ok(Box::new(CheckedReader::new(
                    SpoolReader { file, pos: 0 },
                    format!("layer {diff_id} read back from {image}"),
                    diff_id.clone(),
                    size,
                )))
            }
            Origin::Base { bundle, member } => {
                let base = &self.bases[*bundle];
                let layer =
                    base.layer_reader(member, &Silent)
                        .map_err(|f| ArchiveError::Corrupt {
                            member: format!("{} in {}", f.member(), base.path.display()),
                            detail: f.to_string(),
                        })?;
                Ok(Box::new(layer))
            }
        }
    }

    /// A patch's reference, whole in memory (zstd reads it as its prefix).
    fn reference(&self, origin: &Origin, patch: &LayerPatch) -> Result<Vec<u8>, ArchiveError> {
        let r = &patch.reference;
        let mut bytes = Vec::with_capacity(r.uncompressed_size as usize);
        self.open(origin, &r.diff_id, r.uncompressed_size)?
            .read_to_end(&mut bytes)
            .map_err(|e| io_fault(e, "a patch's reference"))?;
        Ok(bytes)
    }
}

impl ExtraLayers for DeltaLayers<'_> {
    fn held_by_engine(&self, blob: &Digest) -> bool {
        matches!(self.supplies.get(blob), Some(Supply::InEngine))
    }

    fn stream(
        &self,
        blob: &Digest,
        stored: bool,
        write: &mut dyn FnMut(&mut dyn Read) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let storage = self
            .reader
            .index
            .layer(blob)
            .ok_or_else(|| ArchiveError::NeedsBase {
                layer: blob.to_string(),
            })?;
        let supply = self
            .supplies
            .get(blob)
            .ok_or_else(|| ArchiveError::NeedsBase {
                layer: blob.to_string(),
            })?;
        let blob_size = storage.blob_size();
        // The containerd store gets the blob the manifest names: compressed here as the
        // writer did, and checked against that digest.
        let deliver = |plain: Box<dyn Read + '_>,
                       write: &mut dyn FnMut(&mut dyn Read) -> Result<(), ArchiveError>|
         -> Result<(), ArchiveError> {
            if !stored {
                let mut plain = plain;
                return write(&mut plain);
            }
            let compressing = CompressingReader::new(plain, self.level, self.threads)
                .map_err(|e| io_fault(e, "compressing a layer"))?;
            let mut checked = CheckedReader::new(
                compressing,
                format!(
                    "layer {} compressed for the containerd store (give the base bundle with --base if this archpack's zstd differs from the writer's)",
                    storage.diff_id()
                ),
                blob.clone(),
                blob_size,
            );
            write(&mut checked)
        };
        match supply {
            Supply::InEngine => Err(ArchiveError::NeedsBase {
                layer: blob.to_string(),
            }),
            Supply::Layer {
                diff_id,
                size,
                origin,
            } => {
                if let (true, Origin::Base { bundle, member }) = (stored, origin) {
                    if member.digest == *blob {
                        let mut checked = CheckedBlob::new(&self.bases[*bundle], member, &Silent);
                        return write(&mut checked);
                    }
                }
                deliver(self.open(origin, diff_id, *size)?, write)
            }
            Supply::Patch {
                patch,
                member,
                reference,
            } => {
                let reference = self.reference(reference, patch)?;
                let patch_bytes = CheckedBlob::new(self.reader, member, &Silent);
                let rebuilt = apply_patch(patch_bytes, &reference)
                    .map_err(|e| io_fault(e, "applying a patch"))?;
                let checked = CheckedReader::new(
                    rebuilt,
                    format!("layer {} rebuilt from patch {}", patch.diff_id, member.name),
                    patch.diff_id.clone(),
                    patch.uncompressed_size,
                );
                deliver(Box::new(checked), write)
            }
        }
    }
}
