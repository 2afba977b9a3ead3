//! Writing a bundle: reserve the front region for the index and signature, place every
//! needed layer once (zstd), then the configs, manifests, image indexes and the OCI
//! layout files, then the index into its slot.
//!
//! Members go in the order SPEC §2 fixes — layers by platform, image name, position —
//! whatever order their bytes arrive in. A source that streams layers in its own order
//! (an engine's export, a compressed archive) hands them over as they come; a layer that
//! arrives before its turn is compressed once into a spill file (unnamed, gone with the
//! process) and copied into place when its turn comes. Sources that can read in order
//! never spill, and the output is the same bytes either way.

use crate::codec;
use crate::delta::{
    listing_of, patch_encoder, patch_memory, patch_window_log, Delta, DeltaBases, HeldLayer,
    LayerPatch, PatchReference, RequiredLayer,
};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::FormatError;
use crate::index::*;
use crate::limits::{max_member_bytes, MAX_COMPOSE_BYTES, MAX_INDEX_BYTES};
use crate::oci;
use crate::platform::Platform;
use crate::progress::{Progress, ProgressReader};
use crate::ustar::{member_span, padding, BLOCK};
use oci_spec::image::MediaType;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zstd::stream::raw::Operation as _;

/// Signs the index bytes; archpack's trust stage implements it.
pub trait IndexSigner {
    /// The minisign signature file text for `data`, with `trusted_comment`.
    fn sign(
        &self,
        data: &[u8],
        trusted_comment: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>>;
}

pub struct WriterOptions<'a> {
    /// zstd level (1–19).
    pub level: i32,
    /// zstd workers (0 means one; the bytes do not depend on it).
    pub threads: u32,
    pub bundle_name: String,
    /// Unix time of creation (SOURCE_DATE_EPOCH when set): `created` and every mtime.
    pub created: u64,
    /// The writing tool (`archpack 0.1.0`), recorded in the index.
    pub tool: String,
    pub compose: Option<ComposeFiles>,
    pub signer: Option<&'a dyn IndexSigner>,
    /// Static archpack binaries to carry (format 1.1), with an installer for them.
    pub loaders: Vec<crate::loaders::LoaderInput>,
    /// The bundle's file name, the installer's default for where it is.
    pub bundle_file: String,
    /// Make a delta (format 2.0) against these bases (SPEC §12).
    pub delta: Option<DeltaOptions<'a>>,
    /// Find what layers of different platforms share and cut them into frames so
    /// that each shared run can be stored once (SPEC §14; the writer still writes the
    /// single file, and [`Written::shares`] says what a cut may store once).
    pub share_parts: bool,
}

/// How a delta is made.
pub struct DeltaOptions<'a> {
    pub bases: &'a DeltaBases,
    /// Patch changed layers against references of at most this many bytes (`None`:
    /// no patches).
    pub patch_max_reference: Option<u64>,
}

/// An image the bundle will hold, known before any layer is read.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub logical: String,
    pub platform: Platform,
    /// Names applied on the target beside the logical one (what the user packed it from).
    pub source_tags: Vec<String>,
    /// What tells the source's images apart (its config digest, or an engine's image
    /// ID); the source names it when it delivers the config.
    pub identity: Digest,
    /// The config digest (= the image ID), when known before the config arrives.
    pub config: Option<Digest>,
    pub diff_ids: Vec<Digest>,
    /// Where it comes from, for messages.
    pub origin: String,
}

/// What became of a layer handed to [`BundleWriter::layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerArrival {
    /// Written in its place.
    Placed,
    /// Compressed ahead of its turn; copied into place later.
    Spilled,
    /// Not a layer the bundle needs (or one it has already).
    NotNeeded,
    /// A layer the delta's target holds: only its blob digest was taken.
    Omitted,
}

#[derive(Debug, Clone)]
struct StoredLayer {
    digest: Digest,
    size: u64,
    uncompressed: u64,
}

/// A compressed layer waiting in the spill file.
struct Spilled {
    at: u64,
    layer: StoredLayer,
}

/// Shared parts: a layer held uncompressed until its counterpart arrives.
struct RawLayer {
    origin: String,
    at: u64,
    size: u64,
    entries: Vec<crate::parts::Entry>,
}

/// Shared parts: a hub layer compressed in frames, its uncompressed copy kept, so that
/// each member that comes later copies the frames it carries alike.
struct PlacedHub {
    raw: RawLayer,
    file: File,
    at: u64,
    blob: String,
    frames: Vec<HubFrame>,
}

/// One frame of a hub: the uncompressed stretch it holds, and where it lies in the blob.
struct HubFrame {
    raw_at: u64,
    raw_len: u64,
    blob_at: u64,
    blob_len: u64,
}

/// How one zstd frame of a layer is made: compressed from the next `n` bytes, or (a
/// run its counterpart already holds as a frame) those bytes read through and the
/// counterpart's frame copied.
enum Frame {
    Compress(u64),
    Copy {
        raw: u64,
        from: File,
        at: u64,
        len: u64,
    },
}

/// A layer compressed: its diff_id, what was stored, and each frame's offset and size
/// in the blob.
type Compressed = (Digest, StoredLayer, Vec<(u64, u64)>);

/// How a layer is compressed: one zstd frame per entry of `frames` (none: one frame for
/// all of it), and its diff_id when already known (a held layer was hashed as it
/// arrived; its private copy is not hashed again).
#[derive(Default)]
struct LayerPlan {
    frames: Vec<Frame>,
    diff_id: Option<Digest>,
}

/// A layer's uncompressed bytes on their way to the encoder: counted, and hashed
/// unless the diff_id is known.
struct LayerInput<R> {
    inner: R,
    hasher: Option<crate::digest::Sha256>,
    count: u64,
}

impl<R: Read> Read for LayerInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Where a compressed layer's bytes went.
struct Placement {
    arrival: LayerArrival,
    file: File,
    at: u64,
    layer: StoredLayer,
    /// Each frame's offset and size in the blob.
    frames: Vec<(u64, u64)>,
}

pub struct BundleWriter<'f, 'o> {
    file: &'f File,
    path: PathBuf,
    spill_dir: PathBuf,
    spill: Option<File>,
    spill_len: u64,
    opts: WriterOptions<'o>,
    /// Sorted by platform, then logical name.
    plan: Vec<PlannedImage>,
    /// Layer diff_ids in the order they are placed, each once.
    order: Vec<Digest>,
    needed: HashSet<Digest>,
    next: usize,
    spills: usize,
    placed: HashMap<Digest, StoredLayer>,
    spilled: HashMap<Digest, Spilled>,
    configs: HashMap<Digest, Vec<u8>>,
    /// Delta: layers left to the target (diff_id → what holds it).
    omitted: HashMap<Digest, HeldLayer>,
    /// Delta: blobs of omitted layers no base names, compressed only to learn them.
    measured: HashMap<Digest, StoredLayer>,
    /// Where each diff_id is first used: (plan index, position).
    first_use: HashMap<Digest, (usize, usize)>,
    patches: Vec<crate::delta::LayerPatch>,
    pos: u64,
    members: Vec<Member>,
    index_len: u64,
    signature_len: u64,
    created: String,
    trusted_comment: String,
    buf: Vec<u8>,
    bytes_in: u64,
    /// Shared parts: the layer of the first platform whose frames each later
    /// platform's layer at the same position may copy (member → hub).
    hub_of: HashMap<Digest, Digest>,
    /// The same the other way: each hub's members, in file order.
    hub_members: HashMap<Digest, Vec<Digest>>,
    /// Hubs compressed in frames, kept for members still to come.
    placed_hubs: HashMap<Digest, PlacedHub>,
    raw: Option<File>,
    raw_len: u64,
    held: HashMap<Digest, RawLayer>,
    shares: Vec<crate::volumes::SharedRange>,
    /// Kept between frames and layers (made on first use).
    compressor: Option<zstd::stream::raw::Encoder<'static>>,
}

/// What a finished bundle holds.
#[derive(Debug)]
pub struct Written {
    pub index: BundleIndex,
    /// Bytes in the file.
    pub bundle_bytes: u64,
    /// Uncompressed layer bytes read from the sources.
    pub layer_bytes_in: u64,
    /// Layers that arrived ahead of their turn and were spilled.
    pub layers_spilled: usize,
    /// Shared parts: the frames one layer has that another has byte for byte.
    pub shares: Vec<crate::volumes::SharedRange>,
}

impl<'f, 'o> BundleWriter<'f, 'o> {
    /// Starts a bundle in `file` (a temporary file; `path` names the output in messages)
    /// for the images of `plan`. Spilled layers go to an unnamed file in `spill_dir`.
    pub fn new(
        file: &'f File,
        path: &Path,
        spill_dir: &Path,
        mut plan: Vec<PlannedImage>,
        opts: WriterOptions<'o>,
    ) -> Result<BundleWriter<'f, 'o>, FormatError> {
        plan.sort_by(|a, b| (&a.platform, &a.logical).cmp(&(&b.platform, &b.logical)));
        if let Some(files) = &opts.compose {
            for (what, text) in
                std::iter::once(("the compose template".to_string(), &files.template)).chain(
                    files
                        .overrides
                        .iter()
                        .map(|(p, t)| (format!("the compose override for {p}"), t)),
                )
            {
                if text.len() as u64 > MAX_COMPOSE_BYTES {
                    return Err(FormatError::TooLarge {
                        what,
                        size: text.len() as u64,
                        limit: MAX_COMPOSE_BYTES,
                    });
                }
            }
        }
        // A delta leaves out a layer only when every platform that uses it holds it.
        let mut omitted: HashMap<Digest, HeldLayer> = HashMap::new();
        let mut kept = HashSet::new();
        if let Some(delta) = &opts.delta {
            for image in &plan {
                for d in &image.diff_ids {
                    match delta.bases.held(&image.platform, d) {
                        Some(held) if !kept.contains(d) => {
                            omitted.entry(d.clone()).or_insert_with(|| held.clone());
                        }
                        _ => {
                            omitted.remove(d);
                            kept.insert(d.clone());
                        }
                    }
                }
            }
        }
        if opts.share_parts && opts.delta.is_some() {
            return Err(FormatError::Internal(
                "a delta bundle cannot share parts (yet): leave out --share-parts or --base".into(),
            ));
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        let mut first_use = HashMap::new();
        for (i, image) in plan.iter().enumerate() {
            for (position, d) in image.diff_ids.iter().enumerate() {
                first_use.entry(d.clone()).or_insert((i, position));
                if !omitted.contains_key(d) && seen.insert(d.clone()) {
                    order.push(d.clone());
                }
            }
        }
        let created = rfc3339(opts.created);
        let trusted_comment = trusted_comment(&opts.bundle_name, opts.created, &created);
        let placeholder = render(&placeholder_index(
            &plan,
            order.len(),
            &omitted,
            &opts,
            &created,
        ));
        for l in &opts.loaders {
            if crate::loaders::platform_of(&l.target).is_none() {
                return Err(FormatError::Internal(format!(
                    "no loader target {:?} (amd64, arm64, arm-v7, arm-v6)",
                    l.target
                )));
            }
        }
        let index_len = placeholder.len() as u64 + 1;
        if index_len > MAX_INDEX_BYTES {
            return Err(FormatError::TooLarge {
                what: "the bundle index".into(),
                size: index_len,
                limit: MAX_INDEX_BYTES,
            });
        }
        let signature_len = match opts.signer {
            Some(s) => s
                .sign(&placeholder, &trusted_comment)
                .map_err(|e| FormatError::Signing(e.to_string()))?
                .len() as u64,
            None => 0,
        };
        let region_end = member_span(index_len)
            + if signature_len > 0 {
                member_span(signature_len)
            } else {
                0
            };
        let hub_of = if opts.share_parts {
            hubs(&plan, &order)
        } else {
            HashMap::new()
        };
        let mut hub_members: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for d in &order {
            if let Some(hub) = hub_of.get(d) {
                hub_members.entry(hub.clone()).or_default().push(d.clone());
            }
        }
        let mut writer = BundleWriter {
            hub_of,
            hub_members,
            placed_hubs: HashMap::new(),
            raw: None,
            raw_len: 0,
            held: HashMap::new(),
            shares: Vec::new(),
            compressor: None,
            file,
            path: path.to_path_buf(),
            spill_dir: spill_dir.to_path_buf(),
            spill: None,
            spill_len: 0,
            opts,
            plan,
            needed: order
                .iter()
                .cloned()
                .chain(
                    omitted
                        .iter()
                        .filter(|(_, h)| h.blob.is_none())
                        .map(|(d, _)| d.clone()),
                )
                .collect(),
            order,
            omitted,
            measured: HashMap::new(),
            first_use,
            patches: Vec::new(),
            next: 0,
            spills: 0,
            placed: HashMap::new(),
            spilled: HashMap::new(),
            configs: HashMap::new(),
            pos: region_end,
            members: Vec::new(),
            index_len,
            signature_len,
            created,
            trusted_comment,
            buf: vec![0u8; 1 << 20],
            bytes_in: 0,
        };
        writer.seek_to_end()?;
        Ok(writer)
    }

    /// The images as they will be stored (sorted).
    pub fn plan(&self) -> &[PlannedImage] {
        &self.plan
    }

    /// Whether the bundle still needs the layer with this diff_id.
    pub fn wants(&self, diff_id: &Digest) -> bool {
        self.needed.contains(diff_id)
            && !self.held.contains_key(diff_id)
            && !self.placed.contains_key(diff_id)
            && !self.spilled.contains_key(diff_id)
            && !self.measured.contains_key(diff_id)
    }

    /// A layer the delta leaves out but whose blob digest no base names.
    fn to_measure(&self, diff_id: &Digest) -> bool {
        self.omitted.contains_key(diff_id) && self.wants(diff_id)
    }

    /// Uncompressed size of a layer already taken (placed or spilled).
    pub fn taken_size(&self, diff_id: &Digest) -> Option<u64> {
        self.placed
            .get(diff_id)
            .or_else(|| self.spilled.get(diff_id).map(|s| &s.layer))
            .or_else(|| self.measured.get(diff_id))
            .map(|l| l.uncompressed)
            .or_else(|| self.held.get(diff_id).map(|r| r.size))
    }

    /// The config of the image(s) the source knows as `identity`, byte for byte (the
    /// image ID on the target is its digest). It must be an image config whose
    /// `rootfs.diff_ids` are the planned image's layers, and the config digest planned
    /// when one was.
    pub fn config(
        &mut self,
        identity: &Digest,
        origin: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FormatError> {
        let digest = Digest::of(&bytes);
        let bad = |detail: String| FormatError::BadMember {
            path: PathBuf::from(origin),
            member: format!("config {digest}"),
            detail,
        };
        let limit = max_member_bytes(MemberKind::Config);
        let mut used = false;
        for image in self.plan.iter_mut().filter(|p| p.identity == *identity) {
            if bytes.len() as u64 > limit {
                return Err(FormatError::TooLarge {
                    what: format!("the config of {}", image.origin),
                    size: bytes.len() as u64,
                    limit,
                });
            }
            let facts = config_facts(&bytes).map_err(|e| bad(e.to_string()))?;
            if facts.diff_ids != image.diff_ids {
                return Err(bad(format!(
                    "it lists {} layers, but {} has {}",
                    facts.diff_ids.len(),
                    image.origin,
                    image.diff_ids.len()
                )));
            }
            match &image.config {
                Some(planned) if *planned != digest => {
                    return Err(bad(format!(
                        "{} was planned with config {planned}",
                        image.origin
                    )))
                }
                _ => image.config = Some(digest.clone()),
            }
            used = true;
        }
        if used {
            self.configs.insert(digest, bytes);
        }
        Ok(())
    }

    /// One layer's uncompressed tar stream. `expected` is its diff_id when the source
    /// knows it; `None` means "identify it by its content" (the bytes are compressed
    /// before they can be told apart, and dropped if the bundle has no use for them).
    pub fn layer(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
        progress: &dyn Progress,
    ) -> Result<LayerArrival, FormatError> {
        if let Some(d) = expected {
            if !self.wants(d) {
                return Ok(LayerArrival::NotNeeded);
            }
            if self.to_measure(d) {
                let (diff_id, stored, _) =
                    self.compress(origin, data, io::sink(), progress, &LayerPlan::default())?;
                if diff_id != *d {
                    return Err(FormatError::LayerMismatch {
                        origin: origin.to_string(),
                        expected: d.clone(),
                        actual: diff_id,
                    });
                }
                self.measured.insert(diff_id, stored);
                return Ok(LayerArrival::Omitted);
            }
        }
        // Shared parts: a layer that may pair waits uncompressed for its counterpart
        // (one whose diff_id is unknown until read, too).
        if !self.hub_of.is_empty() && expected.is_none_or(|d| self.may_share(d)) {
            return self.hold(origin, expected, data, progress);
        }
        // In its place when it is (or may be) the next one; ahead of its turn, spilled.
        let in_place = match expected {
            Some(d) => self.order.get(self.next) == Some(d),
            None => true,
        };
        let (diff_id, stored, _) = if in_place {
            self.compress_in_place(origin, data, progress, &LayerPlan::default())?
        } else {
            self.compress_to_spill(origin, data, progress, &LayerPlan::default())?
        };
        if let Some(expected) = expected {
            if *expected != diff_id {
                self.discard_in_place(in_place)?;
                return Err(FormatError::LayerMismatch {
                    origin: origin.to_string(),
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
        }
        if !self.wants(&diff_id) {
            self.discard_in_place(in_place)?;
            return Ok(LayerArrival::NotNeeded);
        }
        if self.to_measure(&diff_id) {
            // Identified only once compressed: the delta needs just its digest.
            self.discard_in_place(in_place)?;
            self.measured.insert(diff_id, stored);
            return Ok(LayerArrival::Omitted);
        }
        if in_place && self.order.get(self.next) == Some(&diff_id) {
            self.commit_in_place(diff_id, stored)?;
            self.drain_spilled()?;
            return Ok(LayerArrival::Placed);
        }
        if in_place {
            // Compressed in place on speculation, but another layer's turn: move it aside.
            let at = self.pos + BLOCK;
            let spill_at = self.copy_to_spill(at, stored.size)?;
            self.discard_in_place(true)?;
            self.spilled.insert(
                diff_id,
                Spilled {
                    at: spill_at,
                    layer: stored,
                },
            );
        } else {
            let at = self.spill_len - stored.size;
            self.spilled.insert(diff_id, Spilled { at, layer: stored });
        }
        self.spills += 1;
        Ok(LayerArrival::Spilled)
    }

    fn write_error(&self, error: io::Error) -> FormatError {
        FormatError::Write {
            path: self.path.clone(),
            error,
        }
    }

    fn seek_to_end(&mut self) -> Result<(), FormatError> {
        let mut f = self.file;
        f.seek(SeekFrom::Start(self.pos))
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// Compresses `data` into `sink` as `plan` says; returns its diff_id, what was
    /// stored and where each frame lies in it.
    fn compress<W: Write>(
        &mut self,
        origin: &str,
        data: &mut dyn Read,
        sink: W,
        progress: &dyn Progress,
        plan: &LayerPlan,
    ) -> Result<Compressed, FormatError> {
        let path = self.path.clone();
        let write_err = |error: io::Error| FormatError::Write {
            path: path.clone(),
            error,
        };
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, sink));
        let mut input = LayerInput {
            inner: ProgressReader {
                inner: data,
                progress,
            },
            hasher: plan.diff_id.is_none().then(crate::digest::Sha256::new),
            count: 0,
        };
        let whole = [Frame::Compress(u64::MAX)];
        let frames = if plan.frames.is_empty() {
            &whole[..]
        } else {
            &plan.frames[..]
        };
        let mut spans = Vec::with_capacity(frames.len());
        for frame in frames {
            let start = out.written();
            match frame {
                Frame::Compress(n) => {
                    let compressor = match self.compressor.take() {
                        Some(c) => c,
                        None => codec::compressor(self.opts.level, self.opts.threads)
                            .map_err(write_err)?,
                    };
                    let mut encoder = zstd::stream::zio::Writer::new(out, compressor);
                    self.pump(origin, &mut (&mut input).take(*n), &mut encoder)?;
                    encoder.finish().map_err(write_err)?;
                    let (sink, mut compressor) = encoder.into_inner();
                    compressor.reinit().map_err(write_err)?;
                    self.compressor = Some(compressor);
                    out = sink;
                }
                Frame::Copy { raw, from, at, len } => {
                    // Read through (for the diff_id); the counterpart's frame stands for it.
                    let skipped =
                        self.pump(origin, &mut (&mut input).take(*raw), &mut io::sink())?;
                    if skipped != *raw {
                        return Err(FormatError::Internal(format!(
                            "{origin}: a shared run ends past the layer"
                        )));
                    }
                    // The counterpart's frame is in this bundle's own files: failing
                    // to read it back is a failure to write the bundle.
                    let mut from = FileRange {
                        file: from,
                        pos: *at,
                        end: at + len,
                    };
                    copy_counted(&mut from, &mut out, &mut self.buf)
                        .map_err(|e| self.write_error(e.into_io()))?;
                }
            }
            spans.push((start, out.written() - start));
        }
        if frames.len() > 1 && self.pump(origin, &mut input, &mut io::sink())? != 0 {
            return Err(FormatError::Internal(format!(
                "{origin}: the layer is longer than its frames"
            )));
        }
        let uncompressed = input.count;
        let diff_id = match (input.hasher, &plan.diff_id) {
            (Some(hasher), _) => Digest::finish(hasher),
            (None, Some(known)) => known.clone(),
            (None, None) => return Err(FormatError::Internal("a layer went unhashed".into())),
        };
        self.bytes_in += uncompressed;
        let (buffered, digest, size) = out.finish();
        buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        Ok((
            diff_id,
            StoredLayer {
                digest,
                size,
                uncompressed,
            },
            spans,
        ))
    }

    /// Copies a layer's bytes `from` its source into `to` through the writer's buffer;
    /// returns the bytes copied.
    fn pump(
        &mut self,
        origin: &str,
        from: &mut dyn Read,
        to: &mut dyn Write,
    ) -> Result<u64, FormatError> {
        copy_counted(from, to, &mut self.buf).map_err(|e| match e {
            CopyError::Read(error) => FormatError::LayerRead {
                origin: origin.to_string(),
                error,
            },
            CopyError::Write(error) => self.write_error(error),
        })
    }

    fn compress_in_place(
        &mut self,
        origin: &str,
        data: &mut dyn Read,
        progress: &dyn Progress,
        plan: &LayerPlan,
    ) -> Result<Compressed, FormatError> {
        let mut f = self.file;
        f.seek(SeekFrom::Start(self.pos + BLOCK))
            .map_err(|e| self.write_error(e))?;
        let file = self.file;
        self.compress(origin, data, file, progress, plan)
    }

    fn spill_file(&mut self) -> Result<&File, FormatError> {
        temp_file(&mut self.spill, &self.spill_dir)
    }

    fn compress_to_spill(
        &mut self,
        origin: &str,
        data: &mut dyn Read,
        progress: &dyn Progress,
        plan: &LayerPlan,
    ) -> Result<Compressed, FormatError> {
        let at = self.spill_len;
        let spill = self
            .spill_file()?
            .try_clone()
            .map_err(|e| self.write_error(e))?;
        let mut s = &spill;
        s.seek(SeekFrom::Start(at))
            .map_err(|e| self.write_error(e))?;
        let (diff_id, stored, spans) = self.compress(origin, data, &spill, progress, plan)?;
        self.spill_len = at + stored.size;
        Ok((diff_id, stored, spans))
    }

    /// Copies `size` bytes at `at` in the output to the end of the spill file.
    fn copy_to_spill(&mut self, at: u64, size: u64) -> Result<u64, FormatError> {
        let spill_at = self.spill_len;
        let spill = self
            .spill_file()?
            .try_clone()
            .map_err(|e| self.write_error(e))?;
        copy_range(self.file, at, &spill, spill_at, size, &mut self.buf)
            .map_err(|e| self.write_error(e))?;
        self.spill_len += size;
        Ok(spill_at)
    }

    /// Gives back the space a layer compressed in place took (spilled ones stay where
    /// they are: the spill file is dropped whole at the end).
    fn discard_in_place(&mut self, in_place: bool) -> Result<(), FormatError> {
        if in_place {
            self.file
                .set_len(self.pos)
                .map_err(|e| self.write_error(e))?;
            self.seek_to_end()?;
        }
        Ok(())
    }

    /// The layer just compressed at `pos + BLOCK` is the next one: give it its header.
    fn commit_in_place(&mut self, diff_id: Digest, stored: StoredLayer) -> Result<(), FormatError> {
        let data_at = self.pos + BLOCK;
        let pad = padding(stored.size);
        self.write_at(&vec![0u8; pad as usize], data_at + stored.size)?;
        let header = self.header(&stored.digest.blob_path(), stored.size)?;
        self.write_at(&header, self.pos)?;
        self.pos = data_at + stored.size + pad;
        self.seek_to_end()?;
        self.record_layer(diff_id.clone(), stored, data_at);
        self.patch_last(&diff_id)
    }

    fn record_layer(&mut self, diff_id: Digest, stored: StoredLayer, data_at: u64) {
        self.members.push(Member {
            name: stored.digest.blob_path(),
            kind: MemberKind::Layer,
            offset: data_at,
            size: stored.size,
            digest: stored.digest.clone(),
            diff_id: Some(diff_id.clone()),
            uncompressed_size: Some(stored.uncompressed),
        });
        self.placed.insert(diff_id, stored);
        self.next += 1;
    }

    /// Moves every spilled layer whose turn has come into place.
    fn drain_spilled(&mut self) -> Result<(), FormatError> {
        while let Some(diff_id) = self.order.get(self.next).cloned() {
            let Some(waiting) = self.spilled.remove(&diff_id) else {
                break;
            };
            let data_at = self.pos + BLOCK;
            let spill = self
                .spill_file()?
                .try_clone()
                .map_err(|e| self.write_error(e))?;
            let copied = copy_range(
                &spill,
                waiting.at,
                self.file,
                data_at,
                waiting.layer.size,
                &mut self.buf,
            )
            .map_err(|e| self.write_error(e))?;
            if copied != waiting.layer.digest {
                return Err(self.write_error(io::Error::other(format!(
                    "the spilled copy of layer {diff_id} changed on disk (digest {copied}, written as {})",
                    waiting.layer.digest
                ))));
            }
            self.commit_in_place(diff_id, waiting.layer)?;
        }
        Ok(())
    }

    fn header(&self, name: &str, size: u64) -> Result<[u8; 512], FormatError> {
        crate::ustar::header(name, size, self.opts.created).map_err(|e| self.write_error(e))
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> Result<(), FormatError> {
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| self.write_error(e))
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.write_at(bytes, self.pos)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn append_member(
        &mut self,
        name: &str,
        kind: MemberKind,
        bytes: &[u8],
    ) -> Result<Digest, FormatError> {
        let digest = Digest::of(bytes);
        let size = bytes.len() as u64;
        if size > max_member_bytes(kind) {
            return Err(FormatError::TooLarge {
                what: format!("{name} ({})", kind.as_str()),
                size,
                limit: max_member_bytes(kind),
            });
        }
        let header = self.header(name, size)?;
        self.append(&header)?;
        let offset = self.pos;
        self.append(bytes)?;
        self.append(&vec![0u8; padding(size) as usize])?;
        self.members.push(Member {
            name: name.to_string(),
            kind,
            offset,
            size,
            digest: digest.clone(),
            diff_id: None,
            uncompressed_size: None,
        });
        Ok(digest)
    }

    /// A content-addressed blob, once.
    fn append_blob(&mut self, kind: MemberKind, bytes: &[u8]) -> Result<Digest, FormatError> {
        let digest = Digest::of(bytes);
        if self.members.iter().any(|m| m.digest == digest) {
            return Ok(digest);
        }
        self.append_member(&digest.blob_path(), kind, bytes)
    }

    /// Writes the metadata members and the index (and its signature) into the reserved
    /// front region. Every planned layer and config must have arrived.
    pub fn finish(mut self) -> Result<Written, FormatError> {
        // Shared parts: a layer still held lost its counterpart (which never came): place
        // it alone, so that what is missing is named below.
        let mut held: Vec<Digest> = self.held.keys().cloned().collect();
        held.sort_by_key(|d| self.order.iter().position(|o| o == d));
        for d in held {
            if let Some(raw) = self.held.remove(&d) {
                self.place(&d, &raw, Vec::new())?;
            }
        }
        // A layer to place, or (delta) one to learn the blob digest of, never came.
        let unplaced = self.order.get(self.next).cloned();
        let unmeasured = || {
            self.omitted
                .iter()
                .find(|(d, h)| h.blob.is_none() && !self.measured.contains_key(*d))
                .map(|(d, _)| d.clone())
        };
        if let Some(missing) = unplaced.or_else(unmeasured) {
            let image = self
                .plan
                .iter()
                .find(|p| p.diff_ids.contains(&missing))
                .map(describe)
                .unwrap_or_default();
            return Err(FormatError::MissingLayer {
                image,
                diff_id: missing,
            });
        }
        let layers_spilled = self.spills;
        self.spill = None;
        let plan = std::mem::take(&mut self.plan);

        let mut config_sizes: HashMap<Digest, u64> = HashMap::new();
        let mut configs_of = Vec::with_capacity(plan.len());
        for image in &plan {
            let config = image
                .config
                .clone()
                .filter(|c| self.configs.contains_key(c) || config_sizes.contains_key(c))
                .ok_or_else(|| FormatError::MissingConfig {
                    image: describe(image),
                    config: image
                        .config
                        .clone()
                        .unwrap_or_else(|| image.identity.clone()),
                })?;
            if let Some(bytes) = self.configs.remove(&config) {
                self.append_blob(MemberKind::Config, &bytes)?;
                config_sizes.insert(config.clone(), bytes.len() as u64);
            }
            configs_of.push(config);
        }

        // One manifest per image, one image index per logical name.
        let mut entries: BTreeMap<String, Vec<(PlatformEntry, oci_spec::image::Descriptor)>> =
            BTreeMap::new();
        for (image, config) in plan.iter().zip(&configs_of) {
            let layers: Vec<StoredLayer> = image
                .diff_ids
                .iter()
                .map(|d| self.stored_layer(d))
                .collect::<Result<_, _>>()?;
            let bytes = oci::manifest(
                oci::descriptor(MediaType::ImageConfig, config, config_sizes[config]),
                layers
                    .iter()
                    .map(|l| oci::descriptor(MediaType::ImageLayerZstd, &l.digest, l.size))
                    .collect(),
            )?;
            let digest = self.append_blob(MemberKind::Manifest, &bytes)?;
            let descriptor = oci::platform_manifest(&digest, bytes.len() as u64, &image.platform);
            entries.entry(image.logical.clone()).or_default().push((
                PlatformEntry {
                    platform: image.platform.clone(),
                    source_tags: image.source_tags.clone(),
                    manifest: digest,
                    config: config.clone(),
                    layers: layers.iter().map(|l| l.digest.clone()).collect(),
                },
                descriptor,
            ));
        }
        let mut images = Vec::new();
        let mut top = Vec::new();
        for (logical, platforms) in entries {
            let bytes = oci::index(platforms.iter().map(|(_, d)| d.clone()).collect())?;
            let digest = self.append_blob(MemberKind::ImageIndex, &bytes)?;
            top.push(oci::named(
                oci::descriptor(MediaType::ImageIndex, &digest, bytes.len() as u64),
                &logical,
                None,
            ));
            images.push(ImageEntry {
                name: logical,
                index: digest,
                platforms: platforms.into_iter().map(|(e, _)| e).collect(),
            });
        }
        let delta = self.delta_record(&plan)?;
        // A delta is not a complete image layout: it carries no OCI view (SPEC §12).
        if delta.is_none() {
            self.append_member("oci-layout", MemberKind::OciLayout, oci::OCI_LAYOUT)?;
            let oci_index = oci::index(top)?;
            self.append_member("index.json", MemberKind::OciIndex, &oci_index)?;
        }
        let loaders = self.append_loaders()?;
        // End of archive: two zero blocks.
        self.append(&[0u8; 2 * BLOCK as usize])?;

        let index = BundleIndex {
            // 1.0 unless the bundle uses what 1.1 added: 1.0 bundles stay byte for byte;
            // 2.0 for a delta, which a 1.x reader would misread.
            format: if delta.is_some() {
                format!("{FORMAT_PREFIX}{FORMAT_MAJOR_FEATURES}.0")
            } else {
                BundleIndex::format_for(if loaders.is_some() { 1 } else { 0 })
            },
            name: self.opts.bundle_name.clone(),
            created: self.created.clone(),
            tool: self.opts.tool.clone(),
            compression: CompressionInfo {
                algorithm: "zstd".into(),
                level: self.opts.level,
            },
            images,
            members: std::mem::take(&mut self.members),
            compose: self.opts.compose.clone(),
            loaders,
            requires: if delta.is_some() {
                vec![crate::delta::FEATURE_DELTA.to_string()]
            } else {
                Vec::new()
            },
            delta,
            volumes: None,
        };
        let index_bytes = padded_index(render(&index), self.index_len).ok_or_else(|| {
            FormatError::Internal(format!(
                "the index grew past its reserved {} bytes",
                self.index_len
            ))
        })?;
        self.write_at(&self.header(INDEX_MEMBER, self.index_len)?, 0)?;
        self.write_at(&index_bytes, BLOCK)?;
        self.write_at(
            &vec![0u8; padding(self.index_len) as usize],
            BLOCK + self.index_len,
        )?;
        if let Some(signer) = self.opts.signer {
            let signature = signer
                .sign(&index_bytes, &self.trusted_comment)
                .map_err(|e| FormatError::Signing(e.to_string()))?;
            if signature.len() as u64 != self.signature_len {
                return Err(FormatError::Internal(format!(
                    "the signature is {} bytes, {} were reserved",
                    signature.len(),
                    self.signature_len
                )));
            }
            let at = member_span(self.index_len);
            self.write_at(&self.header(SIGNATURE_MEMBER, self.signature_len)?, at)?;
            self.write_at(signature.as_bytes(), at + BLOCK)?;
            self.write_at(
                &vec![0u8; padding(self.signature_len) as usize],
                at + BLOCK + self.signature_len,
            )?;
        }
        Ok(Written {
            index,
            bundle_bytes: self.pos,
            layer_bytes_in: self.bytes_in,
            layers_spilled,
            shares: std::mem::take(&mut self.shares),
        })
    }
}

/// Shared parts: which layer copies frames from which, from the plan alone. Layer *k*
/// of a logical image on one platform is a member of the layer at the same position on
/// the first earlier platform that has a different layer there (the sorted order puts
/// amd64 before arm64 before arm): that hub is cut into frames where it and its first
/// member to arrive carry the same entries, and every member copies the frames it
/// holds byte for byte. A hub is no member, a member belongs to one hub.
fn hubs(plan: &[PlannedImage], order: &[Digest]) -> HashMap<Digest, Digest> {
    let rank: HashMap<&Digest, usize> = order.iter().enumerate().map(|(i, d)| (d, i)).collect();
    let mut hub_of: HashMap<Digest, Digest> = HashMap::new();
    let mut is_hub: HashSet<Digest> = HashSet::new();
    for (i, image) in plan.iter().enumerate() {
        for (k, b) in image.diff_ids.iter().enumerate() {
            let Some(a) = plan[..i]
                .iter()
                .filter(|e| e.logical == image.logical && e.platform != image.platform)
                .filter_map(|e| e.diff_ids.get(k))
                .find(|a| *a != b)
            else {
                continue;
            };
            let (Some(ra), Some(rb)) = (rank.get(a), rank.get(b)) else {
                continue;
            };
            if ra > rb || hub_of.contains_key(a) || hub_of.contains_key(b) || is_hub.contains(b) {
                continue;
            }
            hub_of.insert(b.clone(), a.clone());
            is_hub.insert(a.clone());
        }
    }
    hub_of
}

impl BundleWriter<'_, '_> {
    fn raw_file(&mut self) -> Result<File, FormatError> {
        let raw = temp_file(&mut self.raw, &self.spill_dir)?.try_clone();
        raw.map_err(|e| self.write_error(e))
    }

    /// Takes a layer that may pair uncompressed, noting its tar entries; once both of a
    /// pair are here, both are compressed.
    fn hold(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
        progress: &dyn Progress,
    ) -> Result<LayerArrival, FormatError> {
        let raw = self.raw_file()?;
        let at = self.raw_len;
        let mut w = &raw;
        w.seek(SeekFrom::Start(at))
            .map_err(|e| self.write_error(e))?;
        let mut w = BufWriter::with_capacity(1 << 20, w);
        let mut input = crate::parts::EntryScanner::new(HashingReader::new(ProgressReader {
            inner: data,
            progress,
        }));
        self.pump(origin, &mut input, &mut w)?;
        w.flush().map_err(|e| self.write_error(e))?;
        drop(w);
        let (hashed, entries) = input.into_parts();
        let (diff_id, size) = hashed.finish();
        self.raw_len = at + size;
        if let Some(expected) = expected {
            if *expected != diff_id {
                return Err(FormatError::LayerMismatch {
                    origin: origin.to_string(),
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
        }
        if !self.wants(&diff_id) {
            return Ok(LayerArrival::NotNeeded);
        }
        let layer = RawLayer {
            origin: origin.to_string(),
            at,
            size,
            entries,
        };
        if !self.may_share(&diff_id) {
            // Known only once read: a layer that shares with none.
            return Ok(self.place(&diff_id, &layer, Vec::new())?.arrival);
        }
        self.held.insert(diff_id.clone(), layer);
        self.place_what_can_share(&diff_id)?;
        Ok(LayerArrival::Spilled)
    }

    fn may_share(&self, diff_id: &Digest) -> bool {
        self.hub_of.contains_key(diff_id) || self.hub_members.contains_key(diff_id)
    }

    /// A hub or member has arrived: once the hub and its first member (in file order,
    /// whatever order they arrive in, so that the output does not depend on it) are
    /// here, the hub is cut and placed; then every member here copies its frames.
    fn place_what_can_share(&mut self, arrived: &Digest) -> Result<(), FormatError> {
        let hub = self.hub_of.get(arrived).unwrap_or(arrived).clone();
        let members = self.hub_members.get(&hub).cloned().unwrap_or_default();
        if !self.placed_hubs.contains_key(&hub) {
            match members.first() {
                Some(first) if self.held.contains_key(&hub) && self.held.contains_key(first) => {
                    self.place_hub(&hub, first)?
                }
                _ => return Ok(()),
            }
        }
        for member in &members {
            if self.held.contains_key(member) {
                self.place_member(&hub, member)?;
            }
        }
        Ok(())
    }

    /// Compresses a held layer in its place, or into the spill when it is not its turn.
    fn place(
        &mut self,
        diff_id: &Digest,
        raw: &RawLayer,
        frames: Vec<Frame>,
    ) -> Result<Placement, FormatError> {
        let plan = LayerPlan {
            frames,
            diff_id: Some(diff_id.clone()),
        };
        let raw_file = self.raw_file()?;
        let mut data = FileRange {
            file: &raw_file,
            pos: raw.at,
            end: raw.at + raw.size,
        };
        let in_place = self.order.get(self.next) == Some(diff_id);
        let silent = crate::progress::Silent;
        // The diff_id was taken as the layer arrived (the plan carries it): only the
        // length of the private copy is left to check.
        let (file, at, (_, layer, frames)) = if in_place {
            let file = self.file.try_clone().map_err(|e| self.write_error(e))?;
            let at = self.pos + BLOCK;
            let done = self.compress_in_place(&raw.origin, &mut data, &silent, &plan)?;
            (file, at, done)
        } else {
            let file = self
                .spill_file()?
                .try_clone()
                .map_err(|e| self.write_error(e))?;
            let at = self.spill_len;
            let done = self.compress_to_spill(&raw.origin, &mut data, &silent, &plan)?;
            (file, at, done)
        };
        if layer.uncompressed != raw.size {
            return Err(self.write_error(io::Error::other(format!(
                "the uncompressed copy of layer {diff_id} is {} bytes on disk, not {}",
                layer.uncompressed, raw.size
            ))));
        }
        let arrival = if in_place {
            self.commit_in_place(diff_id.clone(), layer.clone())?;
            self.drain_spilled()?;
            LayerArrival::Placed
        } else {
            self.spilled.insert(
                diff_id.clone(),
                Spilled {
                    at,
                    layer: layer.clone(),
                },
            );
            self.spills += 1;
            LayerArrival::Spilled
        };
        Ok(Placement {
            arrival,
            file,
            at,
            layer,
            frames,
        })
    }

    /// Cuts a held hub into frames at the runs it shares with its first member to
    /// arrive (compared byte for byte), places it, and keeps it for its members.
    fn place_hub(&mut self, hub: &Digest, first: &Digest) -> Result<(), FormatError> {
        let raw = self.raw_file()?;
        let (Some(a), Some(b)) = (self.held.remove(hub), self.held.get(first)) else {
            return Err(FormatError::Internal(
                "a hub or its member is not held".into(),
            ));
        };
        let mut runs = Vec::new();
        for run in crate::parts::find_runs(&a.entries, &b.entries, crate::parts::MIN_SHARED_RUN) {
            if crate::parts::same_bytes(&raw, a.at + run.a, &raw, b.at + run.b, run.len)
                .map_err(|e| self.write_error(e))?
            {
                runs.push(run);
            }
        }
        let cuts = crate::parts::frames(
            a.size,
            &runs.iter().map(|r| (r.a, r.len)).collect::<Vec<_>>(),
        );
        let plan = cuts.iter().map(|(len, _)| Frame::Compress(*len)).collect();
        let placed = self.place(hub, &a, plan)?;
        let mut raw_at = 0;
        let frames = cuts
            .iter()
            .zip(&placed.frames)
            .map(|((raw_len, _), &(blob_at, blob_len))| {
                let frame = HubFrame {
                    raw_at,
                    raw_len: *raw_len,
                    blob_at,
                    blob_len,
                };
                raw_at += raw_len;
                frame
            })
            .collect();
        let blob = placed.layer.digest.blob_path();
        self.placed_hubs.insert(
            hub.clone(),
            PlacedHub {
                raw: a,
                file: placed.file,
                at: placed.at,
                blob,
                frames,
            },
        );
        Ok(())
    }

    /// Compresses a held member of a placed hub, each of the hub's frames it carries
    /// byte for byte (at least a run's minimum) copied.
    fn place_member(&mut self, hub: &Digest, member: &Digest) -> Result<(), FormatError> {
        let raw = self.raw_file()?;
        let (Some(h), Some(m)) = (self.placed_hubs.remove(hub), self.held.remove(member)) else {
            return Err(FormatError::Internal("a member's hub is not placed".into()));
        };
        let runs =
            crate::parts::find_runs(&h.raw.entries, &m.entries, crate::parts::MIN_SHARED_RUN);
        // (offset in the member, length, hub frame): sorted and disjoint, as the runs.
        let mut shared: Vec<(u64, u64, usize)> = Vec::new();
        let mut run = runs.iter().peekable();
        for (i, f) in h.frames.iter().enumerate() {
            while run.next_if(|r| r.a + r.len <= f.raw_at).is_some() {}
            let Some(r) = run.peek() else { break };
            if f.raw_len < crate::parts::MIN_SHARED_RUN
                || f.raw_at < r.a
                || f.raw_at + f.raw_len > r.a + r.len
            {
                continue;
            }
            let at = r.b + (f.raw_at - r.a);
            if crate::parts::same_bytes(&raw, h.raw.at + f.raw_at, &raw, m.at + at, f.raw_len)
                .map_err(|e| self.write_error(e))?
            {
                shared.push((at, f.raw_len, i));
            }
        }
        let cuts = crate::parts::frames(
            m.size,
            &shared.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        );
        let mut plan = Vec::with_capacity(cuts.len());
        for (len, s) in &cuts {
            plan.push(match s {
                None => Frame::Compress(*len),
                Some(s) => {
                    let f = &h.frames[shared[*s].2];
                    Frame::Copy {
                        raw: *len,
                        from: h.file.try_clone().map_err(|e| self.write_error(e))?,
                        at: h.at + f.blob_at,
                        len: f.blob_len,
                    }
                }
            });
        }
        let (source, frames): (String, Vec<(u64, u64)>) = (
            h.blob.clone(),
            shared
                .iter()
                .map(|s| (h.frames[s.2].blob_at, h.frames[s.2].blob_len))
                .collect(),
        );
        self.placed_hubs.insert(hub.clone(), h);
        let placed = self.place(member, &m, plan)?;
        let user = placed.layer.digest.blob_path();
        for ((_, s), span) in cuts.iter().zip(&placed.frames) {
            if let Some(s) = s {
                self.shares.push(crate::volumes::SharedRange {
                    source: source.clone(),
                    source_offset: frames[*s].0,
                    size: frames[*s].1,
                    user: user.clone(),
                    user_offset: span.0,
                });
            }
        }
        Ok(())
    }
}

impl BundleWriter<'_, '_> {
    /// The loaders, each gzip-compressed as it streams into place, then the installer
    /// that knows where they are.
    fn append_loaders(&mut self) -> Result<Option<Loaders>, FormatError> {
        let inputs = std::mem::take(&mut self.opts.loaders);
        if inputs.is_empty() {
            return Ok(None);
        }
        let mut binaries = Vec::new();
        for mut input in inputs {
            let name = crate::loaders::member_name(&input.target);
            let header_at = self.pos;
            let data_at = header_at + BLOCK;
            let mut f = self.file;
            f.seek(SeekFrom::Start(data_at))
                .map_err(|e| self.write_error(e))?;
            let mut out = BufWriter::new(self.file);
            let (digest, size, binary_digest, binary_size) =
                crate::loaders::compress(&mut input.binary, &mut out)
                    .map_err(|e| self.write_error(e))?;
            out.flush().map_err(|e| self.write_error(e))?;
            drop(out);
            let limit = crate::limits::MAX_LOADER_BYTES;
            if binary_size > limit {
                return Err(FormatError::TooLarge {
                    what: format!("the {} loader", input.target),
                    size: binary_size,
                    limit,
                });
            }
            self.write_at(&vec![0u8; padding(size) as usize], data_at + size)?;
            let header = self.header(&name, size)?;
            self.write_at(&header, header_at)?;
            self.pos = data_at + size + padding(size);
            binaries.push(LoaderBinary {
                platform: crate::loaders::platform_of(&input.target)
                    .unwrap_or_else(|| Platform::new("linux", &input.target, None)),
                target: input.target,
                member: TailMember {
                    name,
                    offset: data_at,
                    size,
                    digest,
                },
                binary_digest,
                binary_size,
            });
        }
        let script = crate::loaders::installer_script(&self.opts.bundle_file, &binaries);
        let header = self.header(INSTALLER_MEMBER, script.len() as u64)?;
        self.append(&header)?;
        let offset = self.pos;
        self.append(script.as_bytes())?;
        self.append(&vec![0u8; padding(script.len() as u64) as usize])?;
        self.seek_to_end()?;
        Ok(Some(Loaders {
            installer: TailMember {
                name: INSTALLER_MEMBER.to_string(),
                offset,
                size: script.len() as u64,
                digest: Digest::of(script.as_bytes()),
            },
            binaries,
        }))
    }
}

impl BundleWriter<'_, '_> {
    /// What a placed, patched or omitted layer's blob is (the manifests name it).
    fn stored_layer(&self, d: &Digest) -> Result<StoredLayer, FormatError> {
        if let Some(l) = self.placed.get(d).or_else(|| self.measured.get(d)) {
            return Ok(l.clone());
        }
        match self.omitted.get(d) {
            Some(HeldLayer {
                blob: Some((digest, size)),
                uncompressed_size: Some(uncompressed),
                ..
            }) => Ok(StoredLayer {
                digest: digest.clone(),
                size: *size,
                uncompressed: *uncompressed,
            }),
            _ => Err(FormatError::Internal(format!(
                "layer {d} was neither written nor measured"
            ))),
        }
    }

    /// The delta's record: bases, what the target must hold, what is patched.
    fn delta_record(&self, plan: &[PlannedImage]) -> Result<Option<Delta>, FormatError> {
        let Some(delta) = &self.opts.delta else {
            return Ok(None);
        };
        let mut required = Vec::new();
        let mut seen = HashSet::new();
        for d in plan.iter().flat_map(|p| &p.diff_ids) {
            let Some(held) = self.omitted.get(d) else {
                continue;
            };
            if !seen.insert(d) {
                continue;
            }
            let layer = self.stored_layer(d)?;
            required.push(RequiredLayer {
                digest: layer.digest,
                size: layer.size,
                diff_id: d.clone(),
                uncompressed_size: layer.uncompressed,
                base: held.base,
                holders: held.holders.clone(),
                manifests: held.manifests.clone(),
            });
        }
        Ok(Some(Delta {
            bases: delta.bases.bases.clone(),
            required,
            patches: self.patches.clone(),
        }))
    }

    /// Delta: the layer just placed becomes a patch against its predecessor when the
    /// patch is smaller than the layer (SPEC §12). The predecessor is the base layer at
    /// the same position of the same repository and platform, or else the base layer
    /// of that platform sharing the most content; references above the cap are not
    /// used (the layer stays whole).
    fn patch_last(&mut self, diff_id: &Digest) -> Result<(), FormatError> {
        let Some(delta) = &self.opts.delta else {
            return Ok(());
        };
        let (Some(max), bases) = (delta.patch_max_reference, delta.bases) else {
            return Ok(());
        };
        let (Some(&(i, position)), Some(member), Some(stored)) = (
            self.first_use.get(diff_id),
            self.members.last().cloned(),
            self.placed.get(diff_id).cloned(),
        ) else {
            return Ok(());
        };
        let (logical, platform) = (self.plan[i].logical.clone(), self.plan[i].platform.clone());
        let io_err = |error: io::Error| FormatError::Write {
            path: self.path.clone(),
            error,
        };
        let reference = match bases
            .positional_reference(&logical, &platform, position, diff_id, max)
        {
            Some(r) => Some(r),
            None => {
                let layer = codec::decoder(FileRange::new(self.file, &member)).map_err(io_err)?;
                let listing = listing_of(layer);
                bases.most_shared_reference(&platform, &listing, max)?
            }
        };
        let Some(reference) = reference.cloned() else {
            return Ok(());
        };
        let reference_bytes = bases.read_reference(&reference)?;
        let window_log = patch_window_log(reference.uncompressed_size);
        let patch_file = tempfile::tempfile_in(&self.spill_dir).map_err(io_err)?;
        let (patch_digest, patch_size) = {
            let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, &patch_file));
            let mut encoder = patch_encoder(
                out,
                self.opts.level,
                &reference_bytes,
                window_log,
                stored.uncompressed,
            )
            .map_err(io_err)?;
            let mut layer = codec::decoder(FileRange::new(self.file, &member)).map_err(io_err)?;
            copy_counted(&mut layer, &mut encoder, &mut self.buf)
                .map_err(|e| io_err(e.into_io()))?;
            let (buffered, digest, size) = encoder.finish().map_err(io_err)?.finish();
            buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
            (digest, size)
        };
        if patch_size >= stored.size {
            return Ok(());
        }
        // The patch takes the layer's place.
        let header_at = member.offset - BLOCK;
        self.file.set_len(header_at).map_err(io_err)?;
        let copied = copy_range(
            &patch_file,
            0,
            self.file,
            member.offset,
            patch_size,
            &mut self.buf,
        )
        .map_err(io_err)?;
        if copied != patch_digest {
            return Err(io_err(io::Error::other(format!(
                "the patch for layer {diff_id} changed on disk"
            ))));
        }
        let pad = padding(patch_size);
        self.write_at(&vec![0u8; pad as usize], member.offset + patch_size)?;
        let header = self.header(&patch_digest.blob_path(), patch_size)?;
        self.write_at(&header, header_at)?;
        self.pos = member.offset + patch_size + pad;
        self.seek_to_end()?;
        if let Some(last) = self.members.last_mut() {
            *last = Member {
                name: patch_digest.blob_path(),
                kind: MemberKind::LayerPatch,
                offset: member.offset,
                size: patch_size,
                digest: patch_digest.clone(),
                diff_id: None,
                uncompressed_size: None,
            };
        }
        self.patches.push(LayerPatch {
            digest: stored.digest,
            size: stored.size,
            diff_id: diff_id.clone(),
            uncompressed_size: stored.uncompressed,
            patch: patch_digest,
            memory: patch_memory(reference.uncompressed_size, window_log, stored.uncompressed),
            reference: PatchReference {
                diff_id: reference.diff_id,
                uncompressed_size: reference.uncompressed_size,
                base: reference.base,
                holder: reference.holder,
            },
            window_log,
        });
        Ok(())
    }
}

/// A member's bytes in the file being written, read back positionally.
struct FileRange<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
}

impl<'f> FileRange<'f> {
    fn new(file: &'f File, member: &Member) -> Self {
        FileRange {
            file,
            pos: member.offset,
            end: member.offset + member.size,
        }
    }
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    fn into_io(self) -> io::Error {
        match self {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

/// Copies `from` into `to` through `buf`; returns the bytes copied.
fn copy_counted(from: &mut dyn Read, to: &mut dyn Write, buf: &mut [u8]) -> Result<u64, CopyError> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

fn describe(p: &PlannedImage) -> String {
    format!("{} ({}, from {})", p.logical, p.platform, p.origin)
}

/// minisign-style trusted comment: what the signature vouches for besides the bytes.
pub(crate) fn trusted_comment(name: &str, epoch: u64, created: &str) -> String {
    format!("timestamp:{epoch}\tfile:{name}\tcreated:{created}\tarchpack-bundle")
}

pub(crate) fn render(index: &BundleIndex) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec_pretty(index).unwrap_or_default()
}

/// The index member's data: the JSON padded with spaces and a final `\n` to `len`
/// bytes (SPEC §3.2); `None` when it does not fit.
pub(crate) fn padded_index(mut json: Vec<u8>, len: u64) -> Option<Vec<u8>> {
    if json.len() as u64 >= len {
        return None;
    }
    json.resize(len as usize - 1, b' ');
    json.push(b'\n');
    Some(json)
}

/// An index with the final index's shape and every number at its widest.
fn placeholder_index(
    plan: &[PlannedImage],
    layer_count: usize,
    omitted: &HashMap<Digest, HeldLayer>,
    opts: &WriterOptions,
    created: &str,
) -> BundleIndex {
    let wide = Digest::of(b"placeholder");
    let member = |kind, diff: bool| Member {
        name: wide.blob_path(),
        kind,
        offset: u64::MAX,
        size: u64::MAX,
        digest: wide.clone(),
        diff_id: diff.then(|| wide.clone()),
        uncompressed_size: diff.then_some(u64::MAX),
    };
    let mut logicals: BTreeMap<&str, Vec<PlatformEntry>> = BTreeMap::new();
    let mut configs = HashSet::new();
    for p in plan {
        configs.insert(p.identity.clone());
        logicals.entry(&p.logical).or_default().push(PlatformEntry {
            platform: p.platform.clone(),
            source_tags: p.source_tags.clone(),
            manifest: wide.clone(),
            config: wide.clone(),
            layers: vec![wide.clone(); p.diff_ids.len()],
        });
    }
    let mut members = Vec::new();
    members.extend((0..layer_count).map(|_| member(MemberKind::Layer, true)));
    members.extend((0..configs.len()).map(|_| member(MemberKind::Config, false)));
    members.extend((0..plan.len()).map(|_| member(MemberKind::Manifest, false)));
    members.extend((0..logicals.len()).map(|_| member(MemberKind::ImageIndex, false)));
    members.push(member(MemberKind::OciLayout, false));
    members.push(member(MemberKind::OciIndex, false));
    let tail = |name: &str| TailMember {
        name: name.to_string(),
        offset: u64::MAX,
        size: u64::MAX,
        digest: wide.clone(),
    };
    let loaders = (!opts.loaders.is_empty()).then(|| Loaders {
        installer: tail(INSTALLER_MEMBER),
        binaries: opts
            .loaders
            .iter()
            .map(|l| LoaderBinary {
                target: l.target.clone(),
                platform: crate::loaders::platform_of(&l.target)
                    .unwrap_or_else(|| Platform::new("linux", &l.target, None)),
                member: tail(&crate::loaders::member_name(&l.target)),
                binary_digest: wide.clone(),
                binary_size: u64::MAX,
            })
            .collect(),
    });
    // Every omitted layer listed with its own holders; every placed one possibly a patch.
    let delta = opts.delta.as_ref().map(|d| Delta {
        bases: d.bases.bases.clone(),
        required: omitted
            .values()
            .map(|h| RequiredLayer {
                digest: wide.clone(),
                size: u64::MAX,
                diff_id: wide.clone(),
                uncompressed_size: u64::MAX,
                base: usize::MAX,
                holders: h.holders.clone(),
                manifests: h.manifests.clone(),
            })
            .collect(),
        patches: (0..layer_count)
            .map(|_| LayerPatch {
                digest: wide.clone(),
                size: u64::MAX,
                diff_id: wide.clone(),
                uncompressed_size: u64::MAX,
                patch: wide.clone(),
                reference: PatchReference {
                    diff_id: wide.clone(),
                    uncompressed_size: u64::MAX,
                    base: usize::MAX,
                    holder: "x".repeat(d.bases.longest_holder()),
                },
                window_log: u32::MAX,
                memory: u64::MAX,
            })
            .collect(),
    });
    BundleIndex {
        format: BundleIndex::format_string(),
        name: opts.bundle_name.clone(),
        created: created.to_string(),
        tool: opts.tool.clone(),
        compression: CompressionInfo {
            algorithm: "zstd".into(),
            level: opts.level,
        },
        images: logicals
            .into_iter()
            .map(|(name, platforms)| ImageEntry {
                name: name.to_string(),
                index: wide.clone(),
                platforms,
            })
            .collect(),
        members,
        compose: opts.compose.clone(),
        loaders,
        requires: delta
            .as_ref()
            .map(|_| vec![crate::delta::FEATURE_DELTA.to_string()])
            .unwrap_or_default(),
        delta,
        volumes: None,
    }
}

/// The unnamed temporary file in `slot`, made in `dir` on first use (gone with the
/// process).
fn temp_file<'a>(slot: &'a mut Option<File>, dir: &Path) -> Result<&'a File, FormatError> {
    if slot.is_none() {
        let f = tempfile::tempfile_in(dir).map_err(|error| FormatError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
        *slot = Some(f);
    }
    slot.as_ref()
        .ok_or_else(|| FormatError::Internal("a temporary file vanished".into()))
}

/// Copies `size` bytes from `from` at `src` to `to` at `dst`; returns their digest.
fn copy_range(
    from: &File,
    src: u64,
    to: &File,
    dst: u64,
    size: u64,
    buf: &mut [u8],
) -> io::Result<Digest> {
    let mut hasher = crate::digest::Sha256::new();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], src + done)?;
        to.write_all_at(&buf[..n], dst + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(Digest::finish(hasher))
}
