//! File access inside what a source lives in: an OCI layout directory, a plain tar
//! (random access by seeking over headers), or a compressed tarball (streamed).

use super::SourceError;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Metadata members (manifests, configs, indexes) are small; anything larger is refused
/// before it is read into memory.
pub const MAX_METADATA_MEMBER: u64 = 16 << 20;
/// Total metadata kept in memory from one compressed tarball's metadata pass.
const MAX_METADATA_TOTAL: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 << 10, reader);
    let compression = Compression::sniff(buffered.fill_buf()?);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(buffered)?;
            // Sources are the user's own files (`zstd --long=31` is theirs to use); a
            // 32-bit zstd decodes windows up to 2^30 only.
            d.window_log_max(if cfg!(target_pointer_width = "32") {
                30
            } else {
                31
            })?;
            Box::new(d)
        }
    })
}

/// Normalises a tar member name: strips `./`, rejects nothing (names are only map keys
/// here; nothing is ever written to disk under them).
fn normalize_name(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Resolves a link target relative to the member that holds it.
fn resolve_link(member: &str, target: &Path, hard: bool) -> String {
    if hard || target.is_absolute() {
        return normalize_name(target);
    }
    let base = Path::new(member).parent().unwrap_or(Path::new(""));
    normalize_name(&base.join(target))
}

/// A member's bytes and its size.
type SizedReader<'a> = (Box<dyn Read + 'a>, u64);

pub enum Container {
    Dir(PathBuf),
    SeekableTar {
        path: PathBuf,
        /// name → (data offset, size)
        members: HashMap<String, (u64, u64)>,
        links: HashMap<String, String>,
    },
    StreamedTar {
        path: PathBuf,
        metadata: HashMap<String, Vec<u8>>,
        links: HashMap<String, String>,
        /// name → size of every regular file seen in the metadata pass.
        sizes: HashMap<String, u64>,
    },
}

impl Container {
    pub fn open_dir(path: &Path) -> Result<Container, SourceError> {
        if !path.is_dir() {
            return Err(SourceError::NotFound(path.to_path_buf()));
        }
        Ok(Container::Dir(path.to_path_buf()))
    }

    /// Opens a tar file, plain or compressed; plain tars are indexed by seeking.
    pub fn open_tar(path: &Path) -> Result<Container, SourceError> {
        let mut file = open_file(path)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| SourceError::io(path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| SourceError::io(path, e))?;
        match Compression::sniff(&magic[..n]) {
            Compression::None => Self::index_plain_tar(path, file),
            _ => Self::scan_compressed_tar(path, file),
        }
    }

    fn index_plain_tar(path: &Path, file: File) -> Result<Container, SourceError> {
        let len = file.metadata().map_err(|e| SourceError::io(path, e))?.len();
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| SourceError::not_tar(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::not_tar(path, e))?;
            let name = normalize_name(&entry.path().map_err(|e| SourceError::not_tar(path, e))?);
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let (offset, size) = (entry.raw_file_position(), entry.size());
                if offset.saturating_add(size) > len {
                    return Err(SourceError::Truncated(path.to_path_buf()));
                }
                members.insert(name, (offset, size));
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    links.insert(
                        name.clone(),
                        resolve_link(&name, &target, kind.is_hard_link()),
                    );
                }
            }
        }
        if members.is_empty() {
            return Err(SourceError::NotTar {
                path: path.to_path_buf(),
                detail: "no files in it".into(),
            });
        }
        Ok(Container::SeekableTar {
            path: path.to_path_buf(),
            members,
            links,
        })
    }

    /// One pass over a compressed tarball keeping only small JSON members, so the
    /// layers can later stream in a second pass without a temporary copy.
    fn scan_compressed_tar(path: &Path, file: File) -> Result<Container, SourceError> {
        let reader = decompress(file).map_err(|e| SourceError::io(path, e))?;
        let mut archive = tar::Archive::new(reader);
        let mut metadata = HashMap::new();
        let mut links = HashMap::new();
        let mut sizes = HashMap::new();
        let mut kept = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| SourceError::not_tar(path, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| SourceError::not_tar(path, e))?;
            let name = normalize_name(&entry.path().map_err(|e| SourceError::not_tar(path, e))?);
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    links.insert(
                        name.clone(),
                        resolve_link(&name, &target, kind.is_hard_link()),
                    );
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            sizes.insert(name.clone(), entry.size());
            if entry.size() > MAX_METADATA_MEMBER {
                continue;
            }
            let mut first = [0u8; 1];
            let n =
                read_up_to(&mut entry, &mut first).map_err(|e| SourceError::corrupt(path, e))?;
            let is_json = n == 1 && (first[0] == b'{' || first[0] == b'[');
            if is_json || name == "oci-layout" {
                let mut bytes = first[..n].to_vec();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| SourceError::corrupt(path, e))?;
                kept += bytes.len() as u64;
                if kept > MAX_METADATA_TOTAL {
                    return Err(SourceError::Invalid {
                        what: path.display().to_string(),
                        detail: "more than 64 MiB of JSON metadata".into(),
                    });
                }
                metadata.insert(name, bytes);
            }
        }
        // Reaching the end proves the compressed stream is whole before anything is planned.
        Ok(Container::StreamedTar {
            path: path.to_path_buf(),
            metadata,
            links,
            sizes,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Container::Dir(p) => p.display().to_string(),
            Container::SeekableTar { path, .. } | Container::StreamedTar { path, .. } => {
                path.display().to_string()
            }
        }
    }

    fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        let links = match self {
            Container::Dir(_) => return name,
            Container::SeekableTar { links, .. } | Container::StreamedTar { links, .. } => links,
        };
        let mut current = name;
        // Bounded so a link loop cannot spin forever.
        for _ in 0..16 {
            match links.get(current) {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    pub fn exists(&self, name: &str) -> bool {
        let name = self.resolve(name);
        match self {
            Container::Dir(dir) => safe_join(dir, name).is_some_and(|p| p.is_file()),
            Container::SeekableTar { members, .. } => members.contains_key(name),
            Container::StreamedTar { sizes, .. } => sizes.contains_key(name),
        }
    }

    /// A member's stored size, where known without reading it.
    pub fn member_size(&self, name: &str) -> Option<u64> {
        let name = self.resolve(name);
        match self {
            Container::Dir(dir) => safe_join(dir, name)
                .and_then(|p| p.metadata().ok())
                .map(|m| m.len()),
            Container::SeekableTar { members, .. } => members.get(name).map(|&(_, size)| size),
            Container::StreamedTar { sizes, .. } => sizes.get(name).copied(),
        }
    }

    /// Reads a small metadata member (JSON) fully.
    pub fn read_metadata(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let resolved = self.resolve(name);
        let missing = || SourceError::MissingMember {
            container: self.describe(),
            member: name.to_string(),
        };
        match self {
            Container::StreamedTar { metadata, .. } => {
                metadata.get(resolved).cloned().ok_or_else(missing)
            }
            _ => {
                let (mut reader, size) = self.open_member(resolved)?.ok_or_else(missing)?;
                if size > MAX_METADATA_MEMBER {
                    return Err(SourceError::Invalid {
                        what: self.describe(),
                        detail: format!("{name} is {size} bytes, over the 16 MiB metadata limit"),
                    });
                }
                let mut bytes = Vec::with_capacity(size as usize);
                reader
                    .read_to_end(&mut bytes)
                    .map_err(|e| SourceError::io(Path::new(&self.describe()), e))?;
                Ok(bytes)
            }
        }
    }

    /// Random access to one member, where the container allows it.
    fn open_member(&self, name: &str) -> Result<Option<SizedReader<'_>>, SourceError> {
        match self {
            Container::Dir(dir) => {
                let Some(path) = safe_join(dir, name) else {
                    return Ok(None);
                };
                if !path.is_file() {
                    return Ok(None);
                }
                let file = open_file(&path)?;
                let size = file
                    .metadata()
                    .map_err(|e| SourceError::io(&path, e))?
                    .len();
                Ok(Some((Box::new(file), size)))
            }
            Container::SeekableTar { path, members, .. } => {
                let Some(&(offset, size)) = members.get(name) else {
                    return Ok(None);
                };
                let mut file = open_file(path)?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| SourceError::io(path, e))?;
                Ok(Some((Box::new(file.take(size)), size)))
            }
            Container::StreamedTar { .. } => Ok(None),
        }
    }

    /// Calls `visit` with each wanted member's bytes (as stored: possibly compressed).
    /// Random-access containers visit in the order given; streamed ones in stream order.
    /// `visit` returns false to stop early.
    pub fn visit_members(
        &self,
        wanted: &[String],
        visit: &mut dyn FnMut(&str, &mut dyn Read) -> Result<bool, SourceError>,
    ) -> Result<(), SourceError> {
        match self {
            Container::StreamedTar { path, .. } => {
                // Wanted names may be links: map each stored target back to the names asked for.
                let mut targets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for w in wanted {
                    targets.entry(self.resolve(w)).or_default().push(w);
                }
                let file = open_file(path)?;
                let reader = decompress(file).map_err(|e| SourceError::io(path, e))?;
                let mut archive = tar::Archive::new(reader);
                let entries = archive
                    .entries()
                    .map_err(|e| SourceError::not_tar(path, e))?;
                for entry in entries {
                    let mut entry = entry.map_err(|e| SourceError::corrupt(path, e))?;
                    if !entry.header().entry_type().is_file() {
                        continue;
                    }
                    let name =
                        normalize_name(&entry.path().map_err(|e| SourceError::corrupt(path, e))?);
                    if let Some(asked) = targets.remove(name.as_str()) {
                        if !visit(asked[0], &mut entry)? {
                            return Ok(());
                        }
                        if targets.is_empty() {
                            return Ok(());
                        }
                    }
                }
                match targets.into_iter().next() {
                    Some((name, _)) => Err(SourceError::MissingMember {
                        container: self.describe(),
                        member: name.to_string(),
                    }),
                    None => Ok(()),
                }
            }
            _ => {
                for name in wanted {
                    let resolved = self.resolve(name);
                    let (mut reader, _) =
                        self.open_member(resolved)?
                            .ok_or_else(|| SourceError::MissingMember {
                                container: self.describe(),
                                member: name.clone(),
                            })?;
                    if !visit(name, &mut reader)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Joins a member name under a directory, refusing names that would leave it.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    if rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Some(dir.join(rel))
    } else {
        None
    }
}

fn open_file(path: &Path) -> Result<File, SourceError> {
    File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            SourceError::NotFound(path.to_path_buf())
        } else {
            SourceError::io(path, e)
        }
    })
}

/// Reads until `buf` is full or EOF; returns how much was read.
pub fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_normalise() {
        assert_eq!(
            normalize_name(Path::new("./a/b/layer.tar")),
            "a/b/layer.tar"
        );
        assert_eq!(
            resolve_link("abc/layer.tar", Path::new("../def/layer.tar"), false),
            "def/layer.tar"
        );
        assert_eq!(
            resolve_link("abc/layer.tar", Path::new("def/layer.tar"), true),
            "def/layer.tar"
        );
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let d = Path::new("/x");
        assert!(safe_join(d, "blobs/sha256/ab").is_some());
        assert!(safe_join(d, "../etc/passwd").is_none());
        assert!(safe_join(d, "/etc/passwd").is_none());
    }
}
