//! Sources: where `create` reads images from (the local engine, `docker save` archives,
//! OCI layouts and OCI archives), named the way skopeo names them.
//!
//! A source first describes its images ([`SourceImage`]: platform from the config,
//! diff_ids, the names it knows them by) without reading layers, so the bundle can be
//! planned; then it streams the layers a plan asks for into a [`LayerSink`], in the
//! order asked where it can read at random, in its own order where it cannot.

mod container;
mod docker_archive;
pub mod engine;
mod mapped;
mod oci;

pub use container::{decompress, read_up_to, Compression, MAX_METADATA_MEMBER};

use crate::digest::{Digest, DigestError};
use crate::docker::{Endpoint, EngineError};
use crate::platform::Platform;
use crate::reference::ImageRef;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: not a tar archive ({detail}); expected a `docker save` or OCI archive")]
    NotTar { path: PathBuf, detail: String },
    #[error("{path}: corrupt or truncated archive: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{0}: truncated: a member extends past the end of the file")]
    Truncated(PathBuf),
    #[error("{container}: missing member {member}")]
    MissingMember { container: String, member: String },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what}: image config has no platform: {detail} (is it a valid image config?)")]
    NoPlatform { what: String, detail: String },
    #[error("{what}: {error}")]
    BadDigest { what: String, error: DigestError },
    #[error("{0:?} is not a source; use docker-daemon:NAME:TAG, NAME:TAG, docker-archive:PATH, oci:DIR[:REF] or oci-archive:PATH[:REF]")]
    BadReference(String),
    #[error("{reference:?} is not a valid image reference ({reason}); use docker-daemon:NAME:TAG, NAME:TAG, docker-archive:PATH, oci:DIR[:REF] or oci-archive:PATH[:REF]")]
    BadImageName { reference: String, reason: String },
    #[error("{0:?} is a path on this host, not an engine image; say what it holds: docker-archive:{0} (docker save), oci-archive:{0} (an OCI tar) or oci:{0} (an OCI layout directory)")]
    PathWithoutKind(String),
    #[error("{what}: no image matches reference {reference:?} (it has: {available})")]
    NoSuchReference {
        what: String,
        reference: String,
        available: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{what}: {detail}")]
    EngineImage { what: String, detail: String },
    /// The sink refused a layer; the sink keeps its own error.
    #[error("aborted by the bundle writer")]
    Aborted,
}

impl SourceError {
    pub(crate) fn io(path: &Path, error: io::Error) -> SourceError {
        SourceError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub(crate) fn not_tar(path: &Path, e: io::Error) -> SourceError {
        if is_decompression_error(&e) {
            return Self::corrupt(path, e);
        }
        SourceError::NotTar {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }

    pub(crate) fn corrupt(path: &Path, e: io::Error) -> SourceError {
        SourceError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }
}

fn is_decompression_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
    ) && !e.to_string().contains("tar")
}

/// A source as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    Daemon {
        reference: String,
    },
    DockerArchive {
        path: PathBuf,
    },
    OciLayout {
        dir: PathBuf,
        reference: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

/// Endings that mean a file, never an image name (`app.tar` parses as a repository).
const FILE_ENDINGS: &[&str] = &[
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.zst",
    ".tzst",
    ".tar.zstd",
    ".gz",
    ".zst",
    ".oci",
];

impl SourceRef {
    pub fn parse(s: &str) -> Result<SourceRef, SourceError> {
        let bad = || SourceError::BadReference(s.to_string());
        if let Some(rest) = s.strip_prefix("docker-daemon:") {
            if rest.is_empty() {
                return Err(bad());
            }
            return engine_ref(rest);
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(bad());
            }
            return Ok(SourceRef::DockerArchive {
                path: PathBuf::from(rest),
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, reference) = split_path_ref(rest).ok_or_else(bad)?;
            return Ok(SourceRef::OciArchive { path, reference });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, reference) = split_path_ref(rest).ok_or_else(bad)?;
            return Ok(SourceRef::OciLayout { dir, reference });
        }
        if s.is_empty() {
            return Err(bad());
        }
        // `archpack create -o b app.tar` would otherwise ask the engine for "app.tar".
        let lower = s.to_ascii_lowercase();
        if s.starts_with('/')
            || s.starts_with('.')
            || Path::new(s).exists()
            || FILE_ENDINGS.iter().any(|e| lower.ends_with(e))
        {
            return Err(SourceError::PathWithoutKind(s.to_string()));
        }
        // A bare NAME:TAG is an engine image, as for `docker save`.
        engine_ref(s)
    }
}

/// An image ID as the engine takes it: `sha256:<hex>` or 12+ hex digits.
pub(crate) fn is_image_id(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An engine image: a reference (`svc:v1`, `svc@sha256:…`) or an image ID.
fn engine_ref(reference: &str) -> Result<SourceRef, SourceError> {
    if !is_image_id(reference) {
        ImageRef::parse(reference).map_err(|e| SourceError::BadImageName {
            reference: reference.to_string(),
            reason: e.reason,
        })?;
    }
    Ok(SourceRef::Daemon {
        reference: reference.to_string(),
    })
}

/// skopeo's rule: the path ends at the first `:`; a path that itself exists wins.
fn split_path_ref(rest: &str) -> Option<(PathBuf, Option<String>)> {
    if rest.is_empty() {
        return None;
    }
    if Path::new(rest).exists() {
        return Some((PathBuf::from(rest), None));
    }
    match rest.split_once(':') {
        Some((path, r)) if !path.is_empty() && !r.is_empty() => {
            Some((PathBuf::from(path), Some(r.to_string())))
        }
        _ => Some((PathBuf::from(rest), None)),
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::Daemon { reference } => write!(f, "docker-daemon:{reference}"),
            SourceRef::DockerArchive { path } => write!(f, "docker-archive:{}", path.display()),
            SourceRef::OciLayout { dir, reference } => {
                write!(f, "oci:{}", dir.display())?;
                reference.iter().try_for_each(|r| write!(f, ":{r}"))
            }
            SourceRef::OciArchive { path, reference } => {
                write!(f, "oci-archive:{}", path.display())?;
                reference.iter().try_for_each(|r| write!(f, ":{r}"))
            }
        }
    }
}

/// One image (one platform) a source can provide.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// The source as the user wrote it, for messages and `--name`.
    pub source: String,
    /// The names the source knows it by, as the user gave them: the engine reference
    /// asked for, an archive's `RepoTags`, an OCI layout's full ref name. Familiar form.
    /// Never tags the image merely has elsewhere, never a directory name.
    pub names: Vec<String>,
    pub platform: Platform,
    /// The config digest (= the image ID an engine reports), when known before the
    /// layers are read. Engines whose image ID is the manifest digest (the containerd
    /// image store) learn it from the manifest as they export.
    pub config: Option<Digest>,
    /// What tells this image apart from another of the same source: the config digest,
    /// or the engine's image ID.
    pub identity: Digest,
    /// Exact config bytes when known before streaming (always, except engine sources).
    pub config_bytes: Option<Vec<u8>>,
    pub diff_ids: Vec<Digest>,
    /// Bytes of layer data expected, for progress (uncompressed where known).
    pub size_hint: u64,
}

/// An image a source names but cannot provide whole (an index entry whose blobs were
/// left out of the archive).
#[derive(Debug, Clone)]
pub struct AbsentImage {
    pub source: String,
    pub names: Vec<String>,
    pub platform: Platform,
    /// What is missing, in words.
    pub missing: String,
}

/// Receives layers and configs from a source.
pub trait LayerSink {
    /// Whether the sink still needs the layer with this diff_id (checked before reading).
    fn wants(&self, diff_id: &Digest) -> bool;
    /// Uncompressed size of a layer the sink already has, if it has it.
    fn has_size(&self, diff_id: &Digest) -> Option<u64>;
    /// Whether an unidentified uncompressed layer of `size` bytes could be one the sink
    /// wants (a sink that knows the sizes it wants spares reading the rest).
    fn wants_size(&self, _size: u64) -> bool {
        true
    }
    /// One layer's uncompressed tar stream. `expected` is its diff_id when the source
    /// knows it; `None` means "identify it by its content".
    fn layer(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
    ) -> Result<(), SourceError>;
    /// The config of the image the source knows as `identity`, byte for byte.
    fn config(
        &mut self,
        identity: &Digest,
        origin: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SourceError>;
}

/// An opened source.
pub trait Source {
    fn images(&self) -> &[SourceImage];
    /// Images the source names but does not hold whole.
    fn absent(&self) -> &[AbsentImage] {
        &[]
    }
    /// Streams the layers (and configs not known up front) of the images at `which`
    /// (indices into `images()`), in that order where the source can.
    fn read_layers(&mut self, which: &[usize], sink: &mut dyn LayerSink)
        -> Result<(), SourceError>;
}

/// Opens every source and reads its metadata. All engine images share one source (one
/// connection), opened only if some source is an engine image.
pub fn open_all(
    references: &[SourceRef],
    endpoint: &Endpoint,
) -> Result<Vec<Box<dyn Source>>, SourceError> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let mut engine: Option<engine::EngineSource> = None;
    for reference in references {
        if let SourceRef::Daemon { reference: r } = reference {
            let e = match engine.as_mut() {
                Some(e) => e,
                None => engine.insert(engine::EngineSource::connect(endpoint)?),
            };
            e.add(r, reference.to_string())?;
            continue;
        }
        out.push(open_file_source(reference)?);
    }
    if let Some(e) = engine {
        out.push(Box::new(e));
    }
    Ok(out)
}

/// Opens a source that lives in a file or directory and reads its metadata.
fn open_file_source(reference: &SourceRef) -> Result<Box<dyn Source>, SourceError> {
    let label = reference.to_string();
    Ok(match reference {
        SourceRef::Daemon { .. } => {
            return Err(SourceError::BadReference(label));
        }
        SourceRef::DockerArchive { path } => {
            let container = container::Container::open_tar(path)?;
            Box::new(docker_archive::open(container, label)?)
        }
        SourceRef::OciLayout { dir, reference } => Box::new(oci::open(
            container::Container::open_dir(dir)?,
            reference.as_deref(),
            label,
        )?),
        SourceRef::OciArchive { path, reference } => Box::new(oci::open(
            container::Container::open_tar(path)?,
            reference.as_deref(),
            label,
        )?),
    })
}

/// The config's facts, for a source.
pub(crate) fn parse_config(
    source: &str,
    bytes: &[u8],
) -> Result<archpack_format::ConfigFacts, SourceError> {
    archpack_format::config_facts(bytes).map_err(|e| SourceError::NoPlatform {
        what: source.to_string(),
        detail: e.to_string(),
    })
}

/// Familiar form of a name a source gives (`docker.io/library/svc:v1` → `svc:v1`);
/// names outside the grammar are kept as written, for `create` to refuse by name.
pub(crate) fn familiar_name(name: &str) -> String {
    crate::reference::familiar(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_path_asks_for_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.tar");
        std::fs::write(&file, b"").unwrap();
        for s in [
            file.to_str().unwrap(),
            "./app.tar",
            "/nonexistent/app.tar",
            "app.tar",
            "app.tar.gz",
            "images/app.oci",
        ] {
            let e = SourceRef::parse(s).unwrap_err().to_string();
            assert!(e.contains(&format!("docker-archive:{s}")), "{e}");
        }
    }

    #[test]
    fn parses_references_like_skopeo() {
        assert_eq!(
            SourceRef::parse("svc:v1.0-amd64").unwrap(),
            SourceRef::Daemon {
                reference: "svc:v1.0-amd64".into()
            }
        );
        assert_eq!(
            SourceRef::parse("docker-daemon:svc:v1").unwrap(),
            SourceRef::Daemon {
                reference: "svc:v1".into()
            }
        );
        assert_eq!(
            SourceRef::parse("oci:/nonexistent/dir:svc:v1.0").unwrap(),
            SourceRef::OciLayout {
                dir: "/nonexistent/dir".into(),
                reference: Some("svc:v1.0".into())
            }
        );
        assert_eq!(
            SourceRef::parse("oci-archive:/nonexistent/x.tar").unwrap(),
            SourceRef::OciArchive {
                path: "/nonexistent/x.tar".into(),
                reference: None
            }
        );
        assert!(SourceRef::parse("sha256:0123456789abcdef").is_ok());
        for bad in [
            "",
            "docker-archive:",
            "oci:",
            "/abs/path.tar",
            "has space",
            "MyApp:1",
            "app:1:2",
        ] {
            assert!(SourceRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
