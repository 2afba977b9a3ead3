//! Delivering as an archive other tools read: a docker-archive (what `docker load` and
//! podman take; plain layers, because Docker 20.10 rejects zstd) or an OCI archive
//! (containerd `ctr import`, k3s, and Docker 23+'s `docker load` through the
//! `manifest.json` it also carries). `load` streams the same docker-archive straight
//! into the engine.
//!
//! Every byte taken from the bundle is checked as it passes: a blob's digest and size,
//! a layer's decompressed diff_id and size (decompression stops at the declared size).
//! A failure surfaces as an error from the writer, so a streamed load aborts.

use crate::digest::{Digest, HashingReader};
use crate::platform::Selected;
use crate::progress::Progress;
use crate::reference::ImageRef;
use archpack_format::codec::LayerFault;
use archpack_format::{
    chain_ids, exit, oci, BundleReader, FormatError, LayerStorage, Member, MemberKind, MemberReader,
};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Bundle(#[from] FormatError),
    #[error("{member}: {detail}; the bundle is corrupt (nothing was loaded)")]
    Corrupt { member: String, detail: String },
    #[error("{member}: the bundle is truncated inside this member (nothing was loaded)")]
    Truncated { member: String },
    #[error("writing {path}: {error}")]
    Write { path: String, error: io::Error },
    #[error(transparent)]
    Output(#[from] crate::fsutil::OutputError),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    #[error("layer {layer} is not in this bundle (a delta): it needs its base")]
    NeedsBase { layer: String },
}

impl ArchiveError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ArchiveError::Bundle(e) => e.exit_code(),
            ArchiveError::Corrupt { .. } | ArchiveError::Truncated { .. } => exit::INTEGRITY,
            ArchiveError::Write { .. }
            | ArchiveError::Output(_)
            | ArchiveError::Name(_)
            | ArchiveError::NeedsBase { .. } => exit::FAILURE,
        }
    }
}

/// What to leave out of a docker-archive because the engine already has it.
#[derive(Debug, Default, Clone)]
pub struct Skip {
    /// Images (config digests) not to send at all.
    pub images: HashSet<Digest>,
    /// Layer chain IDs the engine has: listed in manifest.json, bytes not sent.
    pub chains: HashSet<Digest>,
    /// Leave the diff_id hash to the consumer, which checks it itself (the engine does).
    pub diff_id_hashing: bool,
    /// Name no tags in the archive: the caller tags once every part of a load is in.
    pub tags: bool,
}

/// Layers a delta bundle does not hold whole, supplied from elsewhere (the engine's
/// own export, a base bundle, a patch and its reference: `deliver::delta`).
pub trait ExtraLayers {
    /// Whether the engine holds this blob already (it is left out of an OCI archive).
    fn held_by_engine(&self, blob: &Digest) -> bool;
    /// Hands the layer `blob` to `write`: its uncompressed tar (`stored == false`) or its
    /// zstd blob as the manifests name it, every byte checked as it passes.
    fn stream(
        &self,
        blob: &Digest,
        stored: bool,
        write: &mut dyn FnMut(&mut dyn Read) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError>;
}

/// For a full bundle: it has every layer, so none is asked for.
pub struct NoExtraLayers;

impl ExtraLayers for NoExtraLayers {
    fn held_by_engine(&self, _: &Digest) -> bool {
        false
    }

    fn stream(
        &self,
        blob: &Digest,
        _: bool,
        _: &mut dyn FnMut(&mut dyn Read) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        Err(ArchiveError::NeedsBase {
            layer: blob.to_string(),
        })
    }
}

/// One thing an archive carries: a member of the bundle, or a layer from elsewhere.
enum Wanted<'a> {
    Member(&'a Member, String),
    Extra {
        blob: Digest,
        name: String,
        size: u64,
        /// Where its bytes lie in the bundle (a patch member), for reading in order.
        at: u64,
    },
}

impl Wanted<'_> {
    fn at(&self) -> u64 {
        match self {
            Wanted::Member(m, _) => m.offset,
            Wanted::Extra { at, .. } => *at,
        }
    }

    fn name(&self) -> &str {
        match self {
            Wanted::Member(_, n) | Wanted::Extra { name: n, .. } => n,
        }
    }
}

/// A layer the bundle does not hold whole: its size in the archive (uncompressed, or
/// the blob's) and where its patch lies.
fn extra_layer(
    reader: &BundleReader,
    blob: &Digest,
    name: String,
    stored: bool,
) -> Option<Wanted<'static>> {
    match reader.index.layer(blob)? {
        LayerStorage::Whole { .. } => None,
        storage => Some(Wanted::Extra {
            blob: blob.clone(),
            name,
            size: if stored {
                storage.blob_size()
            } else {
                storage.uncompressed_size()
            },
            at: match storage {
                LayerStorage::Patched { member, .. } => member.offset,
                _ => 0,
            },
        }),
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStats {
    pub images: usize,
    pub layers_sent: usize,
    pub layers_skipped: usize,
    /// Bytes of blob data read from the bundle.
    pub blob_bytes_read: u64,
    /// Tar bytes produced.
    pub bytes_written: u64,
}

/// One entry of a docker-archive's `manifest.json` (moby's `image/tarexport`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

pub(crate) fn layers_of(
    reader: &BundleReader,
    s: &Selected,
) -> Result<Vec<(Digest, Digest)>, ArchiveError> {
    let diffs = reader
        .index
        .diff_ids_of(s.entry)
        .ok_or_else(|| ArchiveError::Corrupt {
            member: s.image.name.clone(),
            detail: "the index gives a layer no diffId".into(),
        })?;
    Ok(s.entry.layers.iter().cloned().zip(diffs).collect())
}

/// Every name an image is tagged with, each checked against the reference grammar
/// before a byte is written: a bundle can carry a name no engine would take.
pub fn checked_tags(selected: &[Selected]) -> Result<Vec<Vec<String>>, ArchiveError> {
    selected
        .iter()
        .map(|s| {
            s.tags()
                .iter()
                .map(|t| ImageRef::parse_tagged(t).map(|r| r.familiar()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ArchiveError::from)
        })
        .collect()
}

/// Writes a docker-archive (`manifest.json`, `<config>.json`, `<diff_id>/layer.tar`) of
/// the selected images. Members are read in bundle order.
pub fn write_docker_archive<W: Write>(
    reader: &BundleReader,
    selected: &[Selected],
    skip: &Skip,
    extra: &dyn ExtraLayers,
    out: W,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ArchiveError> {
    DockerArchive::of(reader, selected, skip)?.write(extra, out, mtime, progress, &mut || Ok(()))
}

/// A docker-archive about to be written: what it carries, in bundle order, and its
/// `manifest.json`.
pub struct DockerArchive<'r> {
    reader: &'r BundleReader,
    wanted: Vec<Wanted<'r>>,
    /// Configs made for the archive (stand-ins), written after the members.
    documents: Vec<(String, Vec<u8>)>,
    names_seen: HashSet<String>,
    manifest: Vec<ArchiveManifestEntry>,
    diff_id_hashing: bool,
    stats: ArchiveStats,
}

impl<'r> DockerArchive<'r> {
    /// The selected images, less what `skip` leaves out.
    pub fn of(
        reader: &'r BundleReader,
        selected: &[Selected<'r>],
        skip: &Skip,
    ) -> Result<Self, ArchiveError> {
        let tags = checked_tags(selected)?;
        let mut archive = DockerArchive {
            reader,
            wanted: Vec::new(),
            documents: Vec::new(),
            names_seen: HashSet::new(),
            manifest: Vec::new(),
            diff_id_hashing: skip.diff_id_hashing,
            stats: ArchiveStats::default(),
        };
        for (s, tags) in selected.iter().zip(tags) {
            if skip.images.contains(&s.entry.config) {
                continue;
            }
            archive.stats.images += 1;
            let config = member(reader, &s.entry.config)?;
            let config_name = format!("{}.json", s.entry.config.hex());
            if archive.names_seen.insert(config_name.clone()) {
                archive
                    .wanted
                    .push(Wanted::Member(config, config_name.clone()));
            }
            let layers = layers_of(reader, s)?;
            let layer_names = archive.add_layers(&layers, &|chain| skip.chains.contains(chain))?;
            archive.manifest.push(ArchiveManifestEntry {
                config: config_name,
                repo_tags: if skip.tags { Vec::new() } else { tags },
                layers: layer_names,
            });
        }
        Ok(archive)
    }

    /// Adds an untagged image of `config` (not a bundle member: a stand-in naming part
    /// of a chain) over `layers`, those whose chain `skip` names left out.
    pub fn stand_in(
        &mut self,
        config: Vec<u8>,
        layers: &[(Digest, Digest)],
        skip: &dyn Fn(&Digest) -> bool,
    ) -> Result<(), ArchiveError> {
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let layer_names = self.add_layers(layers, skip)?;
        if self.names_seen.insert(config_name.clone()) {
            self.documents.push((config_name.clone(), config));
        }
        self.stats.images += 1;
        self.manifest.push(ArchiveManifestEntry {
            config: config_name,
            repo_tags: Vec::new(),
            layers: layer_names,
        });
        Ok(())
    }

    /// Adds the layers (blob, diff_id) of one image whose chain `skip` does not name;
    /// returns every layer's name for the manifest.
    fn add_layers(
        &mut self,
        layers: &[(Digest, Digest)],
        skip: &dyn Fn(&Digest) -> bool,
    ) -> Result<Vec<String>, ArchiveError> {
        let diffs: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
        let mut layer_names = Vec::with_capacity(layers.len());
        for ((blob, diff), chain) in layers.iter().zip(chain_ids(&diffs)) {
            let name = format!("{}/layer.tar", diff.hex());
            layer_names.push(name.clone());
            if skip(&chain) {
                self.stats.layers_skipped += 1;
                continue;
            }
            if self.names_seen.insert(name.clone()) {
                match extra_layer(self.reader, blob, name.clone(), false) {
                    Some(w) => self.wanted.push(w),
                    None => self
                        .wanted
                        .push(Wanted::Member(member(self.reader, blob)?, name)),
                }
                self.stats.layers_sent += 1;
            }
        }
        Ok(layer_names)
    }

    /// Writes the archive. `before_end` runs once everything but the `manifest.json`
    /// and the archive's end is written: an error from it fails the archive there.
    pub fn write<W: Write>(
        mut self,
        extra: &dyn ExtraLayers,
        out: W,
        mtime: u64,
        progress: &dyn Progress,
        before_end: &mut dyn FnMut() -> io::Result<()>,
    ) -> Result<ArchiveStats, ArchiveError> {
        let reader = self.reader;
        self.wanted.sort_by_key(|w| w.at());
        let total: u64 = self
            .wanted
            .iter()
            .map(|w| match w {
                Wanted::Member(m, _) => m.uncompressed_size.unwrap_or(m.size),
                Wanted::Extra { size, .. } => *size,
            })
            .chain(self.documents.iter().map(|(_, bytes)| bytes.len() as u64))
            .sum();
        progress.start("sending", Some(total));
        let mut stats = self.stats;
        let mut tar = TarOut::new(out);
        for w in &self.wanted {
            let (m, name) = match w {
                Wanted::Member(m, name) => (*m, name),
                Wanted::Extra {
                    blob, name, size, ..
                } => {
                    extra.stream(blob, false, &mut |layer| {
                        tar.append(
                            name,
                            *size,
                            mtime,
                            &mut ProgressRead {
                                inner: layer,
                                progress,
                            },
                        )
                    })?;
                    continue;
                }
            };
            match m.uncompressed_size {
                Some(size) if m.kind == MemberKind::Layer => {
                    let mut layer = reader.layer_reader(m, progress).map_err(fault_error)?;
                    if self.diff_id_hashing {
                        layer = layer.diff_id_checked_by_consumer();
                    }
                    tar.append(name, size, mtime, &mut layer)?;
                }
                _ => {
                    let bytes = read_checked(reader, m)?;
                    progress.advance(bytes.len() as u64);
                    tar.append_bytes(name, &bytes, mtime)?;
                }
            }
            stats.blob_bytes_read += m.size;
        }
        for (name, bytes) in &self.documents {
            progress.advance(bytes.len() as u64);
            tar.append_bytes(name, bytes, mtime)?;
        }
        before_end().map_err(|e| tar.error(e))?;
        let manifest = serde_json::to_vec(&self.manifest).map_err(|e| tar.error(e.into()))?;
        tar.append_bytes("manifest.json", &manifest, mtime)?;
        stats.bytes_written = tar.finish()?;
        progress.finish();
        Ok(stats)
    }
}

/// The two archive kinds a bundle's platform can be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// `docker load` / podman: manifest.json, plain layers.
    DockerArchive,
    /// containerd `ctr images import`, k3s agent/images, Docker 23+: OCI layout, zstd.
    OciArchive,
}

/// Writes `selected` as an archive file of `format` (atomically, beside `path`).
pub fn archive_file(
    format: ArchiveFormat,
    reader: &BundleReader,
    selected: &[Selected],
    path: &Path,
    force: bool,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ArchiveError> {
    crate::fsutil::write_atomically(path, force, 0o644, |file| {
        let out = io::BufWriter::with_capacity(1 << 20, file);
        let write = match format {
            ArchiveFormat::DockerArchive => write_docker_archive,
            ArchiveFormat::OciArchive => write_oci_archive,
        };
        write(
            reader,
            selected,
            &Skip::default(),
            &NoExtraLayers,
            out,
            mtime,
            progress,
        )
    })
    .map_err(|e| e.flatten())
}

/// Writes `selected` as an OCI archive: layers as stored (zstd), configs and manifests
/// byte for byte, an `index.json` naming each image by its logical name (and its full
/// name for containerd), and a `manifest.json` for Docker's loader on the classic store,
/// which reads only that (Docker 23+ decompresses the zstd layers; 20.10 cannot: give it
/// a docker-archive). The containerd image store takes it as it is: the image ID there is
/// then the bundle's manifest digest, as a registry pull would give. Images in
/// `skip.images` are left out.
pub fn write_oci_archive<W: Write>(
    reader: &BundleReader,
    selected: &[Selected],
    skip: &Skip,
    extra: &dyn ExtraLayers,
    out: W,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ArchiveError> {
    let tags = checked_tags(selected)?;
    let mut stats = ArchiveStats::default();
    let mut blobs: Vec<Wanted> = Vec::new();
    let mut seen = HashSet::new();
    let mut top = Vec::new();
    let mut docker_manifest = Vec::new();
    for (s, tags) in selected.iter().zip(tags) {
        if skip.images.contains(&s.entry.config) {
            continue;
        }
        stats.images += 1;
        for d in [&s.entry.config, &s.entry.manifest]
            .into_iter()
            .chain(s.entry.layers.iter())
        {
            if !seen.insert(d.clone()) || extra.held_by_engine(d) {
                continue;
            }
            match extra_layer(reader, d, d.blob_path(), true) {
                Some(w) => blobs.push(w),
                None => {
                    let m = member(reader, d)?;
                    blobs.push(Wanted::Member(m, m.name.clone()));
                }
            }
        }
        let manifest = member(reader, &s.entry.manifest)?;
        let full = ImageRef::parse_tagged(&s.image.name)?.full();
        let d = oci::platform_manifest(&manifest.digest, manifest.size, &s.entry.platform);
        top.push(oci::named(d, &s.image.name, Some(&full)));
        docker_manifest.push(ArchiveManifestEntry {
            config: s.entry.config.blob_path(),
            repo_tags: tags,
            layers: s.entry.layers.iter().map(|l| l.blob_path()).collect(),
        });
    }
    blobs.sort_by_key(|w| w.at());
    progress.start(
        "sending",
        Some(
            blobs
                .iter()
                .map(|w| match w {
                    Wanted::Member(m, _) => m.size,
                    Wanted::Extra { size, .. } => *size,
                })
                .sum(),
        ),
    );
    let mut tar = TarOut::new(out);
    tar.append_bytes("oci-layout", oci::OCI_LAYOUT, mtime)?;
    for w in &blobs {
        match w {
            Wanted::Member(m, _) => {
                let mut checked = CheckedBlob::new(reader, m, progress);
                tar.append(&m.name, m.size, mtime, &mut checked)?;
                stats.blob_bytes_read += m.size;
                if m.diff_id.is_some() {
                    stats.layers_sent += 1;
                }
            }
            Wanted::Extra { blob, size, .. } => {
                extra.stream(blob, true, &mut |layer| {
                    tar.append(
                        w.name(),
                        *size,
                        mtime,
                        &mut ProgressRead {
                            inner: layer,
                            progress,
                        },
                    )
                })?;
                stats.layers_sent += 1;
            }
        }
    }
    let oci_index = oci::index(top)?;
    tar.append_bytes("index.json", &oci_index, mtime)?;
    let docker_manifest = serde_json::to_vec(&docker_manifest).map_err(|e| tar.error(e.into()))?;
    tar.append_bytes("manifest.json", &docker_manifest, mtime)?;
    stats.bytes_written = tar.finish()?;
    progress.finish();
    Ok(stats)
}

pub(crate) fn member<'a>(
    reader: &'a BundleReader,
    digest: &Digest,
) -> Result<&'a Member, ArchiveError> {
    reader
        .index
        .member_by_digest(digest)
        .ok_or_else(|| ArchiveError::Corrupt {
            member: digest.blob_path(),
            detail: "named by the index but not a member".into(),
        })
}

/// Reads a small member fully, checking its digest and size.
pub fn read_checked(reader: &BundleReader, m: &Member) -> Result<Vec<u8>, ArchiveError> {
    reader.read_member(m).map_err(|e| match e {
        FormatError::Truncated { .. } => ArchiveError::Truncated {
            member: m.name.clone(),
        },
        FormatError::DigestMismatch {
            expected, actual, ..
        } => ArchiveError::Corrupt {
            member: m.name.clone(),
            detail: format!("digest {actual}, the index says {expected}"),
        },
        other => ArchiveError::Bundle(other),
    })
}

pub(crate) fn fault_error(fault: LayerFault) -> ArchiveError {
    match fault {
        LayerFault::Corrupt { member, detail } => ArchiveError::Corrupt { member, detail },
        LayerFault::Truncated { member } => ArchiveError::Truncated { member },
    }
}

/// The error an `io::Error` from a checked reader carries: its fault if it has one.
pub fn io_fault(error: io::Error, writing: &str) -> ArchiveError {
    match LayerFault::in_io(&error) {
        Some(LayerFault::Corrupt { member, detail }) => ArchiveError::Corrupt {
            member: member.clone(),
            detail: detail.clone(),
        },
        Some(LayerFault::Truncated { member }) => ArchiveError::Truncated {
            member: member.clone(),
        },
        None => ArchiveError::Write {
            path: writing.to_string(),
            error,
        },
    }
}

/// A tar writer over any `Write`, counting bytes; plain GNU headers.
struct TarOut<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut { out, written: 0 }
    }

    fn error(&self, error: io::Error) -> ArchiveError {
        io_fault(error, "the archive stream")
    }

    fn append(
        &mut self,
        name: &str,
        size: u64,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).map_err(|e| self.error(e))?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.out
            .write_all(h.as_bytes())
            .map_err(|e| self.error(e))?;
        let copied =
            copy_in_blocks(&mut data.take(size), &mut self.out).map_err(|e| self.error(e))?;
        if copied != size {
            return Err(ArchiveError::Corrupt {
                member: name.to_string(),
                detail: format!("{copied} bytes where {size} were declared"),
            });
        }
        let pad = (512 - size % 512) % 512;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(|e| self.error(e))?;
        self.written += 512 + size + pad;
        Ok(())
    }

    /// Appends a member from memory (manifests, indexes).
    fn append_bytes(&mut self, name: &str, bytes: &[u8], mtime: u64) -> Result<(), ArchiveError> {
        self.append(name, bytes.len() as u64, mtime, &mut &bytes[..])
    }

    fn finish(mut self) -> Result<u64, ArchiveError> {
        self.out
            .write_all(&[0u8; 1024])
            .map_err(|e| self.error(e))?;
        self.out.flush().map_err(|e| self.error(e))?;
        Ok(self.written + 1024)
    }
}

/// Counts what passes into the progress display.
struct ProgressRead<'a> {
    inner: &'a mut dyn Read,
    progress: &'a dyn Progress,
}

impl Read for ProgressRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// `io::copy` in 256 KiB steps rather than its 8 KiB: a layer streams through the
/// decoder, the progress and the writer in 32× fewer calls.
pub fn copy_in_blocks(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        copied += n as u64;
    }
}

/// A blob's bytes as stored, checked against its digest and size at the end: the
/// error arrives before the last byte is handed on, so nothing unchecked is complete.
pub struct CheckedBlob<'a> {
    inner: Option<HashingReader<MemberReader<'a>>>,
    member: &'a Member,
    progress: &'a dyn Progress,
}

impl<'a> CheckedBlob<'a> {
    pub fn new(reader: &'a BundleReader, member: &'a Member, progress: &'a dyn Progress) -> Self {
        CheckedBlob {
            inner: Some(HashingReader::new(reader.member_reader(member))),
            member,
            progress,
        }
    }
}

impl Read for CheckedBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = inner.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    LayerFault::Truncated {
                        member: self.member.name.clone(),
                    },
                )
            } else {
                e
            }
        })?;
        // Judged when the last byte arrives, before it is handed on: a reader that
        // stops at the declared size (every tar writer) still gets the error.
        if n == 0 || inner.count() >= self.member.size {
            if let Some(done) = self.inner.take() {
                let (digest, count) = done.finish();
                if count != self.member.size || digest != self.member.digest {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        LayerFault::Corrupt {
                            member: self.member.name.clone(),
                            detail: format!(
                                "digest {digest}, the index says {}",
                                self.member.digest
                            ),
                        },
                    ));
                }
            }
        }
        self.progress.advance(n as u64);
        Ok(n)
    }
}
