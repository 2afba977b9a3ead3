//! Volumes (format 2.1, feature `volumes`, SPEC §13): one bundle cut into plain tars of
//! at most a given size, each carrying the same signed index, read in place.
//!
//! The single-file bundle stays the logical file: the volume index is its index plus a
//! `volumes` table saying which piece of which member lies where. A reader maps the
//! logical offsets the index records onto the pieces, so every command reads volumes as
//! it reads one file; `join` writes that one file again, byte for byte.

use crate::digest::Digest;
use crate::error::FormatError;
use crate::index::*;
use crate::limits::MAX_INDEX_BYTES;
use crate::progress::Progress;
use crate::ustar::{self, member_span, padding, BLOCK};
use crate::writer::IndexSigner;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const FEATURE_VOLUMES: &str = "volumes";
/// Shared parts (SPEC §14): a piece may stand in several members.
pub const FEATURE_PARTS: &str = "parts";
/// The minor of format 2 that shared parts came with.
pub const PARTS_MINOR: u32 = 2;
/// `--volume-size fat32`: the largest file FAT32 holds (4 GiB − 1 byte).
pub const FAT32_MAX_FILE: u64 = (4 << 30) - 1;
/// The group of members every platform may need (SPEC §13).
pub const SHARED_GROUP: &str = "shared";
/// The minor of format 2 that volumes came with.
pub const VOLUMES_MINOR: u32 = 1;
/// Every volume ends like a tar: two zero blocks.
const END: u64 = 2 * BLOCK;
/// A member is not cut into a piece smaller than this (what is left of it may be).
const MIN_PIECE: u64 = 4096;

/// The `volumes` table of a volume index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeTable {
    /// The size each volume was allowed (`--volume-size`); absent for a bundle with
    /// shared parts written as one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<u64>,
    /// What `join` writes: the single-file bundle.
    pub joined: Joined,
    pub files: Vec<VolumeFile>,
}

/// The single-file bundle the volumes were cut from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Size and digest of its index member (padded, as stored).
    pub index_size: u64,
    pub index_digest: Digest,
    /// Its signature member (minisign text), if it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Its length in bytes.
    pub size: u64,
    /// The mtime of every tar header in it.
    pub mtime: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFile {
    /// `NAME.001`, …: the file's name (siblings are found by it).
    pub name: String,
    pub size: u64,
    /// `shared`, or the one platform (`linux/arm64/v8`) every member here is for.
    pub group: String,
    pub pieces: Vec<Piece>,
}

/// A member of the single file, whole or a piece of it, as a tar member of a volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Piece {
    /// Its tar member name in the volume: the member's, or `NAME.part-K` for a piece.
    pub name: String,
    /// The member of the single file it is (part of).
    pub member: String,
    /// Where in that member's data it starts.
    pub offset: u64,
    pub size: u64,
    /// Where its data starts in the volume.
    pub at: u64,
    /// sha256 of its bytes.
    pub digest: Digest,
    /// Shared parts (SPEC §14): the same bytes also stand here in other members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
}

/// Where else a shared piece's bytes stand in the single file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// The member of the single file they also belong to.
    pub member: String,
    /// Where in that member's data they stand.
    pub offset: u64,
}

/// A byte range of one member that is the same bytes as a range of another, found by
/// the writer (shared parts, SPEC §14): stored once, in `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRange {
    pub source: String,
    pub source_offset: u64,
    pub size: u64,
    pub user: String,
    pub user_offset: u64,
}

/// A member of the single file as volumes see it: members, loaders and the installer.
#[derive(Debug, Clone)]
struct Stored {
    name: String,
    offset: u64,
    size: u64,
    digest: Digest,
    group: String,
    /// Loaders and the installer: cut only when no volume can hold them whole, so a
    /// host with nothing but busybox can `tar -xf` one out of its volume.
    keep_whole: bool,
}

/// Every member of the single file after its index and signature, in file order.
fn stored_members(index: &BundleIndex) -> Vec<Stored> {
    let mut out: Vec<Stored> = index
        .members
        .iter()
        .map(|m| Stored {
            name: m.name.clone(),
            offset: m.offset,
            size: m.size,
            digest: m.digest.clone(),
            group: group_of(index, m),
            keep_whole: false,
        })
        .collect();
    if let Some(l) = &index.loaders {
        let tails = l
            .binaries
            .iter()
            .map(|b| &b.member)
            .chain(std::iter::once(&l.installer));
        out.extend(tails.map(|t| Stored {
            name: t.name.clone(),
            offset: t.offset,
            size: t.size,
            digest: t.digest.clone(),
            group: SHARED_GROUP.to_string(),
            keep_whole: true,
        }));
    }
    out.sort_by_key(|s| s.offset);
    out
}

/// A layer (or layer patch) only one platform uses goes with that platform; everything
/// else is shared.
fn group_of(index: &BundleIndex, m: &Member) -> String {
    if !matches!(m.kind, MemberKind::Layer | MemberKind::LayerPatch) {
        return SHARED_GROUP.to_string();
    }
    let holds = |layer: &Digest| match index.layer(layer) {
        Some(LayerStorage::Whole { member, .. }) | Some(LayerStorage::Patched { member, .. }) => {
            member.digest == m.digest
        }
        _ => false,
    };
    let mut users: Vec<String> = index
        .images
        .iter()
        .flat_map(|i| &i.platforms)
        .filter(|p| p.layers.iter().any(holds))
        .map(|p| p.platform.to_string())
        .collect();
    users.sort();
    users.dedup();
    match users.as_slice() {
        [one] => one.clone(),
        _ => SHARED_GROUP.to_string(),
    }
}

/// `NAME.001`…: three digits, more only past 999 volumes.
pub fn volume_name(base: &str, number: usize, count: usize) -> String {
    let width = count.to_string().len().max(3);
    format!("{base}.{number:0width$}")
}

/// A run of one member's bytes that volumes store as a unit: all of it, its own bytes
/// between shared ranges, or one shared range (stored once, standing in several members).
#[derive(Debug, Clone)]
struct Unit<'a> {
    member: &'a Stored,
    /// Where in the member it starts.
    start: u64,
    size: u64,
    group: &'a str,
    keep_whole: bool,
    shares: Vec<Share>,
}

/// The members cut into units at the shared ranges: a source keeps each shared range
/// as a unit of its own (in the shared group, standing also in its users); a user
/// stores only the bytes between them.
fn units<'a>(members: &'a [Stored], shares: &[SharedRange]) -> Result<Vec<Unit<'a>>, FormatError> {
    let internal = |detail: String| Err(FormatError::Internal(detail));
    let mut out = Vec::new();
    for m in members {
        // (start, size, shares): shares empty = a range stored elsewhere.
        let mut cuts: Vec<(u64, u64, Vec<Share>)> = Vec::new();
        for r in shares.iter().filter(|r| r.source == m.name) {
            let share = Share {
                member: r.user.clone(),
                offset: r.user_offset,
            };
            match cuts
                .iter_mut()
                .find(|c| c.0 == r.source_offset && c.1 == r.size)
            {
                Some(c) => c.2.push(share),
                None => cuts.push((r.source_offset, r.size, vec![share])),
            }
        }
        cuts.extend(
            shares
                .iter()
                .filter(|r| r.user == m.name)
                .map(|r| (r.user_offset, r.size, Vec::new())),
        );
        cuts.sort_by_key(|c| c.0);
        let mut at = 0u64;
        for (start, size, to) in cuts {
            if start < at || start.checked_add(size).is_none_or(|end| end > m.size) || size == 0 {
                return internal(format!("shared ranges of {} overlap or overrun it", m.name));
            }
            if start > at {
                out.push(Unit {
                    member: m,
                    start: at,
                    size: start - at,
                    group: &m.group,
                    keep_whole: m.keep_whole,
                    shares: Vec::new(),
                });
            }
            if !to.is_empty() {
                out.push(Unit {
                    member: m,
                    start,
                    size,
                    group: SHARED_GROUP,
                    keep_whole: false,
                    shares: to,
                });
            }
            at = start + size;
        }
        if at < m.size || m.size == 0 {
            out.push(Unit {
                member: m,
                start: at,
                size: m.size - at,
                group: &m.group,
                keep_whole: m.keep_whole,
                shares: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// Lays the units out in volumes of at most `cap` bytes whose front (index and
/// signature) takes `front` bytes; without a cap, in one file named `base`, in file
/// order. Digests are left as placeholders.
fn lay_out(
    units: &[Unit],
    base: &str,
    cap: Option<u64>,
    front: u64,
) -> Result<Vec<VolumeFile>, FormatError> {
    let Some(cap) = cap else {
        return Ok(vec![lay_out_one(units, base, front)]);
    };
    let least = front + BLOCK + MIN_PIECE + END;
    if cap < least {
        return Err(FormatError::VolumeTooSmall { cap, least });
    }
    let mut groups: Vec<&str> = Vec::new();
    for u in units {
        if !groups.contains(&u.group) {
            groups.push(u.group);
        }
    }
    let mut parts = PartNames::default();
    let mut files: Vec<VolumeFile> = Vec::new();
    for group in groups {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut used = front;
        let close = |pieces: &mut Vec<Piece>, used: u64, files: &mut Vec<VolumeFile>| {
            files.push(VolumeFile {
                name: String::new(),
                size: used + END,
                group: group.to_string(),
                pieces: std::mem::take(pieces),
            });
        };
        for u in units.iter().filter(|u| u.group == group) {
            let mut done = 0u64;
            loop {
                let rest = u.size - done;
                let left = cap - used - END;
                let take = if member_span(rest) <= left {
                    rest
                } else if u.keep_whole
                    && done == 0
                    && !pieces.is_empty()
                    && member_span(rest) <= cap - front - END
                {
                    // It fits a volume of its own: start one.
                    close(&mut pieces, used, &mut files);
                    used = front;
                    continue;
                } else {
                    // Whole blocks only: a piece but the last needs no padding.
                    let room = left.saturating_sub(BLOCK) / BLOCK * BLOCK;
                    if room < MIN_PIECE {
                        close(&mut pieces, used, &mut files);
                        used = front;
                        continue;
                    }
                    room
                };
                pieces.push(parts.piece(u, done, take, used + BLOCK));
                used += member_span(take);
                done += take;
                if done == u.size {
                    break;
                }
            }
        }
        if !pieces.is_empty() {
            close(&mut pieces, used, &mut files);
        }
    }
    let count = files.len();
    for (i, f) in files.iter_mut().enumerate() {
        f.name = volume_name(base, i + 1, count);
    }
    Ok(files)
}

/// Shared parts without volumes: one file, every unit a piece, in file order.
fn lay_out_one(units: &[Unit], base: &str, front: u64) -> VolumeFile {
    let mut parts = PartNames::default();
    let mut used = front;
    let mut pieces = Vec::with_capacity(units.len());
    for u in units {
        pieces.push(parts.piece(u, 0, u.size, used + BLOCK));
        used += member_span(u.size);
    }
    VolumeFile {
        name: base.to_string(),
        size: used + END,
        group: SHARED_GROUP.to_string(),
        pieces,
    }
}

/// Names pieces: a whole member by its own name, a part of one `NAME.part-K`, K
/// counting within the member.
#[derive(Default)]
struct PartNames(HashMap<String, usize>);

impl PartNames {
    /// The piece of `take` bytes `done` bytes into `unit`, its data at `at`.
    fn piece(&mut self, u: &Unit, done: u64, take: u64, at: u64) -> Piece {
        let m = u.member;
        let offset = u.start + done;
        let whole = offset == 0 && take == m.size;
        let name = if whole {
            m.name.clone()
        } else {
            let k = self.0.entry(m.name.clone()).or_default();
            *k += 1;
            format!("{}.part-{k}", m.name)
        };
        let shares = u
            .shares
            .iter()
            .map(|s| Share {
                member: s.member.clone(),
                offset: s.offset + done,
            })
            .collect();
        Piece {
            name,
            member: m.name.clone(),
            offset,
            size: take,
            at,
            digest: Digest::of(b""),
            shares,
        }
    }
}

/// The volume index of a single-file index.
fn volume_index(single: &BundleIndex, table: VolumeTable) -> BundleIndex {
    let mut index = single.clone();
    let parts = table.has_shares();
    let minor = if parts { PARTS_MINOR } else { VOLUMES_MINOR };
    index.format = format!("{FORMAT_PREFIX}{FORMAT_MAJOR_FEATURES}.{minor}");
    index.requires.push(FEATURE_VOLUMES.to_string());
    if parts {
        index.requires.push(FEATURE_PARTS.to_string());
    }
    index.volumes = Some(table);
    index
}

impl VolumeTable {
    /// Whether a piece stands in more than one member (shared parts, SPEC §14).
    pub fn has_shares(&self) -> bool {
        self.files
            .iter()
            .flat_map(|f| &f.pieces)
            .any(|p| !p.shares.is_empty())
    }

    /// Bytes the single file holds more than once that these files store once.
    pub fn shared_bytes(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| &f.pieces)
            .map(|p| p.size * p.shares.len() as u64)
            .sum()
    }
}

/// The single file's index bytes, as it stored them, from a volume index.
pub fn joined_index_bytes(volume_index: &BundleIndex) -> Option<Vec<u8>> {
    let table = volume_index.volumes.as_ref()?;
    let mut index = volume_index.clone();
    index.volumes = None;
    index.format = table.joined.format.clone();
    index.requires = table.joined.requires.clone();
    crate::writer::padded_index(crate::writer::render(&index), table.joined.index_size)
}

/// The plan for cutting a single-file bundle into volumes, known before any is written.
pub struct VolumeCut {
    single: BundleIndex,
    table: VolumeTable,
    index_len: u64,
    signature_len: u64,
    trusted_comment: String,
    members: HashMap<String, Stored>,
}

impl VolumeCut {
    /// Plans volumes of at most `cap` bytes for the bundle in `single` (`label` names it
    /// in messages), named `BASE.001`…; without a cap, one file named `BASE` (shared
    /// parts). Each of `shares` is stored once, in its source.
    pub fn plan(
        single: &File,
        label: &Path,
        cap: Option<u64>,
        base: &str,
        signer: Option<&dyn IndexSigner>,
        shares: &[SharedRange],
    ) -> Result<VolumeCut, FormatError> {
        let io_err = |error| FormatError::Io {
            path: label.to_path_buf(),
            error,
        };
        let reader = crate::BundleReader::open_file(
            single.try_clone().map_err(io_err)?,
            label,
            &crate::AdmitAll,
        )?;
        let mut first = [0u8; BLOCK as usize];
        single.read_exact_at(&mut first, 0).map_err(io_err)?;
        let mtime = tar::Header::from_byte_slice(&first)
            .mtime()
            .map_err(io_err)?;
        let index = reader.index.clone();
        let joined = Joined {
            format: index.format.clone(),
            requires: index.requires.clone(),
            index_size: reader.index_bytes.len() as u64,
            index_digest: Digest::of(&reader.index_bytes),
            signature: reader
                .signature
                .as_ref()
                .map(|s| String::from_utf8_lossy(s).into_owned()),
            size: reader.file_len,
            mtime,
        };
        let trusted_comment = crate::writer::trusted_comment(&index.name, mtime, &index.created);
        let members = stored_members(&index);
        let units = units(&members, shares)?;
        // A signature's length depends on its trusted comment only (as the writer's).
        let signature_len = match signer {
            Some(s) => s
                .sign(&reader.index_bytes, &trusted_comment)
                .map_err(|e| FormatError::Signing(e.to_string()))?
                .len() as u64,
            None => 0,
        };
        let sig_span = if signature_len > 0 {
            member_span(signature_len)
        } else {
            0
        };
        let mut front = BLOCK;
        for _ in 0..32 {
            let files = lay_out(&units, base, cap, front)?;
            let table = VolumeTable {
                cap,
                joined: joined.clone(),
                files,
            };
            let rendered = crate::writer::render(&volume_index(&index, table.clone()));
            let index_len = rendered.len() as u64 + 1;
            if index_len > MAX_INDEX_BYTES {
                return Err(FormatError::TooLarge {
                    what: "the volume index".into(),
                    size: index_len,
                    limit: MAX_INDEX_BYTES,
                });
            }
            let needed = member_span(index_len) + sig_span;
            if needed <= front {
                // The index fills what was planned for it (padded, SPEC §3.2).
                let index_len = front - sig_span - BLOCK;
                return Ok(VolumeCut {
                    single: index,
                    table,
                    index_len,
                    signature_len,
                    trusted_comment,
                    members: members
                        .iter()
                        .map(|m| (m.name.clone(), m.clone()))
                        .collect(),
                });
            }
            front = needed;
        }
        Err(FormatError::Internal(
            "the volume layout did not settle".into(),
        ))
    }

    /// The volumes' file names, in order.
    pub fn names(&self) -> Vec<String> {
        self.table.files.iter().map(|f| f.name.clone()).collect()
    }

    /// Writes volume `i` into `outputs[i]` from the single file, then the signed volume
    /// index at the front of each. `label(i)` names volume `i` in messages.
    pub fn write(
        mut self,
        single: &File,
        label: &Path,
        outputs: &[&File],
        signer: Option<&dyn IndexSigner>,
        progress: &dyn Progress,
    ) -> Result<VolumeTable, FormatError> {
        let total: u64 = self.table.files.iter().map(|f| f.size).sum();
        progress.start("writing volumes", Some(total));
        let front = self.front_len();
        let mtime = self.table.joined.mtime;
        let mut buf = vec![0u8; 1 << 20];
        for (file, out) in self.table.files.iter_mut().zip(outputs) {
            let werr = |error| FormatError::Write {
                path: label.with_file_name(&file.name),
                error,
            };
            let mut o: &File = out;
            o.set_len(0).map_err(werr)?;
            o.seek(SeekFrom::Start(front)).map_err(werr)?;
            let mut w = BufWriter::with_capacity(1 << 20, o);
            for piece in &mut file.pieces {
                let Some(m) = self.members.get(&piece.member) else {
                    return Err(FormatError::Internal(format!("no member {}", piece.member)));
                };
                w.write_all(&ustar::header(&piece.name, piece.size, mtime).map_err(werr)?)
                    .map_err(werr)?;
                let mut hasher = crate::digest::Sha256::new();
                let mut done = 0u64;
                while done < piece.size {
                    let n = (piece.size - done).min(buf.len() as u64) as usize;
                    single
                        .read_exact_at(&mut buf[..n], m.offset + piece.offset + done)
                        .map_err(|error| FormatError::Io {
                            path: label.to_path_buf(),
                            error,
                        })?;
                    hasher.update(&buf[..n]);
                    w.write_all(&buf[..n]).map_err(werr)?;
                    done += n as u64;
                    progress.advance(n as u64);
                }
                piece.digest = Digest::finish(hasher);
                if piece.offset == 0 && piece.size == m.size && piece.digest != m.digest {
                    return Err(FormatError::DigestMismatch {
                        path: label.to_path_buf(),
                        member: m.name.clone(),
                        expected: m.digest.clone(),
                        actual: piece.digest.clone(),
                    });
                }
                w.write_all(&vec![0u8; padding(piece.size) as usize])
                    .map_err(werr)?;
            }
            w.write_all(&[0u8; END as usize]).map_err(werr)?;
            w.flush().map_err(werr)?;
        }
        let index = volume_index(&self.single, self.table.clone());
        let bytes = crate::writer::padded_index(crate::writer::render(&index), self.index_len)
            .ok_or_else(|| {
                FormatError::Internal(format!(
                    "the volume index grew past its reserved {} bytes",
                    self.index_len
                ))
            })?;
        let mut front_bytes = Vec::with_capacity(front as usize);
        let werr = |error| FormatError::Write {
            path: label.to_path_buf(),
            error,
        };
        front_bytes
            .extend_from_slice(&ustar::header(INDEX_MEMBER, self.index_len, mtime).map_err(werr)?);
        front_bytes.extend_from_slice(&bytes);
        front_bytes.resize(member_span(self.index_len) as usize, 0);
        if let Some(signer) = signer {
            let signature = signer
                .sign(&bytes, &self.trusted_comment)
                .map_err(|e| FormatError::Signing(e.to_string()))?;
            if signature.len() as u64 != self.signature_len {
                return Err(FormatError::Internal(format!(
                    "the volume signature is {} bytes, {} were reserved",
                    signature.len(),
                    self.signature_len
                )));
            }
            front_bytes.extend_from_slice(
                &ustar::header(SIGNATURE_MEMBER, self.signature_len, mtime).map_err(werr)?,
            );
            front_bytes.extend_from_slice(signature.as_bytes());
            front_bytes.resize(front as usize, 0);
        }
        for (file, out) in self.table.files.iter().zip(outputs) {
            out.write_all_at(&front_bytes, 0)
                .map_err(|error| FormatError::Write {
                    path: label.with_file_name(&file.name),
                    error,
                })?;
        }
        progress.finish();
        Ok(self.table)
    }

    fn front_len(&self) -> u64 {
        member_span(self.index_len)
            + if self.signature_len > 0 {
                member_span(self.signature_len)
            } else {
                0
            }
    }
}

/// What a reader knows about one volume of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "detail")]
pub enum VolumeState {
    Present,
    Missing,
    /// There, but not this bundle's volume as the index describes it.
    Damaged(String),
}

impl std::fmt::Display for VolumeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeState::Present => f.write_str("present"),
            VolumeState::Missing => f.write_str("missing"),
            VolumeState::Damaged(d) => f.write_str(d),
        }
    }
}

/// One volume as found on disk.
pub struct Slot {
    pub name: String,
    pub path: PathBuf,
    pub state: VolumeState,
    file: Option<File>,
}

/// A piece of the single file: where its bytes are.
#[derive(Debug, Clone)]
struct Extent {
    /// Offset in the single file.
    logical: u64,
    size: u64,
    volume: usize,
    /// Offset of its data in the volume.
    at: u64,
    digest: Digest,
    name: String,
    member: String,
}

/// The volumes of one bundle, mapped onto the single file they were cut from.
pub struct VolumeSet {
    pub slots: Vec<Slot>,
    extents: Vec<Extent>,
}

impl VolumeSet {
    /// Checks the table against the index it came in (before any volume is read by it),
    /// then finds every volume: `given` (already open) and its siblings, beside it or
    /// among `extra`. `front` is the given volume's index and signature region.
    pub(crate) fn open(
        index: &BundleIndex,
        given: (&Path, File),
        extra: &[PathBuf],
        front: &[u8],
    ) -> Result<VolumeSet, FormatError> {
        let (path, file) = given;
        let bad = |detail: String| FormatError::BadIndex {
            path: path.to_path_buf(),
            detail,
        };
        let Some(table) = &index.volumes else {
            return Err(bad("no volume table".into()));
        };
        let front_len = front.len() as u64;
        let parts = index.requires.iter().any(|f| f == FEATURE_PARTS);
        let members: HashMap<String, Stored> = stored_members(index)
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        if table.files.is_empty() {
            return Err(bad("the volume table lists no volumes".into()));
        }
        let mut extents = Vec::new();
        let mut covered: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for (v, f) in table.files.iter().enumerate() {
            if f.name.is_empty()
                || f.name.contains('/')
                || table.files[..v].iter().any(|g| g.name == f.name)
            {
                return Err(bad(format!(
                    "volume name {:?} is not a unique file name",
                    f.name
                )));
            }
            let mut next = front_len;
            for p in &f.pieces {
                let Some(m) = members.get(p.member.as_str()) else {
                    return Err(bad(format!(
                        "{} holds a piece of {}, which is no member",
                        f.name, p.member
                    )));
                };
                let ends = p.offset.checked_add(p.size).filter(|e| *e <= m.size);
                if p.at % BLOCK != 0 || p.at < next + BLOCK || ends.is_none() || p.name.len() >= 100
                {
                    return Err(bad(format!("{}: piece {} is misplaced", f.name, p.name)));
                }
                if p.offset == 0 && p.size == m.size && p.digest != m.digest {
                    return Err(bad(format!(
                        "{}: piece {} is the whole member but not its digest",
                        f.name, p.name
                    )));
                }
                next = p.at.saturating_add(p.size).saturating_add(padding(p.size));
                if !p.shares.is_empty() && !parts {
                    return Err(bad(format!(
                        "{}: piece {} stands in several members, but the bundle does not require `{FEATURE_PARTS}`",
                        f.name, p.name
                    )));
                }
                let stands = std::iter::once((m, p.offset)).chain(
                    p.shares
                        .iter()
                        .filter_map(|s| members.get(s.member.as_str()).map(|u| (u, s.offset))),
                );
                if stands.clone().count() != p.shares.len() + 1 {
                    return Err(bad(format!(
                        "{}: piece {} is shared with a member that does not exist",
                        f.name, p.name
                    )));
                }
                for (m, offset) in stands {
                    let ends = offset.checked_add(p.size).filter(|e| *e <= m.size);
                    if ends.is_none() || (offset == 0 && p.size == m.size && p.digest != m.digest) {
                        return Err(bad(format!(
                            "{}: piece {} does not fit {} where it is said to stand",
                            f.name, p.name, m.name
                        )));
                    }
                    covered
                        .entry(m.name.clone())
                        .or_default()
                        .push((offset, p.size));
                    extents.push(Extent {
                        logical: m.offset + offset,
                        size: p.size,
                        volume: v,
                        at: p.at,
                        digest: p.digest.clone(),
                        name: p.name.clone(),
                        member: m.name.clone(),
                    });
                }
            }
            if next.saturating_add(END) != f.size {
                return Err(bad(format!(
                    "{}: its pieces do not end where the volume does",
                    f.name
                )));
            }
        }
        // Every member is there exactly once, in pieces that tile it.
        for (name, m) in &members {
            let mut parts = covered.remove(name.as_str()).unwrap_or_default();
            parts.sort();
            let mut at = 0;
            for (offset, size) in parts {
                if offset != at {
                    return Err(bad(format!("the pieces of {name} do not tile it")));
                }
                at += size;
            }
            if at != m.size || (m.size == 0 && !extents.iter().any(|e| e.logical == m.offset)) {
                return Err(bad(format!("the volumes do not hold all of {name}")));
            }
        }
        extents.sort_by_key(|e| (e.logical, e.size));

        let given_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // A set of one has no siblings to find by name: it may be renamed.
        let given_slot = table
            .files
            .iter()
            .position(|f| Some(&f.name) == given_name.as_ref() || table.files.len() == 1)
            .ok_or_else(|| FormatError::VolumeRenamed {
                path: path.to_path_buf(),
                first: table.files[0].name.clone(),
                last: table.files[table.files.len() - 1].name.clone(),
            })?;
        let beside = |name: &str| match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join(name),
            _ => PathBuf::from(name),
        };
        let mut given_file = Some(file);
        let slots = table
            .files
            .iter()
            .enumerate()
            .map(|(v, f)| {
                let found = extra
                    .iter()
                    .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == f.name))
                    .cloned()
                    .unwrap_or_else(|| beside(&f.name));
                let (path, file) = if v == given_slot {
                    (path.to_path_buf(), given_file.take().map(Ok))
                } else {
                    let opened = File::open(&found);
                    (found, Some(opened))
                };
                let (state, file) = match file {
                    Some(Ok(file)) => match check_volume(&file, f, front) {
                        Ok(()) => (VolumeState::Present, Some(file)),
                        Err(why) => (VolumeState::Damaged(why), None),
                    },
                    Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                        (VolumeState::Missing, None)
                    }
                    Some(Err(e)) => (VolumeState::Damaged(e.to_string()), None),
                    None => (VolumeState::Missing, None),
                };
                Slot {
                    name: f.name.clone(),
                    path,
                    state,
                    file,
                }
            })
            .collect();
        Ok(VolumeSet { slots, extents })
    }

    fn extent_at(&self, offset: u64) -> Option<usize> {
        let i = self
            .extents
            .partition_point(|e| e.logical + e.size <= offset);
        (i < self.extents.len() && self.extents[i].logical <= offset).then_some(i)
    }

    fn slot_file(&self, volume: usize) -> io::Result<&File> {
        let slot = &self.slots[volume];
        slot.file.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: {}", slot.path.display(), slot.state),
            )
        })
    }

    /// Reads single-file bytes at `offset`, up to the end of the piece holding them.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(i) = self.extent_at(offset) else {
            return Err(io::Error::other(format!(
                "byte {offset} of the bundle is in no volume"
            )));
        };
        let e = &self.extents[i];
        let want = (e.logical + e.size - offset).min(buf.len() as u64) as usize;
        self.slot_file(e.volume)?
            .read_at(&mut buf[..want], e.at + (offset - e.logical))
    }

    /// The tar headers of the pieces holding `size` bytes at `offset`: name and size.
    pub(crate) fn check_headers(&self, offset: u64, size: u64) -> Result<(), String> {
        for e in self.covering(offset, size) {
            let mut block = [0u8; BLOCK as usize];
            self.slot_file(e.volume)
                .and_then(|f| f.read_exact_at(&mut block, e.at - BLOCK))
                .map_err(|err| err.to_string())?;
            let h = ustar::parse(&block).map_err(|err| {
                format!(
                    "{}: tar header of {}: {err}",
                    self.slots[e.volume].name, e.name
                )
            })?;
            if h.name != e.name || h.size != e.size {
                return Err(format!(
                    "{}: tar header says {:?} of {} bytes, the index says {} of {} bytes",
                    self.slots[e.volume].name, h.name, h.size, e.name, e.size
                ));
            }
        }
        Ok(())
    }

    fn covering(&self, offset: u64, size: u64) -> impl Iterator<Item = &Extent> {
        let from = self
            .extents
            .partition_point(|e| e.logical + e.size <= offset);
        self.extents[from..]
            .iter()
            .take_while(move |e| e.logical < offset + size || (size == 0 && e.logical == offset))
    }

    /// The volumes holding `size` bytes at `offset`.
    pub(crate) fn volumes_of(&self, offset: u64, size: u64) -> impl Iterator<Item = usize> + '_ {
        self.covering(offset, size).map(|e| e.volume)
    }

    /// Checks a piece's digest once a reader has read all of it (`hasher` saw its
    /// bytes from its start): a corrupt volume is named at the piece.
    pub(crate) fn piece_at(&self, offset: u64) -> Option<(u64, u64)> {
        self.extent_at(offset)
            .map(|i| (self.extents[i].logical, self.extents[i].size))
    }

    /// Err: (the member, what is wrong).
    pub(crate) fn check_piece(
        &self,
        logical: u64,
        digest: &Digest,
    ) -> Result<(), (String, String)> {
        let Some(i) = self.extent_at(logical) else {
            return Ok(());
        };
        let e = &self.extents[i];
        if &e.digest == digest {
            return Ok(());
        }
        Err((
            e.member.clone(),
            format!(
                "{}: corrupt: its piece {} does not match its digest in the signed index",
                self.slots[e.volume].path.display(),
                e.name
            ),
        ))
    }

    pub(crate) fn empty() -> VolumeSet {
        VolumeSet {
            slots: Vec::new(),
            extents: Vec::new(),
        }
    }

    /// Where the pieces of volume `v` lie in the single file: (offset, size), in order.
    pub(crate) fn extents_of(&self, v: usize) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .extents
            .iter()
            .filter(|e| e.volume == v)
            .map(|e| (e.logical, e.size))
            .collect();
        out.sort();
        out
    }
}

/// A volume is this bundle's when it has the size the index gives it and the same
/// index and signature at its front.
fn check_volume(file: &File, expected: &VolumeFile, front: &[u8]) -> Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len != expected.size {
        return Err(format!(
            "{len} bytes, the index says {}: cut short, grown, or another file",
            expected.size
        ));
    }
    let mut theirs = vec![0u8; front.len()];
    file.read_exact_at(&mut theirs, 0)
        .map_err(|e| e.to_string())?;
    if theirs != front {
        return Err("its index or signature differs: a volume of another bundle or build".into());
    }
    Ok(())
}

/// Writes the single-file bundle the volumes were cut from into `out`.
pub(crate) fn join(
    reader: &crate::BundleReader,
    out: &File,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let werr = |error| FormatError::Write {
        path: reader.path.clone(),
        error,
    };
    let Some(table) = &reader.index.volumes else {
        return Err(FormatError::NotVolumes {
            path: reader.path.clone(),
        });
    };
    let joined = &table.joined;
    let index_bytes = joined_index_bytes(&reader.index)
        .filter(|b| Digest::of(b) == joined.index_digest)
        .ok_or_else(|| FormatError::BadIndex {
            path: reader.path.clone(),
            detail: "the joined index it describes does not match its digest".into(),
        })?;
    let members = stored_members(&reader.index);
    progress.start("joining", Some(members.iter().map(|m| m.size).sum()));
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut pos = 0u64;
    let put = |w: &mut BufWriter<&File>, bytes: &[u8], pos: &mut u64| {
        *pos += bytes.len() as u64;
        w.write_all(bytes)
    };
    let mtime = joined.mtime;
    put(
        &mut w,
        &ustar::header(INDEX_MEMBER, joined.index_size, mtime).map_err(werr)?,
        &mut pos,
    )
    .map_err(werr)?;
    put(&mut w, &index_bytes, &mut pos).map_err(werr)?;
    put(
        &mut w,
        &vec![0u8; padding(joined.index_size) as usize],
        &mut pos,
    )
    .map_err(werr)?;
    if let Some(sig) = &joined.signature {
        let sig = sig.as_bytes();
        put(
            &mut w,
            &ustar::header(SIGNATURE_MEMBER, sig.len() as u64, mtime).map_err(werr)?,
            &mut pos,
        )
        .map_err(werr)?;
        put(&mut w, sig, &mut pos).map_err(werr)?;
        put(
            &mut w,
            &vec![0u8; padding(sig.len() as u64) as usize],
            &mut pos,
        )
        .map_err(werr)?;
    }
    let mut buf = vec![0u8; 1 << 20];
    for m in &members {
        let header_at = m.offset - BLOCK;
        if header_at < pos {
            return Err(FormatError::BadIndex {
                path: reader.path.clone(),
                detail: format!("member {} overlaps the one before it", m.name),
            });
        }
        // The writer leaves no gaps; a hostile index's are written without holding them.
        let gap = header_at - pos;
        io::copy(&mut io::Read::take(io::repeat(0), gap), &mut w).map_err(werr)?;
        pos += gap;
        put(
            &mut w,
            &ustar::header(&m.name, m.size, mtime).map_err(werr)?,
            &mut pos,
        )
        .map_err(werr)?;
        let mut hashed = crate::digest::HashingReader::new(reader.range_reader(m.offset, m.size));
        loop {
            let n = io::Read::read(&mut hashed, &mut buf).map_err(|error| FormatError::Io {
                path: reader.path.clone(),
                error,
            })?;
            if n == 0 {
                break;
            }
            put(&mut w, &buf[..n], &mut pos).map_err(werr)?;
            progress.advance(n as u64);
        }
        let (digest, n) = hashed.finish();
        if n != m.size || digest != m.digest {
            return Err(FormatError::DigestMismatch {
                path: reader.path.clone(),
                member: m.name.clone(),
                expected: m.digest.clone(),
                actual: digest,
            });
        }
        put(&mut w, &vec![0u8; padding(m.size) as usize], &mut pos).map_err(werr)?;
    }
    if pos + END != joined.size {
        return Err(FormatError::BadIndex {
            path: reader.path.clone(),
            detail: "the joined size does not end its members with two zero blocks".into(),
        });
    }
    put(&mut w, &[0u8; END as usize], &mut pos).map_err(werr)?;
    w.flush().map_err(werr)?;
    progress.finish();
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, offset: u64, size: u64, group: &str) -> Stored {
        Stored {
            name: name.into(),
            offset,
            size,
            digest: Digest::of(name.as_bytes()),
            group: group.into(),
            keep_whole: false,
        }
    }

    #[test]
    fn a_layer_past_fat32_is_cut_into_pieces_that_fit_and_tile_it() {
        // A 9 GiB layer (it need not exist: layout is arithmetic) and two small members.
        let big = 9u64 << 30;
        let members = [
            member("blobs/sha256/big", 4096, big, "linux/amd64"),
            member("blobs/sha256/cfg", 4096 + big + 512, 700, SHARED_GROUP),
            member("index.json", 4096 + big + 2048, 300, SHARED_GROUP),
        ];
        let front = 64 * 1024;
        let units = units(&members, &[]).unwrap();
        let files = lay_out(&units, "app.archpack", Some(FAT32_MAX_FILE), front).unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(
            files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            [
                "app.archpack.001",
                "app.archpack.002",
                "app.archpack.003",
                "app.archpack.004"
            ]
        );
        let mut covered = 0;
        for f in &files[..3] {
            assert!(f.size <= FAT32_MAX_FILE, "{} is {}", f.name, f.size);
            assert_eq!(f.group, "linux/amd64");
            for p in &f.pieces {
                assert_eq!(p.offset, covered);
                assert!(p.name.starts_with("blobs/sha256/big.part-"));
                assert_eq!(p.at % BLOCK, 0);
                covered += p.size;
            }
        }
        assert_eq!(covered, big);
        // The shared group never shares a volume with a platform's layers.
        assert_eq!(files[3].group, SHARED_GROUP);
        assert_eq!(files[3].pieces.len(), 2);
        assert_eq!(files[3].pieces[0].name, "blobs/sha256/cfg");
        assert_eq!(
            files[3].size,
            front + member_span(700) + member_span(300) + END
        );
    }

    #[test]
    fn a_size_that_cannot_hold_the_index_is_refused_with_the_least() {
        let members = [member("blobs/sha256/a", 4096, 10, SHARED_GROUP)];
        let units = units(&members, &[]).unwrap();
        match lay_out(&units, "x", Some(8192), 8192) {
            Err(FormatError::VolumeTooSmall { cap: 8192, least }) => {
                assert_eq!(least, 8192 + BLOCK + MIN_PIECE + END)
            }
            other => panic!("{:?}", other.map(|f| f.len())),
        }
    }

    #[test]
    fn volume_names_widen_only_past_999() {
        assert_eq!(volume_name("a", 7, 12), "a.007");
        assert_eq!(volume_name("a", 7, 1200), "a.0007");
    }
}
