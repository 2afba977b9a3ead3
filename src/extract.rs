//! One platform of a bundle as something other tools read: a docker-archive (what
//! `docker load` and podman take; plain layers, because Docker 20.10 rejects zstd) or an
//! OCI archive (containerd `ctr import`, k3s). `load` streams the same docker-archive
//! straight into the engine.
//!
//! Every byte taken from the bundle is checked as it passes: a blob's digest and size,
//! a layer's decompressed diff_id and size (decompression stops at the declared size).
//! A failure surfaces as an error from the writer, so a streamed load aborts.

use crate::bundle::{
    BundleError, BundleIndex, BundleReader, ImageEntry, LayerFault, Member, PlatformEntry,
    VerifiedLayer,
};
use crate::digest::{Digest, HashingReader};
use crate::platform::Platform;
use crate::probe::{best_match, Decision, ProbeError};
use crate::progress::Progress;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{image}: {error}")]
    NoPlatform { image: String, error: ProbeError },
    #[error("the bundle has no image named {0:?} (it has: {1})")]
    NoSuchImage(String, String),
    #[error("{member}: {detail}; the bundle is corrupt (nothing was loaded)")]
    Corrupt { member: String, detail: String },
    #[error("{member}: the bundle is truncated inside this member (nothing was loaded)")]
    Truncated { member: String },
    #[error("writing {path}: {error}")]
    Write { path: String, error: io::Error },
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
}

/// One image at the platform chosen for it.
#[derive(Debug, Clone)]
pub struct Selected<'a> {
    pub image: &'a ImageEntry,
    pub entry: &'a PlatformEntry,
}

impl Selected<'_> {
    /// Tags to give it: the logical name, then the tags it was packed from.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![self.image.name.clone()];
        for t in &self.entry.source_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags
    }
}

/// Picks, for each image (or the ones named), the best platform for `decision`.
pub fn select<'a>(
    index: &'a BundleIndex,
    decision: &Decision,
    only: &[String],
) -> Result<Vec<Selected<'a>>, ExtractError> {
    for name in only {
        if index.image(name).is_none() {
            let names: Vec<&str> = index.images.iter().map(|i| i.name.as_str()).collect();
            return Err(ExtractError::NoSuchImage(name.clone(), names.join(", ")));
        }
    }
    let mut out = Vec::new();
    for image in &index.images {
        if !only.is_empty() && !only.contains(&image.name) {
            continue;
        }
        let offered: Vec<Platform> = image.platforms.iter().map(|p| p.platform.clone()).collect();
        let chosen = best_match(decision, &offered).map_err(|error| ExtractError::NoPlatform {
            image: image.name.clone(),
            error,
        })?;
        let entry = image
            .platforms
            .iter()
            .find(|p| p.platform == chosen)
            .ok_or_else(|| ExtractError::NoSuchImage(image.name.clone(), chosen.to_string()))?;
        out.push(Selected { image, entry });
    }
    Ok(out)
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
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveStats {
    pub images: usize,
    pub layers_sent: usize,
    pub layers_skipped: usize,
    /// Bytes of blob data read from the bundle.
    pub blob_bytes_read: u64,
    /// Tar bytes produced.
    pub bytes_written: u64,
}

/// The docker ChainID of each prefix of `diff_ids` (image-spec: ChainID(L0) = DiffID(L0),
/// ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// diff_ids of an entry's layers, from the index.
pub fn diff_ids(index: &BundleIndex, entry: &PlatformEntry) -> Result<Vec<Digest>, ExtractError> {
    entry
        .layers
        .iter()
        .map(|l| {
            index
                .member_by_digest(l)
                .and_then(|m| m.diff_id.clone())
                .ok_or_else(|| ExtractError::Corrupt {
                    member: l.blob_path(),
                    detail: "the index gives this layer no diffId".into(),
                })
        })
        .collect()
}

/// Writes a docker-archive (`manifest.json`, `<config>.json`, `<diff_id>/layer.tar`) of
/// the selected images. Members are read in bundle order.
pub fn write_docker_archive<W: Write>(
    reader: &BundleReader,
    selected: &[Selected],
    skip: &Skip,
    out: W,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ExtractError> {
    let index = &reader.index;
    let mut stats = ArchiveStats::default();
    let mut manifest = Vec::new();
    // (offset, member, docker-archive name) of everything to send, deduplicated.
    let mut wanted: Vec<(&Member, String)> = Vec::new();
    let mut names_seen = HashSet::new();
    for s in selected {
        if skip.images.contains(&s.entry.config) {
            continue;
        }
        stats.images += 1;
        let config = member(index, &s.entry.config)?;
        let config_name = format!("{}.json", s.entry.config.hex());
        if names_seen.insert(config_name.clone()) {
            wanted.push((config, config_name.clone()));
        }
        let diffs = diff_ids(index, s.entry)?;
        let chains = chain_ids(&diffs);
        let mut layer_names = Vec::new();
        for ((blob, diff), chain) in s.entry.layers.iter().zip(&diffs).zip(&chains) {
            let name = format!("{}/layer.tar", diff.hex());
            layer_names.push(name.clone());
            if skip.chains.contains(chain) {
                stats.layers_skipped += 1;
                continue;
            }
            if names_seen.insert(name.clone()) {
                wanted.push((member(index, blob)?, name));
                stats.layers_sent += 1;
            }
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": s.tags(),
            "Layers": layer_names,
        }));
    }
    wanted.sort_by_key(|(m, _)| m.offset);
    let total: u64 = wanted
        .iter()
        .map(|(m, _)| m.uncompressed_size.unwrap_or(m.size))
        .sum();
    progress.start("sending", Some(total));

    let mut tar = TarOut::new(out);
    for (m, name) in &wanted {
        match m.diff_id {
            Some(ref diff_id) => {
                let size = m.uncompressed_size.ok_or_else(|| ExtractError::Corrupt {
                    member: m.name.clone(),
                    detail: "the index gives this layer no uncompressedSize".into(),
                })?;
                let mut layer = VerifiedLayer::new(reader, m, diff_id.clone(), size, progress)
                    .map_err(|fault| ExtractError::Corrupt {
                        member: m.name.clone(),
                        detail: fault.to_string(),
                    })?;
                if skip.diff_id_hashing {
                    layer = layer.diff_id_checked_by_consumer();
                }
                tar.append(name, size, mtime, &mut layer)?;
                stats.blob_bytes_read += m.size;
            }
            None => {
                let bytes = read_checked(reader, m)?;
                progress.advance(bytes.len() as u64);
                tar.append_bytes(name, &bytes, mtime)?;
                stats.blob_bytes_read += m.size;
            }
        }
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|e| tar.error(e.into()))?;
    tar.append_bytes("manifest.json", &manifest, mtime)?;
    stats.bytes_written = tar.finish()?;
    progress.finish();
    Ok(stats)
}

pub(crate) fn member<'a>(
    index: &'a BundleIndex,
    digest: &Digest,
) -> Result<&'a Member, ExtractError> {
    index
        .member_by_digest(digest)
        .ok_or_else(|| ExtractError::Corrupt {
            member: digest.blob_path(),
            detail: "named by the index but not a member".into(),
        })
}

/// Reads a small member fully, checking its digest and size.
pub fn read_checked(reader: &BundleReader, m: &Member) -> Result<Vec<u8>, ExtractError> {
    reader.read_member(m).map_err(|e| match e {
        BundleError::Truncated { .. } => ExtractError::Truncated {
            member: m.name.clone(),
        },
        BundleError::DigestMismatch {
            expected, actual, ..
        } => ExtractError::Corrupt {
            member: m.name.clone(),
            detail: format!("digest {actual}, the index says {expected}"),
        },
        other => ExtractError::Bundle(other),
    })
}

/// A tar writer over any `Write`, counting bytes; plain ustar/GNU headers.
struct TarOut<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> Self {
        TarOut { out, written: 0 }
    }

    fn error(&self, error: io::Error) -> ExtractError {
        // A verification failure travels as the io::Error's payload.
        match LayerFault::in_io(&error) {
            Some(LayerFault::Corrupt { member, detail }) => ExtractError::Corrupt {
                member: member.clone(),
                detail: detail.clone(),
            },
            Some(LayerFault::Truncated { member }) => ExtractError::Truncated {
                member: member.clone(),
            },
            None => ExtractError::Write {
                path: "the archive stream".into(),
                error,
            },
        }
    }

    fn append(
        &mut self,
        name: &str,
        size: u64,
        mtime: u64,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
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
            return Err(ExtractError::Corrupt {
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
    fn append_bytes(&mut self, name: &str, bytes: &[u8], mtime: u64) -> Result<(), ExtractError> {
        self.append(name, bytes.len() as u64, mtime, &mut &bytes[..])
    }

    fn finish(mut self) -> Result<u64, ExtractError> {
        self.out
            .write_all(&[0u8; 1024])
            .map_err(|e| self.error(e))?;
        self.out.flush().map_err(|e| self.error(e))?;
        Ok(self.written + 1024)
    }
}

/// `io::copy` in 256 KiB steps rather than its 8 KiB: a layer streams through the
/// decoder, the progress and the writer in 32× fewer calls.
fn copy_in_blocks(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
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

/// Writes `selected` as a docker-archive file (atomically, beside `path`).
pub fn docker_archive_file(
    reader: &BundleReader,
    selected: &[Selected],
    path: &Path,
    force: bool,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ExtractError> {
    write_file_atomically(path, force, |file| {
        write_docker_archive(
            reader,
            selected,
            &Skip::default(),
            io::BufWriter::with_capacity(1 << 20, file),
            mtime,
            progress,
        )
    })
}

/// Writes `selected` as an OCI archive: layers as stored (zstd), configs and manifests
/// byte for byte, an `index.json` naming each image by its logical name.
pub fn oci_archive_file(
    reader: &BundleReader,
    selected: &[Selected],
    path: &Path,
    force: bool,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<ArchiveStats, ExtractError> {
    write_file_atomically(path, force, |file| {
        let index = &reader.index;
        let mut stats = ArchiveStats::default();
        let mut blobs: Vec<&Member> = Vec::new();
        let mut top = Vec::new();
        for s in selected {
            stats.images += 1;
            for d in [&s.entry.config, &s.entry.manifest]
                .into_iter()
                .chain(s.entry.layers.iter())
            {
                let m = member(index, d)?;
                if !blobs.iter().any(|b| b.digest == m.digest) {
                    blobs.push(m);
                }
            }
            let manifest = member(index, &s.entry.manifest)?;
            top.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.digest,
                "size": manifest.size,
                "platform": {
                    "os": s.entry.platform.os,
                    "architecture": s.entry.platform.architecture,
                    "variant": s.entry.platform.variant,
                },
                "annotations": {
                    "org.opencontainers.image.ref.name": s.image.name,
                    "io.containerd.image.name": docker_reference(&s.image.name),
                },
            }));
        }
        blobs.sort_by_key(|m| m.offset);
        progress.start("writing", Some(blobs.iter().map(|m| m.size).sum()));
        let mut tar = TarOut::new(io::BufWriter::with_capacity(1 << 20, file));
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        tar.append_bytes("oci-layout", layout, mtime)?;
        for m in blobs {
            let mut checked = CheckedBlob::new(reader, m, progress);
            tar.append(&m.name, m.size, mtime, &mut checked)?;
            stats.blob_bytes_read += m.size;
            if m.diff_id.is_some() {
                stats.layers_sent += 1;
            }
        }
        let oci_index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": top,
        }))
        .map_err(|e| tar.error(e.into()))?;
        tar.append_bytes("index.json", &oci_index, mtime)?;
        stats.bytes_written = tar.finish()?;
        progress.finish();
        Ok(stats)
    })
}

/// `svc:v1.0` → `docker.io/library/svc:v1.0`, the form containerd names images by.
fn docker_reference(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// A blob's bytes as stored, checked against its digest and size at the end.
struct CheckedBlob<'a> {
    inner: Option<HashingReader<crate::bundle::MemberReader<'a>>>,
    member: &'a Member,
    progress: &'a dyn Progress,
}

impl<'a> CheckedBlob<'a> {
    fn new(reader: &'a BundleReader, member: &'a Member, progress: &'a dyn Progress) -> Self {
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
        self.progress.advance(n as u64);
        if n == 0 {
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
        Ok(n)
    }
}

/// Runs `write` on a temporary file beside `path`, then renames it into place.
fn write_file_atomically(
    path: &Path,
    force: bool,
    write: impl FnOnce(&std::fs::File) -> Result<ArchiveStats, ExtractError>,
) -> Result<ArchiveStats, ExtractError> {
    crate::fsutil::write_atomically(path, force, 0o644, write).map_err(|e| match e {
        crate::fsutil::WriteError::Exists(p) => ExtractError::Exists(p),
        crate::fsutil::WriteError::Io { path, error } => ExtractError::Write {
            path: path.display().to_string(),
            error,
        },
        crate::fsutil::WriteError::Content(e) => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn docker_references() {
        assert_eq!(docker_reference("svc:v1"), "docker.io/library/svc:v1");
        assert_eq!(docker_reference("team/svc:v1"), "docker.io/team/svc:v1");
        assert_eq!(docker_reference("reg:5000/svc:v1"), "reg:5000/svc:v1");
    }
}
