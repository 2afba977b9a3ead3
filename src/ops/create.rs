//! `create`: plan the bundle from the sources' metadata (names, platforms, what is
//! shared), check the plan (names against the reference grammar, the compose template),
//! then stream every needed layer once into a temporary file beside the output and
//! rename it into place.

use super::RequestError;
use crate::compose;
use crate::docker::Endpoint;
use crate::error::Error;
use crate::fsutil;
use crate::platform::Platform;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::source::{self, LayerSink, Source, SourceError, SourceRef};
use archpack_format::delta::{BaseKind, DeltaBases, MAX_PATCH_REFERENCE};
use archpack_format::digest::Digest;
use archpack_format::inventory::{Inventory, MAX_INVENTORY_BYTES};
use archpack_format::volumes::VolumeCut;
use archpack_format::writer::DeltaOptions;
use archpack_format::{
    BundleIndex, BundleWriter, ComposeFiles, FormatError, IndexSigner, PlannedImage, WriterOptions,
};
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;

/// `--volume-size` or `--share-parts`: the single file goes to a temporary file (beside
/// the output, or in `TMPDIR` when the output may be on FAT, which cannot hold it), and
/// is cut from there into volumes (or, without a cap, the one file storing each shared
/// part once) that are renamed into place together.
fn write_volumes(
    req: &CreateRequest,
    cap: Option<u64>,
    fill: impl FnOnce(&std::fs::File) -> Result<archpack_format::writer::Written, Error>,
    progress: &dyn Progress,
) -> Result<(archpack_format::writer::Written, Vec<CreatedVolume>), Error> {
    let dir = fsutil::parent_dir(&req.output);
    let temp_dir = if fsutil::may_be_fat(&dir) {
        std::env::temp_dir()
    } else {
        dir.clone()
    };
    let single = tempfile::tempfile_in(&temp_dir).map_err(|error| {
        Error::from(fsutil::OutputError::Io {
            path: temp_dir.clone(),
            error,
        })
    })?;
    let mut written = fill(&single)?;
    let base = req
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cap.is_none() && written.shares.is_empty() {
        // Nothing shared: the single file is the bundle (the lowest format it needs).
        fsutil::write_atomically(&req.output, req.force, 0o644, |out| {
            let mut from = &single;
            let mut to = out;
            std::io::Seek::rewind(&mut from)?;
            std::io::copy(&mut from, &mut to).map(|_| ())
        })
        .map_err(|e| match e {
            fsutil::AtomicError::Output(o) => Error::from(o),
            fsutil::AtomicError::Content(error) => Error::from(fsutil::OutputError::Io {
                path: req.output.clone(),
                error,
            }),
        })?;
        return Ok((written, Vec::new()));
    }
    let cut = VolumeCut::plan(
        &single,
        &req.output,
        cap,
        &base,
        req.signer,
        &written.shares,
    )?;
    let paths: Vec<PathBuf> = cut.names().iter().map(|n| dir.join(n)).collect();
    let table = fsutil::write_set_atomically(&paths, req.force, 0o644, |files| {
        cut.write(&single, &req.output, files, req.signer, progress)
    })
    .map_err(|e| match e {
        fsutil::AtomicError::Output(o) => Error::from(o),
        fsutil::AtomicError::Content(e) => Error::from(e),
    })?;
    if cap.is_none() {
        written.bundle_bytes = table.files.iter().map(|f| f.size).sum();
        return Ok((written, Vec::new()));
    }
    if req.force {
        // A replaced set that had more volumes leaves none of them behind.
        let mut n = table.files.len() + 1;
        while std::fs::remove_file(dir.join(format!("{base}.{n:03}"))).is_ok() {
            n += 1;
        }
    }
    let volumes = table
        .files
        .iter()
        .zip(paths)
        .map(|(f, path)| CreatedVolume {
            path,
            bytes: f.size,
            group: f.group.clone(),
        })
        .collect();
    Ok((written, volumes))
}

/// One source as the user gave it, with its `--name`.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub reference: SourceRef,
    /// The source as typed, for messages and `--name` matching.
    pub text: String,
    /// The logical name to bundle its images under (`--name`).
    pub name: Option<String>,
}

pub struct CreateRequest<'a> {
    pub sources: Vec<SourceSpec>,
    pub output: PathBuf,
    pub force: bool,
    /// zstd level (1–19).
    pub level: i32,
    /// zstd workers (the bytes do not depend on it).
    pub threads: u32,
    pub bundle_name: String,
    /// Unix time of creation (SOURCE_DATE_EPOCH when set, for reproducible output).
    pub created: u64,
    /// Keep only these platforms (None = all the sources have whole).
    pub platforms: Option<Vec<Platform>>,
    pub compose: Option<ComposeFiles>,
    pub signer: Option<&'a dyn IndexSigner>,
    /// The engine, for engine sources.
    pub endpoint: Endpoint,
    /// Static archpack binaries to carry for the bundle's platforms (`--loaders`).
    pub loaders: Option<LoaderRequest>,
    /// Make a delta against these inventories and bundles (`--base`).
    pub bases: Vec<PathBuf>,
    /// Patch changed layers against references up to this size (`None`: `--no-patches`).
    pub patch_max_reference: Option<u64>,
    /// Cut the bundle into volumes `OUTPUT.001`, … of at most this many bytes.
    pub volume_size: Option<u64>,
    /// Store what layers of different platforms share once (format 2.2, SPEC §14).
    pub share_parts: bool,
}

/// `--loaders DIR [--loaders-for LIST]`.
#[derive(Debug, Clone)]
pub struct LoaderRequest {
    /// Holds `archpack-linux-{amd64,arm64,arm-v7,arm-v6}` (scripts/build-targets.sh).
    pub dir: PathBuf,
    /// Carry loaders for these platforms (default: the bundle's).
    pub platforms: Option<Vec<Platform>>,
}

/// A loader carried, for the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoaderSummary {
    pub target: String,
    pub platform: String,
    /// Bytes in the bundle (gzip), and of the binary.
    pub bytes: u64,
    pub binary_bytes: u64,
}

/// What a source gave the bundle.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceSummary {
    pub source: String,
    /// Platforms taken from it.
    pub platforms: Vec<String>,
    /// Platforms it names but does not hold whole (left out), with what is missing.
    pub absent: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateReport {
    pub path: PathBuf,
    pub bundle_bytes: u64,
    /// Uncompressed layer bytes read from the sources.
    pub layer_bytes_in: u64,
    pub signed: bool,
    pub images: usize,
    /// image × platform pairs.
    pub image_platforms: usize,
    pub platforms: Vec<String>,
    pub dedup_saved_bytes: u64,
    pub sources: Vec<SourceSummary>,
    /// Layers that arrived before their turn (a source that streams in its own order).
    pub layers_reordered: usize,
    pub loaders: Vec<LoaderSummary>,
    /// A delta's summary: what it leaves to the target and what it patches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaSummary>,
    /// `--share-parts`: bytes the platforms' layers share, stored once.
    pub shared_part_bytes: u64,
    /// `--volume-size`: the volumes written instead of one file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<CreatedVolume>,
    #[serde(skip)]
    pub index: BundleIndex,
}

/// One volume written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedVolume {
    pub path: PathBuf,
    pub bytes: u64,
    /// `shared`, or the platform whose layers it alone holds.
    pub group: String,
}

/// What a delta left out and patched.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSummary {
    /// `name (kind, file)` of each base.
    pub bases: Vec<String>,
    pub layers_required: usize,
    /// Bytes of those layers' blobs (what a full bundle would have stored for them).
    pub required_bytes: u64,
    pub layers_patched: usize,
    /// Bytes of the patches, and of the whole layers they stand for.
    pub patch_bytes: u64,
    pub patched_layer_bytes: u64,
    pub layers_whole: usize,
}

impl DeltaSummary {
    pub fn of(index: &BundleIndex) -> Option<DeltaSummary> {
        let delta = index.delta.as_ref()?;
        let patch_bytes = delta
            .patches
            .iter()
            .filter_map(|p| index.member_by_digest(&p.patch))
            .map(|m| m.size)
            .sum();
        Some(DeltaSummary {
            bases: delta
                .bases
                .iter()
                .map(|b| {
                    let kind = match b.kind {
                        BaseKind::Bundle => "bundle",
                        BaseKind::Inventory => "inventory",
                    };
                    format!("{} ({kind} {})", b.name, b.file)
                })
                .collect(),
            layers_required: delta.required.len(),
            required_bytes: delta.required.iter().map(|r| r.size).sum(),
            layers_patched: delta.patches.len(),
            patch_bytes,
            patched_layer_bytes: delta.patches.iter().map(|p| p.size).sum(),
            layers_whole: index
                .members
                .iter()
                .filter(|m| m.kind == archpack_format::MemberKind::Layer)
                .count(),
        })
    }
}

/// An image placed in the plan: which source image, under which logical name.
struct Planned {
    image: PlannedImage,
    input: usize,
    index_in_source: usize,
}

pub fn create(req: &CreateRequest, progress: &dyn Progress) -> Result<CreateReport, Error> {
    if req.volume_size.is_none() {
        fsutil::check_absent(&req.output, req.force)?;
    }
    if req.share_parts && !req.bases.is_empty() {
        return Err(RequestError::SharePartsWithDelta.into());
    }
    if req.share_parts && req.loaders.is_some() {
        return Err(RequestError::SharePartsWithLoaders.into());
    }
    let logical_names = req
        .sources
        .iter()
        .map(|s| {
            s.name
                .as_deref()
                .map(|n| {
                    ImageRef::parse_tagged(n)
                        .map(|r| r.familiar())
                        .map_err(|e| RequestError::BadName {
                            given: format!("{n}={}", s.text),
                            reason: e.reason,
                        })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    progress.note(&format!("opening {} sources", req.sources.len()));
    let references: Vec<SourceRef> = req.sources.iter().map(|s| s.reference.clone()).collect();
    let mut sources = source::open_all(&references, &req.endpoint)?;
    // open_all gives file sources in order and the engine's last; map each back.
    let (plan, summaries) = plan(req, &sources, &logical_names)?;
    if let Some(files) = &req.compose {
        let planned: Vec<PlannedImage> = plan.iter().map(|p| p.image.clone()).collect();
        compose::validate(files, &compose::Carried::from_plan(&planned))?;
    }

    let loaders = loader_inputs(req, &plan)?;
    let bases = open_bases(req)?;
    let spill_dir = fsutil::parent_dir(&req.output);
    let fill = |file: &std::fs::File| -> Result<archpack_format::writer::Written, Error> {
        let planned: Vec<PlannedImage> = plan.iter().map(|p| p.image.clone()).collect();
        let mut writer = BundleWriter::new(
            file,
            &req.output,
            &spill_dir,
            planned,
            WriterOptions {
                level: req.level,
                threads: req.threads,
                bundle_name: req.bundle_name.clone(),
                created: req.created,
                tool: crate::tool_string(),
                compose: req.compose.clone(),
                signer: req.signer,
                loaders,
                bundle_file: req
                    .output
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                delta: bases.as_ref().map(|bases| DeltaOptions {
                    bases,
                    patch_max_reference: req.patch_max_reference,
                }),
                share_parts: req.share_parts,
            },
        )?;
        let total: u64 = plan
            .iter()
            .map(|p| sources[p.input].images()[p.index_in_source].size_hint)
            .sum();
        progress.start("compressing layers", (total > 0).then_some(total));
        // In the writer's order (platform, name), each source asked for a run of its
        // images at a time: sources that read at random deliver in order.
        let order: Vec<(usize, usize)> = writer
            .plan()
            .iter()
            .map(|w| {
                plan.iter()
                    .find(|p| p.image.logical == w.logical && p.image.platform == w.platform)
                    .map(|p| (p.input, p.index_in_source))
                    .unwrap_or((usize::MAX, usize::MAX))
            })
            .collect();
        let mut i = 0;
        while i < order.len() {
            let input = order[i].0;
            let mut run = Vec::new();
            while i < order.len() && order[i].0 == input {
                if !run.contains(&order[i].1) {
                    run.push(order[i].1);
                }
                i += 1;
            }
            let Some(source) = sources.get_mut(input) else {
                continue;
            };
            progress.note(&format!("reading {}", source.images()[run[0]].source));
            let mut sink = WriterSink {
                writer: &mut writer,
                progress,
                error: None,
            };
            match source.read_layers(&run, &mut sink) {
                Ok(()) => {}
                Err(SourceError::Aborted) => {
                    return Err(Error::Format(sink.error.take().unwrap_or_else(|| {
                        FormatError::Internal("a source stopped without a reason".into())
                    })))
                }
                Err(e) => return Err(e.into()),
            }
        }
        progress.finish();
        Ok(writer.finish()?)
    };
    let (written, volumes) = match req.volume_size {
        None if req.share_parts => write_volumes(req, None, fill, progress)?,
        None => {
            let written = fsutil::write_atomically(&req.output, req.force, 0o644, fill).map_err(
                |e| match e {
                    fsutil::AtomicError::Output(o) => Error::from(o),
                    fsutil::AtomicError::Content(e) => e,
                },
            )?;
            (written, Vec::new())
        }
        Some(cap) => write_volumes(req, Some(cap), fill, progress)?,
    };
    let index = written.index;
    let platforms = index.platforms().iter().map(|p| p.to_string()).collect();
    Ok(CreateReport {
        path: req.output.clone(),
        bundle_bytes: written.bundle_bytes,
        layer_bytes_in: written.layer_bytes_in,
        signed: req.signer.is_some(),
        images: index.images.len(),
        image_platforms: index.images.iter().map(|i| i.platforms.len()).sum(),
        platforms,
        dedup_saved_bytes: index.size_summary().saved_bytes,
        sources: summaries,
        layers_reordered: written.layers_spilled,
        loaders: index
            .loaders
            .iter()
            .flat_map(|l| &l.binaries)
            .map(|b| LoaderSummary {
                target: b.target.clone(),
                platform: b.platform.to_string(),
                bytes: b.member.size,
                binary_bytes: b.binary_size,
            })
            .collect(),
        delta: DeltaSummary::of(&index),
        shared_part_bytes: written.shares.iter().map(|s| s.size).sum(),
        volumes,
        index,
    })
}

/// The bases of a delta: each `--base` is an inventory (JSON) or a bundle.
fn open_bases(req: &CreateRequest) -> Result<Option<DeltaBases>, Error> {
    if req.bases.is_empty() {
        return Ok(None);
    }
    if let Some(max) = req.patch_max_reference {
        if max > MAX_PATCH_REFERENCE {
            return Err(RequestError::PatchReferenceTooLarge {
                given: max,
                max: MAX_PATCH_REFERENCE,
            }
            .into());
        }
    }
    let mut bases = DeltaBases::new();
    for path in &req.bases {
        let bad = |detail: String| RequestError::BadBase {
            path: path.clone(),
            detail,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut head = [0u8; 1];
        let n = file.read(&mut head).map_err(|e| bad(e.to_string()))?;
        if n == 1 && (head[0] == b'{' || head[0].is_ascii_whitespace()) {
            let mut bytes = head.to_vec();
            file.take(MAX_INVENTORY_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| bad(e.to_string()))?;
            let inventory = Inventory::parse(&bytes).map_err(|e| bad(e.to_string()))?;
            bases.add_inventory(&file_name, Digest::of(&bytes), &inventory);
        } else {
            let reader = archpack_format::BundleReader::open(path).map_err(|e| {
                bad(format!(
                    "neither an inventory (`archpack inventory -o FILE`) nor a bundle: {e}"
                ))
            })?;
            bases.add_bundle(&file_name, reader);
        }
    }
    Ok(Some(bases))
}

/// Which spec a source came from (open_all puts engine images last, in one source).
fn spec_of<'a>(req: &'a CreateRequest, source: &str) -> Option<(usize, &'a SourceSpec)> {
    req.sources
        .iter()
        .enumerate()
        .find(|(_, s)| s.reference.to_string() == source)
}

/// Decides logical names, filters platforms and rejects duplicates and bad names.
fn plan(
    req: &CreateRequest,
    sources: &[Box<dyn Source>],
    logical_names: &[Option<String>],
) -> Result<(Vec<Planned>, Vec<SourceSummary>), Error> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut filtered_out = Vec::new();
    let mut summaries: Vec<SourceSummary> = Vec::new();
    for (input, source) in sources.iter().enumerate() {
        for absent in source.absent() {
            if req
                .platforms
                .as_ref()
                .is_some_and(|keep| keep.contains(&absent.platform))
            {
                return Err(RequestError::PlatformIncomplete {
                    source_ref: absent.source.clone(),
                    platform: absent.platform.to_string(),
                    missing: absent.missing.clone(),
                }
                .into());
            }
            summary(&mut summaries, &absent.source)
                .absent
                .push(format!("{} ({})", absent.platform, absent.missing));
        }
        for (j, image) in source.images().iter().enumerate() {
            if let Some(keep) = &req.platforms {
                if !keep.contains(&image.platform) {
                    filtered_out.push(image.platform.to_string());
                    continue;
                }
            }
            let spec = spec_of(req, &image.source);
            let given = spec.and_then(|(i, _)| logical_names[i].clone());
            // As the user typed it: what `--name NAME=SOURCE` must repeat.
            let typed = spec.map_or(image.source.clone(), |(_, s)| s.text.clone());
            let source_tags = image
                .names
                .iter()
                .map(|n| {
                    ImageRef::parse_tagged(n)
                        .map(|r| r.familiar())
                        .map_err(|e| RequestError::BadSourceName {
                            source_ref: image.source.clone(),
                            name: n.clone(),
                            reason: e.reason,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let logical = match (given, source_tags.first()) {
                (Some(n), _) => n,
                (None, Some(tag)) => ImageRef::parse_tagged(tag)?
                    .without_arch_suffix()
                    .familiar(),
                (None, None) => {
                    return Err(RequestError::NoName {
                        source_ref: typed,
                        why: no_name_reason(&image.source),
                    }
                    .into())
                }
            };
            if let Some(other) = plan
                .iter()
                .find(|p| p.image.logical == logical && p.image.platform == image.platform)
            {
                if other.image.identity == image.identity {
                    continue; // the same image named twice: keep one
                }
                return Err(RequestError::DuplicatePlatform {
                    logical,
                    platform: image.platform.to_string(),
                    first: other.image.origin.clone(),
                    second: image.source.clone(),
                }
                .into());
            }
            let taken = summary(&mut summaries, &image.source);
            if !taken.platforms.contains(&image.platform.to_string()) {
                taken.platforms.push(image.platform.to_string());
            }
            plan.push(Planned {
                image: PlannedImage {
                    logical,
                    platform: image.platform.clone(),
                    source_tags,
                    identity: image.identity.clone(),
                    config: image.config.clone(),
                    diff_ids: image.diff_ids.clone(),
                    origin: image.source.clone(),
                },
                input,
                index_in_source: j,
            });
        }
    }
    if plan.is_empty() {
        filtered_out.sort();
        filtered_out.dedup();
        return Err(RequestError::NoImages(if filtered_out.is_empty() {
            String::new()
        } else {
            format!(
                ": --platform kept none of the sources' platforms ({})",
                filtered_out.join(", ")
            )
        })
        .into());
    }
    Ok((plan, summaries))
}

/// The loaders a bundle of `plan` carries: one per target its platforms (or
/// `--loaders-for`) run, each checked to be a static-looking ELF of that target.
fn loader_inputs(
    req: &CreateRequest,
    plan: &[Planned],
) -> Result<Vec<archpack_format::loaders::LoaderInput>, Error> {
    let Some(l) = &req.loaders else {
        return Ok(Vec::new());
    };
    let platforms: Vec<Platform> = match &l.platforms {
        Some(p) => p.clone(),
        None => plan.iter().map(|p| p.image.platform.clone()).collect(),
    };
    let mut targets: Vec<&'static str> = Vec::new();
    for p in &platforms {
        let t = archpack_format::loaders::target_for(p).ok_or_else(|| {
            RequestError::NoLoaderTarget {
                platform: p.to_string(),
            }
        })?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    targets.sort_by_key(|t| {
        archpack_format::loaders::TARGETS
            .iter()
            .position(|(x, _)| x == t)
    });
    let mut inputs = Vec::new();
    for target in targets {
        let path = l.dir.join(format!("archpack-linux-{target}"));
        let mut file = std::fs::File::open(&path).map_err(|error| RequestError::Loader {
            path: path.clone(),
            detail: format!("{error} (scripts/build-targets.sh writes it)"),
        })?;
        check_loader_elf(&mut file, target).map_err(|detail| RequestError::Loader {
            path: path.clone(),
            detail,
        })?;
        use std::io::Seek;
        file.rewind().map_err(|error| RequestError::Loader {
            path: path.clone(),
            detail: error.to_string(),
        })?;
        inputs.push(archpack_format::loaders::LoaderInput {
            target: target.to_string(),
            binary: Box::new(file),
        });
    }
    Ok(inputs)
}

/// A loader must be an executable ELF of its target's machine, class and float ABI (a
/// hard-float arm-v7 binary where arm-v6's soft-float one belongs would not run on a Pi Zero).
fn check_loader_elf(file: &mut std::fs::File, target: &str) -> Result<(), String> {
    const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
    let mut head = [0u8; 52];
    file.read_exact(&mut head)
        .map_err(|_| "too short to be an ELF executable".to_string())?;
    let ident = crate::platform::probe::ElfIdent::parse(&head)
        .ok_or_else(|| "not an ELF executable".to_string())?;
    let arch = ident.architecture().unwrap_or("unknown");
    let want = match target {
        "amd64" => "amd64",
        "arm64" => "arm64",
        _ => "arm",
    };
    if arch != want {
        return Err(format!("an ELF for {arch} ({ident}), not for {target}"));
    }
    if want == "arm" {
        let flags = u32::from_le_bytes([head[36], head[37], head[38], head[39]]);
        let hard = flags & EF_ARM_ABI_FLOAT_HARD != 0;
        match (target, hard) {
            ("arm-v7", false) => return Err("a soft-float arm binary; arm-v7 is the hard-float (armhf) build".into()),
            ("arm-v6", true) => return Err("a hard-float arm binary; arm-v6 is the soft-float (armel, armv5te) build that runs on ARMv6".into()),
            _ => {}
        }
    }
    Ok(())
}

fn summary<'a>(summaries: &'a mut Vec<SourceSummary>, source: &str) -> &'a mut SourceSummary {
    if let Some(i) = summaries.iter().position(|s| s.source == source) {
        return &mut summaries[i];
    }
    summaries.push(SourceSummary {
        source: source.to_string(),
        platforms: Vec::new(),
        absent: Vec::new(),
    });
    let last = summaries.len() - 1;
    &mut summaries[last]
}

/// Why a source's image has no name, in words.
fn no_name_reason(source: &str) -> String {
    if source.starts_with("docker-daemon:") {
        " (it was named by ID or digest, which is not a tag)".into()
    } else if source.starts_with("oci") {
        " (its OCI ref is a bare tag, and a directory name is never taken for one)".into()
    } else {
        " (it has no RepoTags)".into()
    }
}

/// The bundle writer as a source's layer sink.
struct WriterSink<'w, 'f, 'o> {
    writer: &'w mut BundleWriter<'f, 'o>,
    progress: &'w dyn Progress,
    error: Option<FormatError>,
}

impl WriterSink<'_, '_, '_> {
    fn abort(&mut self, e: FormatError) -> SourceError {
        self.error = Some(e);
        SourceError::Aborted
    }
}

impl LayerSink for WriterSink<'_, '_, '_> {
    fn wants(&self, diff_id: &Digest) -> bool {
        self.writer.wants(diff_id)
    }

    fn has_size(&self, diff_id: &Digest) -> Option<u64> {
        self.writer.taken_size(diff_id)
    }

    fn layer(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
    ) -> Result<(), SourceError> {
        match self.writer.layer(origin, expected, data, self.progress) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.abort(e)),
        }
    }

    fn config(
        &mut self,
        identity: &Digest,
        origin: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SourceError> {
        match self.writer.config(identity, origin, bytes) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.abort(e)),
        }
    }
}
