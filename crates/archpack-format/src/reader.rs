//! Opening and verifying bundles. `open` reads only the index and signature (the
//! front region); members are then reached by the offsets the index records, so a
//! reader touches only the bytes it needs.

use crate::codec::{LayerFault, VerifiedLayer};
use crate::digest::{Digest, HashingReader};
use crate::error::{FormatError, GateRefusal};
use crate::index::*;
use crate::limits::{
    max_member_bytes, MAX_INDEX_BYTES, MAX_INSTALLER_BYTES, MAX_LOADER_BYTES, MAX_SIGNATURE_BYTES,
};
use crate::progress::{Progress, Silent};
use crate::ustar::{self, member_span, BLOCK};
use crate::volumes::{Slot, VolumeSet, VolumeState};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct BundleReader {
    backing: Backing,
    whole_set: bool,
    pub path: PathBuf,
    pub index: BundleIndex,
    /// The index member's exact bytes: what the signature covers.
    pub index_bytes: Vec<u8>,
    /// The signature member's bytes (minisign format), if the bundle is signed.
    pub signature: Option<Vec<u8>>,
    pub file_len: u64,
    bytes_read: ByteCount,
}

/// Decides on a bundle from its raw index and signature bytes, before anything in
/// them is parsed or used. archpack's trust stage implements it.
pub trait IndexGate {
    fn admit(&self, index: &[u8], signature: Option<&[u8]>) -> Result<(), Box<dyn GateRefusal>>;
}

/// Admits every bundle (inspection only: nothing from it is used).
pub struct AdmitAll;

impl IndexGate for AdmitAll {
    fn admit(&self, _: &[u8], _: Option<&[u8]>) -> Result<(), Box<dyn GateRefusal>> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub members: usize,
    pub bytes: u64,
}

impl BundleReader {
    /// Opens a bundle without any trust decision (for `inspect`).
    pub fn open(path: &Path) -> Result<BundleReader, FormatError> {
        Self::open_checked(path, &AdmitAll)
    }

    /// Opens a bundle: reads the index and signature members (the front region only),
    /// lets `gate` decide on those raw bytes, and only then parses the index and
    /// checks the layout it describes. Nothing else is read.
    pub fn open_checked(path: &Path, gate: &dyn IndexGate) -> Result<BundleReader, FormatError> {
        Self::open_paths(path, &[], gate)
    }

    /// [`open_checked`](Self::open_checked) for a bundle in volumes (SPEC §13): `path` is
    /// any volume and `extra` names volumes kept elsewhere; the others are found beside
    /// `path`. A `path` that does not exist but whose `.001` does opens the whole set.
    pub fn open_paths(
        path: &Path,
        extra: &[PathBuf],
        gate: &dyn IndexGate,
    ) -> Result<BundleReader, FormatError> {
        // NAME.001, or NAME.0001 for a set of more than 999.
        let first_volume = ["001", "0001"]
            .iter()
            .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
            .find(|p| !path.exists() && p.is_file());
        let (path, whole_set) = match &first_volume {
            Some(first) => (first.as_path(), true),
            None => (path, false),
        };
        let io_err = |error: io::Error| FormatError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut reader = Self::open_backing(Backing::File(file), path, file_len, gate, extra)?;
        reader.whole_set = whole_set || reader.volume_slots().len() == 1;
        Ok(reader)
    }

    /// Opens a bundle in an open file (`label` names it in messages).
    pub fn open_file(
        file: File,
        label: &Path,
        gate: &dyn IndexGate,
    ) -> Result<BundleReader, FormatError> {
        let file_len = file
            .metadata()
            .map_err(|error| FormatError::Io {
                path: label.to_path_buf(),
                error,
            })?
            .len();
        Self::open_backing(Backing::File(file), label, file_len, gate, &[])
    }

    /// Opens a bundle arriving on a stream (`load -`): members can then only be read
    /// in file order, and what lies between them is read through and dropped.
    pub fn open_stream(
        stream: Box<dyn Read + Send>,
        label: &Path,
        gate: &dyn IndexGate,
    ) -> Result<BundleReader, FormatError> {
        let backing = Backing::Stream(Mutex::new(StreamState { stream, pos: 0 }));
        Self::open_backing(backing, label, u64::MAX, gate, &[])
    }

    fn open_backing(
        backing: Backing,
        path: &Path,
        file_len: u64,
        gate: &dyn IndexGate,
        extra: &[PathBuf],
    ) -> Result<BundleReader, FormatError> {
        let mut reader = BundleReader {
            whole_set: false,
            backing,
            path: path.to_path_buf(),
            index: BundleIndex::empty(),
            index_bytes: Vec::new(),
            signature: None,
            file_len,
            bytes_read: ByteCount::default(),
        };
        let not_bundle = |detail: String| FormatError::NotABundle {
            path: path.to_path_buf(),
            detail,
        };
        if file_len < BLOCK {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                detail: format!("{file_len} bytes, not even one tar header (or not a bundle)"),
            });
        }
        let first = reader.header_at(0).map_err(|e| {
            not_bundle(format!(
                "the first tar header is unreadable ({e}); is this an archpack bundle?"
            ))
        })?;
        if first.name != INDEX_MEMBER {
            return Err(not_bundle(format!(
                "the first member is {:?}, not {INDEX_MEMBER} (a `docker save` or OCI archive? bundle it first: archpack create -o FILE.archpack docker-archive:PATH or oci-archive:PATH)",
                first.name
            )));
        }
        if first.size > MAX_INDEX_BYTES {
            return Err(reader.bad_member(
                INDEX_MEMBER,
                format!(
                    "{} bytes, over the {MAX_INDEX_BYTES}-byte limit",
                    first.size
                ),
            ));
        }
        reader.index_bytes = reader.read_exact_at(INDEX_MEMBER, BLOCK, first.size)?;
        let mut region_end = member_span(first.size);
        // Every bundle has members after the index; a file that ends here was cut short
        // (and must not pass for an unsigned bundle).
        if region_end + BLOCK > file_len {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                detail: "the file ends right after the index".into(),
            });
        }
        if let Ok(h) = reader.header_at(region_end) {
            if h.name == SIGNATURE_MEMBER {
                if h.size > MAX_SIGNATURE_BYTES {
                    return Err(reader.bad_member(
                        SIGNATURE_MEMBER,
                        format!("{} bytes, too large for a signature", h.size),
                    ));
                }
                reader.signature =
                    Some(reader.read_exact_at(SIGNATURE_MEMBER, region_end + BLOCK, h.size)?);
                region_end += member_span(h.size);
            }
        }
        gate.admit(&reader.index_bytes, reader.signature.as_deref())
            .map_err(|refusal| FormatError::Refused {
                path: path.to_path_buf(),
                refusal,
            })?;

        // Decide the format version before trusting the index's shape.
        let probe: serde_json::Value = serde_json::from_slice(&reader.index_bytes)
            .map_err(|e| reader.bad_member(INDEX_MEMBER, format!("not valid JSON: {e}")))?;
        let format = probe
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or_default()
            .to_string();
        let supported = format!(
            "{} and {FORMAT_PREFIX}{FORMAT_MAJOR_FEATURES}.x",
            BundleIndex::format_string()
        );
        match format
            .strip_prefix(FORMAT_PREFIX)
            .and_then(|v| v.split_once('.'))
            .and_then(|(major, _)| major.parse::<u32>().ok())
        {
            Some(major) if major == FORMAT_MAJOR || major == FORMAT_MAJOR_FEATURES => {}
            Some(major) if major > FORMAT_MAJOR_FEATURES => {
                return Err(FormatError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found: format,
                    supported,
                })
            }
            _ => {
                return Err(reader.bad_member(
                    INDEX_MEMBER,
                    format!("unknown format {format:?} (this archpack reads {supported})"),
                ))
            }
        }
        // A feature this archpack does not know changes how the bundle reads: refuse it
        // by name rather than misread it (SPEC §8).
        if let Some(unknown) = probe
            .get("requires")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
            .map(|f| f.as_str().unwrap_or("?"))
            .find(|f| !KNOWN_FEATURES.contains(f))
        {
            return Err(FormatError::UnsupportedFeature {
                path: path.to_path_buf(),
                feature: unknown.to_string(),
            });
        }
        reader.index = serde_json::from_value(probe)
            .map_err(|e| reader.bad_member(INDEX_MEMBER, format!("invalid index: {e}")))?;
        if reader.index.volumes.is_some() {
            reader.attach_volumes(region_end, extra)?;
        } else {
            reader.check_layout(region_end)?;
        }
        Ok(reader)
    }

    /// A volume's index is in hand: check the single file it describes, then find the
    /// volume's siblings and read that file through them.
    fn attach_volumes(&mut self, front_len: u64, extra: &[PathBuf]) -> Result<(), FormatError> {
        let marked = self
            .index
            .requires
            .iter()
            .any(|f| f == crate::volumes::FEATURE_VOLUMES);
        if !marked || self.index.format_version().map(|v| v.0) != Some(FORMAT_MAJOR_FEATURES) {
            return Err(FormatError::BadIndex {
                path: self.path.clone(),
                detail: "it has a volume table but is not marked as a volume (format 2.x, requires `volumes`)".into(),
            });
        }
        let file = match std::mem::replace(&mut self.backing, Backing::Volumes(VolumeSet::empty())) {
            Backing::File(f) => f,
            Backing::Stream(_) if self.index.requires.iter().any(|f| f == crate::volumes::FEATURE_PARTS) => {
                return Err(FormatError::NotABundle {
                    path: self.path.clone(),
                    detail: "a bundle with shared parts cannot be read from a stream (a layer reaches back for frames stored with another): give the bundle's path".into(),
                })
            }
            Backing::Stream(_) => {
                return Err(FormatError::NotABundle {
                    path: self.path.clone(),
                    detail: "a volume cannot be read from a stream: give the volume's path (its siblings are found beside it)".into(),
                })
            }
            Backing::Volumes(_) => {
                return Err(FormatError::Internal("volumes attached twice".into()))
            }
        };
        let mut front = vec![0u8; front_len as usize];
        file.read_exact_at(&mut front, 0)
            .map_err(|error| FormatError::Io {
                path: self.path.clone(),
                error,
            })?;
        let joined = self
            .index
            .volumes
            .as_ref()
            .map(|t| t.joined.clone())
            .ok_or_else(|| FormatError::Internal("volume table gone".into()))?;
        let signature_len = joined.signature.as_ref().map_or(0, |s| s.len() as u64);
        if joined.index_size > MAX_INDEX_BYTES || signature_len > MAX_SIGNATURE_BYTES {
            return Err(FormatError::BadIndex {
                path: self.path.clone(),
                detail: "the joined bundle's index or signature is over its limit".into(),
            });
        }
        // The single file's layout is checked first: the volume table is read against it.
        self.file_len = joined.size;
        self.check_layout(
            member_span(joined.index_size)
                + if signature_len > 0 {
                    member_span(signature_len)
                } else {
                    0
                },
        )?;
        let set = VolumeSet::open(&self.index, (&self.path, file), extra, &front)?;
        self.backing = Backing::Volumes(set);
        Ok(())
    }

    /// The volumes of a bundle read from volumes (empty for a single file).
    pub fn volume_slots(&self) -> &[Slot] {
        match &self.backing {
            Backing::Volumes(set) => &set.slots,
            _ => &[],
        }
    }

    /// Whether the reader was asked for the whole set of volumes (the bundle's name
    /// without a volume number), not for one volume of it.
    pub fn opened_whole_set(&self) -> bool {
        self.whole_set
    }

    /// The members holding `blobs` (a patched layer's patch; none for a layer a delta
    /// leaves to its target).
    fn members_of<'a>(&'a self, blobs: impl IntoIterator<Item = &'a Digest>) -> Vec<&'a Member> {
        blobs
            .into_iter()
            .filter_map(|d| match self.index.layer(d) {
                Some(LayerStorage::Whole { member, .. })
                | Some(LayerStorage::Patched { member, .. }) => Some(member),
                Some(LayerStorage::Required(_)) => None,
                None => self.index.member_by_digest(d),
            })
            .collect()
    }

    /// The volumes (indexes into [`volume_slots`](Self::volume_slots)) holding `blobs`.
    pub fn volumes_holding<'a>(
        &'a self,
        blobs: impl IntoIterator<Item = &'a Digest>,
    ) -> Vec<usize> {
        let Backing::Volumes(set) = &self.backing else {
            return Vec::new();
        };
        let mut out: Vec<usize> = self
            .members_of(blobs)
            .into_iter()
            .flat_map(|m| set.volumes_of(m.offset, m.size).collect::<Vec<_>>())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Before anything is delivered: every volume holding one of `blobs` must be here and
    /// this bundle's. Names each one that is not. A single file always passes.
    pub fn require_blobs<'a>(
        &'a self,
        blobs: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), FormatError> {
        let needed = self.volumes_holding(blobs);
        self.require_volumes(&needed)
    }

    /// Every volume of the set must be here (join, a whole-set verify, push).
    pub fn require_every_volume(&self) -> Result<(), FormatError> {
        let all: Vec<usize> = (0..self.volume_slots().len()).collect();
        self.require_volumes(&all)
    }

    fn require_volumes(&self, needed: &[usize]) -> Result<(), FormatError> {
        let slots = self.volume_slots();
        let problems: Vec<&Slot> = needed
            .iter()
            .filter_map(|&v| slots.get(v))
            .filter(|s| s.state != VolumeState::Present)
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(FormatError::VolumesUnavailable {
            path: self.path.clone(),
            damaged: problems
                .iter()
                .any(|s| matches!(s.state, VolumeState::Damaged(_))),
            problems: problems
                .iter()
                .map(|s| format!("  {}: {}", s.path.display(), s.state))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }

    /// Checks one volume alone: every tar header of it, every piece's digest, and every
    /// member it holds whole as [`verify`](Self::verify) checks it.
    pub fn verify_volume(
        &self,
        volume: usize,
        progress: &dyn Progress,
    ) -> Result<VerifyReport, FormatError> {
        let Backing::Volumes(set) = &self.backing else {
            return Err(FormatError::NotVolumes {
                path: self.path.clone(),
            });
        };
        self.require_volumes(&[volume])?;
        let table = self.index.volumes.as_ref();
        let pieces = table
            .and_then(|t| t.files.get(volume))
            .map_or(&[][..], |f| &f.pieces[..]);
        let bytes: u64 = pieces.iter().map(|p| p.size).sum();
        progress.start("verifying", Some(bytes));
        let mut buf = vec![0u8; 1 << 20];
        for (offset, size) in set.extents_of(volume) {
            if let Some(m) = self
                .index
                .members
                .iter()
                .find(|m| m.offset == offset && m.size == size)
            {
                self.verify_member(m, &mut buf, progress)?;
                continue;
            }
            // A piece of a member cut across volumes, or a loader: its header, then its
            // digest, checked by the member reader when its last byte arrives.
            set.check_headers(offset, size)
                .map_err(|detail| FormatError::CorruptVolume {
                    path: set.slots[volume].path.clone(),
                    detail,
                })?;
            let mut piece = self.range_reader(offset, size);
            loop {
                match piece.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => progress.advance(n as u64),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        return Err(match LayerFault::in_io(&error) {
                            Some(LayerFault::Corrupt { member, detail }) => {
                                FormatError::CorruptLayer {
                                    path: self.path.clone(),
                                    member: member.clone(),
                                    detail: detail.clone(),
                                }
                            }
                            _ => FormatError::Io {
                                path: self.path.clone(),
                                error,
                            },
                        })
                    }
                }
            }
        }
        progress.finish();
        Ok(VerifyReport {
            members: pieces.len(),
            bytes,
        })
    }

    /// Writes the single-file bundle a set of volumes was cut from into `out`, every
    /// member checked as it is copied; returns its size.
    pub fn join_into(&self, out: &File, progress: &dyn Progress) -> Result<u64, FormatError> {
        self.require_every_volume()?;
        crate::volumes::join(self, out, progress)
    }

    /// The index must describe a sane layout before any member is read by it.
    fn check_layout(&self, region_end: u64) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::BadIndex {
            path: self.path.clone(),
            detail,
        };
        let mut next_free = region_end;
        for m in &self.index.members {
            // Every reader path holds metadata members in memory: bound them before
            // anything else, the same way for a file and a stream (which has no length
            // to bound them by).
            let cap = max_member_bytes(m.kind);
            if m.size > cap {
                return Err(bad(format!(
                    "member {} claims {} bytes, over the {cap}-byte limit for a {} (SPEC §3.4)",
                    m.name,
                    m.size,
                    m.kind.as_str()
                )));
            }
            if m.offset < next_free + BLOCK || m.offset % BLOCK != 0 {
                return Err(bad(format!(
                    "member {} at offset {} overlaps another or is misaligned",
                    m.name, m.offset
                )));
            }
            let end = m.offset.checked_add(m.size).ok_or_else(|| {
                bad(format!(
                    "member {} has an impossible size {}",
                    m.name, m.size
                ))
            })?;
            if end > self.file_len {
                return Err(FormatError::Truncated {
                    path: self.path.clone(),
                    detail: format!(
                        "member {} ends at byte {end} but the file has {} bytes",
                        m.name, self.file_len
                    ),
                });
            }
            let expected_name = match m.kind {
                MemberKind::OciLayout => "oci-layout".to_string(),
                MemberKind::OciIndex => "index.json".to_string(),
                _ => m.digest.blob_path(),
            };
            if m.name != expected_name {
                return Err(bad(format!(
                    "member {} should be named {expected_name}",
                    m.name
                )));
            }
            next_free = end + ustar::padding(m.size);
        }
        if let Some(loaders) = &self.index.loaders {
            self.check_loaders_layout(loaders, next_free)?;
        }
        self.check_delta()?;
        // Every blob an image names must exist and be of the kind it is used as; layers
        // must say what they decompress to (a verified bundle must also be loadable).
        for image in &self.index.images {
            for p in &image.platforms {
                for l in &p.layers {
                    if self.index.layer(l).is_none() {
                        let detail = match self.index.member_by_digest(l) {
                            Some(m) if m.kind == MemberKind::Layer => {
                                format!("layer {} has no diffId or uncompressedSize", m.name)
                            }
                            Some(m) => format!(
                                "{} ({}) uses {} as a Layer, but the index says it is a {:?}",
                                image.name, p.platform, m.name, m.kind
                            ),
                            None => format!(
                                "{} ({}) refers to blob {l}, which the bundle does not hold",
                                image.name, p.platform
                            ),
                        };
                        return Err(bad(detail));
                    }
                }
            }
            let uses = image.platforms.iter().flat_map(|p| {
                std::iter::once((&p.config, MemberKind::Config))
                    .chain(std::iter::once((&p.manifest, MemberKind::Manifest)))
                    .map(move |(d, k)| (p, d, k))
            });
            for (p, digest, kind) in uses {
                let Some(m) = self.index.member_by_digest(digest) else {
                    return Err(bad(format!(
                        "{} ({}) refers to blob {digest}, which the bundle does not hold",
                        image.name, p.platform
                    )));
                };
                if m.kind != kind {
                    return Err(bad(format!(
                        "{} ({}) uses {} as a {kind:?}, but the index says it is a {:?}",
                        image.name, p.platform, m.name, m.kind
                    )));
                }
            }
            if !self
                .index
                .member_by_digest(&image.index)
                .is_some_and(|m| m.kind == MemberKind::ImageIndex)
            {
                return Err(bad(format!(
                    "{} refers to image index {}, which the bundle does not hold",
                    image.name, image.index
                )));
            }
        }
        Ok(())
    }

    /// A delta (2.0) is marked as one, and what it records points where it should:
    /// patches at `layer-patch` members, bases that exist, windows within the format's.
    fn check_delta(&self) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::BadIndex {
            path: self.path.clone(),
            detail,
        };
        let marked = self
            .index
            .requires
            .iter()
            .any(|f| f == crate::delta::FEATURE_DELTA);
        let Some(delta) = &self.index.delta else {
            if marked {
                return Err(bad("it requires `delta` but records none".into()));
            }
            if let Some(m) = self
                .index
                .members
                .iter()
                .find(|m| m.kind == MemberKind::LayerPatch)
            {
                return Err(bad(format!(
                    "{} is a layer patch in a bundle that is not a delta",
                    m.name
                )));
            }
            return Ok(());
        };
        if !marked || self.index.format_version().map(|v| v.0) != Some(FORMAT_MAJOR_FEATURES) {
            return Err(bad(
                "it records a delta but is not marked as one (format 2.x, requires `delta`)".into(),
            ));
        }
        let bases = delta.bases.len();
        for r in &delta.required {
            if r.base >= bases {
                return Err(bad(format!("required layer {} names no base", r.diff_id)));
            }
        }
        for p in &delta.patches {
            if p.reference.base >= bases {
                return Err(bad(format!("patch for layer {} names no base", p.diff_id)));
            }
            if p.window_log > crate::limits::MAX_WINDOW_LOG {
                return Err(bad(format!(
                    "patch for layer {} has a 2^{} window, over the format's 2^{}",
                    p.diff_id,
                    p.window_log,
                    crate::limits::MAX_WINDOW_LOG
                )));
            }
            if !self
                .index
                .member_by_digest(&p.patch)
                .is_some_and(|m| m.kind == MemberKind::LayerPatch)
            {
                return Err(bad(format!(
                    "patch {} for layer {} is not a layer-patch member",
                    p.patch, p.diff_id
                )));
            }
        }
        Ok(())
    }

    /// Loaders and the installer (1.1) lie after every member, in order, named and
    /// bounded like members.
    fn check_loaders_layout(
        &self,
        loaders: &Loaders,
        mut next_free: u64,
    ) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::BadIndex {
            path: self.path.clone(),
            detail,
        };
        let tails = loaders
            .binaries
            .iter()
            .map(|b| {
                let name = crate::loaders::member_name(&b.target);
                (&b.member, name, MAX_LOADER_BYTES)
            })
            .chain(std::iter::once((
                &loaders.installer,
                INSTALLER_MEMBER.to_string(),
                MAX_INSTALLER_BYTES,
            )));
        for (t, expected_name, cap) in tails {
            if t.name != expected_name {
                return Err(bad(format!(
                    "loader member {} should be named {expected_name}",
                    t.name
                )));
            }
            if t.size > cap {
                return Err(bad(format!(
                    "{} claims {} bytes, over the {cap}-byte limit (SPEC §3.4)",
                    t.name, t.size
                )));
            }
            if t.offset < next_free + BLOCK || t.offset % BLOCK != 0 {
                return Err(bad(format!(
                    "{} at offset {} overlaps another member or is misaligned",
                    t.name, t.offset
                )));
            }
            let end = t.offset + t.size;
            if end > self.file_len {
                return Err(FormatError::Truncated {
                    path: self.path.clone(),
                    detail: format!(
                        "{} ends at byte {end} but the file has {} bytes",
                        t.name, self.file_len
                    ),
                });
            }
            next_free = end + ustar::padding(t.size);
        }
        for b in &loaders.binaries {
            if b.binary_size > MAX_LOADER_BYTES {
                return Err(bad(format!(
                    "{} claims a {}-byte binary",
                    b.member.name, b.binary_size
                )));
            }
        }
        Ok(())
    }

    /// Checks the loaders and the installer: each member's header and digest, and each
    /// binary as it unpacks (digest, size).
    fn verify_loaders(
        &self,
        buf: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<usize, FormatError> {
        let Some(loaders) = &self.index.loaders else {
            return Ok(0);
        };
        for b in &loaders.binaries {
            let m = &b.member;
            self.check_header(&m.name, m.offset, m.size)?;
            let mut stored = HashingReader::new(self.range_reader(m.offset, m.size));
            let mut binary = HashingReader::new(
                flate2::read::GzDecoder::new(&mut stored).take(MAX_LOADER_BYTES + 1),
            );
            loop {
                match binary.read(buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.bad_member(&m.name, format!("gzip: {e}"))),
                }
            }
            let (binary_digest, binary_size) = binary.finish();
            io::copy(&mut stored, &mut io::sink()).map_err(|error| FormatError::Io {
                path: self.path.clone(),
                error,
            })?;
            let (digest, size) = stored.finish();
            if size != m.size || digest != m.digest {
                return Err(FormatError::DigestMismatch {
                    path: self.path.clone(),
                    member: m.name.clone(),
                    expected: m.digest.clone(),
                    actual: digest,
                });
            }
            if binary_size != b.binary_size || binary_digest != b.binary_digest {
                return Err(self.bad_member(
                    &m.name,
                    format!(
                        "unpacks to {binary_size} bytes with digest {binary_digest}, the index says {} bytes, {}",
                        b.binary_size, b.binary_digest
                    ),
                ));
            }
            progress.advance(m.size);
        }
        let m = &loaders.installer;
        self.check_header(&m.name, m.offset, m.size)?;
        let bytes = self.read_exact_at(&m.name, m.offset, m.size)?;
        let actual = Digest::of(&bytes);
        if actual != m.digest {
            return Err(FormatError::DigestMismatch {
                path: self.path.clone(),
                member: m.name.clone(),
                expected: m.digest.clone(),
                actual,
            });
        }
        Ok(loaders.binaries.len() + 1)
    }

    fn corrupt_layer(&self, m: &Member, detail: String) -> FormatError {
        FormatError::CorruptLayer {
            path: self.path.clone(),
            member: m.name.clone(),
            detail,
        }
    }

    fn layer_error(&self, m: &Member, e: io::Error) -> FormatError {
        match LayerFault::in_io(&e) {
            Some(LayerFault::Truncated { .. }) => FormatError::Truncated {
                path: self.path.clone(),
                detail: format!("member {} is cut short", m.name),
            },
            Some(LayerFault::Corrupt { detail, .. }) => self.corrupt_layer(m, detail.clone()),
            None => FormatError::Io {
                path: self.path.clone(),
                error: e,
            },
        }
    }

    fn bad_member(&self, member: &str, detail: String) -> FormatError {
        FormatError::BadMember {
            path: self.path.clone(),
            member: member.to_string(),
            detail,
        }
    }

    fn header_at(&self, offset: u64) -> Result<ustar::ParsedHeader, String> {
        let mut block = [0u8; BLOCK as usize];
        self.backing
            .read_exact_at(&mut block, offset)
            .map_err(|e| e.to_string())?;
        self.bytes_read.add(BLOCK);
        ustar::parse(&block).map_err(|e| e.to_string())
    }

    fn read_exact_at(&self, member: &str, offset: u64, size: u64) -> Result<Vec<u8>, FormatError> {
        let truncated = || FormatError::Truncated {
            path: self.path.clone(),
            detail: format!("member {member} ends past the end of the file"),
        };
        if offset.saturating_add(size) > self.file_len {
            return Err(truncated());
        }
        let mut buf = vec![0u8; size as usize];
        self.backing
            .read_exact_at(&mut buf, offset)
            .map_err(|error| {
                if error.kind() == io::ErrorKind::UnexpectedEof {
                    truncated()
                } else {
                    FormatError::Io {
                        path: self.path.clone(),
                        error,
                    }
                }
            })?;
        self.bytes_read.add(size);
        Ok(buf)
    }

    /// Whether members can be read in any order and several at once (a file or a
    /// volume set; not a stream).
    pub fn random_access(&self) -> bool {
        !matches!(self.backing, Backing::Stream(_))
    }

    /// Bytes returned by reads of the bundle file so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    /// A layer member's decompressed bytes, every check applied as they are read
    /// (digest, diff_id, declared size).
    pub fn layer_reader<'a>(
        &'a self,
        m: &'a Member,
        progress: &'a dyn Progress,
    ) -> Result<VerifiedLayer<'a, MemberReader<'a>>, LayerFault> {
        let (Some(diff_id), Some(size)) = (&m.diff_id, m.uncompressed_size) else {
            return Err(LayerFault::Corrupt {
                member: m.name.clone(),
                detail: "the index gives this layer no diffId or uncompressedSize".into(),
            });
        };
        VerifiedLayer::new(self.member_reader(m), m, diff_id.clone(), size, progress)
    }

    /// Streams one member's data (not checked; wrap it to check its digest).
    pub fn member_reader(&self, member: &Member) -> MemberReader<'_> {
        self.range_reader(member.offset, member.size)
    }

    /// `size` bytes from `offset` (a loader, the installer).
    pub fn range_reader(&self, offset: u64, size: u64) -> MemberReader<'_> {
        MemberReader {
            bundle: self,
            pos: offset,
            end: offset + size,
            piece: None,
        }
    }

    /// Reads a small member fully and checks it against the index. Layers are never
    /// read this way (they stream through [`VerifiedLayer`]).
    pub fn read_member(&self, member: &Member) -> Result<Vec<u8>, FormatError> {
        if matches!(member.kind, MemberKind::Layer | MemberKind::LayerPatch)
            || member.size > max_member_bytes(member.kind)
        {
            return Err(self.bad_member(
                &member.name,
                format!("{} bytes is too much to hold in memory", member.size),
            ));
        }
        let bytes = self.read_exact_at(&member.name, member.offset, member.size)?;
        let actual = Digest::of(&bytes);
        if actual != member.digest {
            return Err(FormatError::DigestMismatch {
                path: self.path.clone(),
                member: member.name.clone(),
                expected: member.digest.clone(),
                actual,
            });
        }
        if member.kind == MemberKind::Config {
            self.check_config(member, &bytes)?;
        }
        Ok(bytes)
    }

    /// A config member must be an image config listing exactly the layers of every image
    /// that uses it (SPEC §3.3): a manifest in its slot verifies by digest but loads as
    /// nothing.
    fn check_config(&self, member: &Member, bytes: &[u8]) -> Result<(), FormatError> {
        let facts =
            config_facts(bytes).map_err(|e| self.bad_member(&member.name, e.to_string()))?;
        for image in &self.index.images {
            for p in image.platforms.iter().filter(|p| p.config == member.digest) {
                if self.index.diff_ids_of(p).as_ref() != Some(&facts.diff_ids) {
                    return Err(self.bad_member(
                        &member.name,
                        format!(
                            "the config of {} ({}) lists {} layers other than the {} its manifest has",
                            image.name,
                            p.platform,
                            facts.diff_ids.len(),
                            p.layers.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks every member: its tar header (name, size, checksum) and its bytes'
    /// digest. Stops at the first bad one and names it.
    pub fn verify(&self, progress: &dyn Progress) -> Result<VerifyReport, FormatError> {
        let loader_bytes: u64 = self
            .index
            .loaders
            .iter()
            .flat_map(|l| &l.binaries)
            .map(|b| b.member.size)
            .sum();
        let total: u64 = self.index.members.iter().map(|m| m.size).sum::<u64>() + loader_bytes;
        progress.start("verifying", Some(total));
        let mut buf = vec![0u8; 1 << 20];
        for m in &self.index.members {
            self.verify_member(m, &mut buf, progress)?;
        }
        let loaders = self.verify_loaders(&mut buf, progress)?;
        progress.finish();
        Ok(VerifyReport {
            members: self.index.members.len() + loaders,
            bytes: total,
        })
    }

    /// The tar header before a member: checksum, regular file, the index's name and size.
    fn check_header(&self, name: &str, offset: u64, size: u64) -> Result<(), FormatError> {
        if let Backing::Volumes(set) = &self.backing {
            return set
                .check_headers(offset, size)
                .map_err(|detail| self.bad_member(name, detail));
        }
        let header = self
            .header_at(offset - BLOCK)
            .map_err(|e| self.bad_member(name, format!("tar header: {e}")))?;
        if header.name != name || header.size != size {
            return Err(self.bad_member(
                name,
                format!(
                    "tar header says {:?} of {} bytes, the index says {size} bytes",
                    header.name, header.size
                ),
            ));
        }
        Ok(())
    }

    /// Checks one member's header and digest.
    pub fn verify_member(
        &self,
        m: &Member,
        buf: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<(), FormatError> {
        self.check_header(&m.name, m.offset, m.size)?;
        if m.kind == MemberKind::Layer {
            // Layers: compressed digest, diff_id and size in one pass.
            let mut layer = self
                .layer_reader(m, &Silent)
                .map_err(|fault| self.corrupt_layer(m, fault.to_string()))?;
            loop {
                match layer.read(buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.layer_error(m, e)),
                }
            }
            progress.advance(m.size);
            return Ok(());
        }
        if m.kind == MemberKind::Config {
            self.read_member(m)?;
            progress.advance(m.size);
            return Ok(());
        }
        let mut reader = HashingReader::new(self.member_reader(m));
        loop {
            match reader.read(buf) {
                Ok(0) => break,
                Ok(n) => progress.advance(n as u64),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(FormatError::Io {
                        path: self.path.clone(),
                        error,
                    })
                }
            }
        }
        let (actual, n) = reader.finish();
        if n != m.size {
            return Err(FormatError::Truncated {
                path: self.path.clone(),
                detail: format!("member {} has {n} of its {} bytes", m.name, m.size),
            });
        }
        if actual != m.digest {
            return Err(FormatError::DigestMismatch {
                path: self.path.clone(),
                member: m.name.clone(),
                expected: m.digest.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// A byte counter shared by concurrent member readers. A mutex rather than an
/// `AtomicU64`: armv5te (Raspberry Pi Zero/1 under Debian armel) has no 64-bit atomics,
/// and a count is taken once per read of up to a megabyte.
#[derive(Default)]
struct ByteCount(Mutex<u64>);

impl ByteCount {
    fn add(&self, n: u64) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *c += n;
    }

    fn get(&self) -> u64 {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Positional reads of one member (no shared cursor: several may run at once).
pub struct MemberReader<'a> {
    bundle: &'a BundleReader,
    pos: u64,
    end: u64,
    /// Volumes: the piece being read from its start (its offset, end, hash so far).
    piece: Option<(u64, u64, crate::digest::Sha256)>,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.bundle.backing.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "bundle truncated inside a member",
            ));
        }
        if let Backing::Volumes(set) = &self.bundle.backing {
            self.check_piece(set, &buf[..n])?;
        }
        self.pos += n as u64;
        self.bundle.bytes_read.add(n as u64);
        Ok(n)
    }
}

impl MemberReader<'_> {
    /// Volumes: a piece read from its start is checked against its digest when its last
    /// byte arrives, so a corrupt volume is named, not just the member.
    fn check_piece(&mut self, set: &VolumeSet, bytes: &[u8]) -> io::Result<()> {
        if self.piece.as_ref().is_none_or(|p| p.1 <= self.pos) {
            self.piece = set
                .piece_at(self.pos)
                .filter(|(start, _)| *start == self.pos)
                .map(|(start, size)| (start, start + size, crate::digest::Sha256::new()));
        }
        let Some((start, end, hasher)) = &mut self.piece else {
            return Ok(());
        };
        hasher.update(bytes);
        if self.pos + bytes.len() as u64 == *end {
            let start = *start;
            let digest = Digest::finish(std::mem::take(hasher));
            self.piece = None;
            if let Err((member, detail)) = set.check_piece(start, &digest) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    LayerFault::Corrupt { member, detail },
                ));
            }
        }
        Ok(())
    }
}

/// Where a bundle's bytes come from: a file (positional reads), a stream read strictly
/// forward, or the volumes it was cut into.
enum Backing {
    File(File),
    Stream(Mutex<StreamState>),
    Volumes(VolumeSet),
}

struct StreamState {
    stream: Box<dyn Read + Send>,
    pos: u64,
}

impl Backing {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Backing::File(f) => f.read_at(buf, offset),
            Backing::Volumes(set) => set.read_at(buf, offset),
            Backing::Stream(state) => {
                let mut s = state
                    .lock()
                    .map_err(|_| io::Error::other("bundle stream lock poisoned"))?;
                if offset < s.pos {
                    return Err(io::Error::other(
                        "a streamed bundle can only be read in file order",
                    ));
                }
                let gap = offset - s.pos;
                let skipped = io::copy(&mut (&mut s.stream).take(gap), &mut io::sink())?;
                s.pos += skipped;
                if skipped < gap {
                    return Ok(0);
                }
                let n = s.stream.read(buf)?;
                s.pos += n as u64;
                Ok(n)
            }
        }
    }

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "bundle truncated",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
