//! Sources: where `create` reads images from (the local engine, `docker save` archives,
//! OCI layouts and OCI archives), named the way skopeo names them.
//!
//! A source first describes its images ([`SourceImage`]: platform from the config,
//! diff_ids, tags) without reading layers, so the bundle can be planned; then it
//! streams the layers a plan asks for into a [`LayerSink`].

mod container;
mod daemon;
mod docker_archive;
mod oci;

pub use container::{decompress, read_up_to, Compression, MAX_METADATA_MEMBER};

use crate::digest::{Digest, DigestError};
use crate::platform::Platform;
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
    #[error("{0:?} is a path on this host, not an engine image; say what it holds: docker-archive:{0} (docker save), oci-archive:{0} (an OCI tar) or oci:{0} (an OCI layout directory)")]
    PathWithoutKind(String),
    #[error("{what}: no image matches reference {reference:?} (it has: {available})")]
    NoSuchReference {
        what: String,
        reference: String,
        available: String,
    },
    #[error("docker engine at {host}: {detail}")]
    Engine { host: String, detail: String },
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

impl SourceRef {
    pub fn parse(s: &str) -> Result<SourceRef, SourceError> {
        let bad = || SourceError::BadReference(s.to_string());
        if let Some(rest) = s.strip_prefix("docker-daemon:") {
            if rest.is_empty() {
                return Err(bad());
            }
            return Ok(SourceRef::Daemon {
                reference: rest.to_string(),
            });
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
        // A bare NAME:TAG is an engine image, as for `docker save`.
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        // `archpack create -o b app.tar` would otherwise ask the engine for "app.tar".
        if s.starts_with('/') || s.starts_with('.') || Path::new(s).exists() {
            return Err(SourceError::PathWithoutKind(s.to_string()));
        }
        Ok(SourceRef::Daemon {
            reference: s.to_string(),
        })
    }
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
    /// The source as the user wrote it, for messages.
    pub source: String,
    /// Tags it carries there (`svc:v1.0-arm64`), familiar form.
    pub tags: Vec<String>,
    pub platform: Platform,
    pub config: Digest,
    /// Exact config bytes when known before streaming (always, except engine sources).
    pub config_bytes: Option<Vec<u8>>,
    pub diff_ids: Vec<Digest>,
    /// Bytes of layer data expected, for progress (uncompressed where known).
    pub size_hint: u64,
    /// The logical name to bundle it under, when the user gave one (`--name`).
    pub name: Option<String>,
}

/// Receives layers from a source.
pub trait LayerSink {
    /// Whether the sink still needs the layer with this diff_id (checked before reading).
    fn wants(&mut self, diff_id: &Digest) -> bool;
    /// One layer's uncompressed tar stream. `expected` is its diff_id when the source
    /// knows it; `None` means "identify it by its content".
    fn layer(
        &mut self,
        origin: &str,
        expected: Option<&Digest>,
        data: &mut dyn Read,
    ) -> Result<(), SourceError>;
    /// A config blob delivered during streaming (engine sources).
    fn config(&mut self, bytes: Vec<u8>);
}

/// An opened source.
pub trait Source {
    fn images(&self) -> &[SourceImage];
    fn images_mut(&mut self) -> &mut [SourceImage];
    /// Gives every image of this source the logical name `name` (`--name`).
    fn set_names(&mut self, name: Option<&str>) {
        for image in self.images_mut() {
            image.name = name.map(String::from);
        }
    }
    /// Streams the layers of the images at `which` (indices into `images()`).
    fn read_layers(&mut self, which: &[usize], sink: &mut dyn LayerSink)
        -> Result<(), SourceError>;
}

/// Opens sources and reads their metadata; `name` is each one's `--name`, if any.
/// All engine images share one source (one `docker save` for all of them).
pub fn open_all(
    references: &[(SourceRef, Option<String>)],
) -> Result<Vec<Box<dyn Source>>, SourceError> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let mut engine: Option<daemon::DaemonSource> = None;
    for (reference, name) in references {
        if let SourceRef::Daemon { reference: r } = reference {
            let d = match engine.as_mut() {
                Some(d) => d,
                None => engine.insert(daemon::DaemonSource::connect()?),
            };
            d.add(r, reference.to_string())?;
            if let Some(last) = Source::images_mut(d).last_mut() {
                last.name = name.clone();
            }
            continue;
        }
        let mut source = open(reference)?;
        source.set_names(name.as_deref());
        out.push(source);
    }
    if let Some(d) = engine {
        out.push(Box::new(d));
    }
    Ok(out)
}

/// Opens one source and reads its metadata.
pub fn open(reference: &SourceRef) -> Result<Box<dyn Source>, SourceError> {
    let label = reference.to_string();
    let is_layout_dir = matches!(reference, SourceRef::OciLayout { .. });
    Ok(match reference {
        SourceRef::Daemon { reference } => {
            let mut d = daemon::DaemonSource::connect()?;
            d.add(reference, label)?;
            Box::new(d)
        }
        SourceRef::DockerArchive { path } => {
            let container = container::Container::open_tar(path)?;
            Box::new(docker_archive::DockerArchive::open(container, label)?)
        }
        SourceRef::OciLayout {
            dir: path,
            reference,
        }
        | SourceRef::OciArchive { path, reference } => {
            let container = if is_layout_dir {
                container::Container::open_dir(path)?
            } else {
                container::Container::open_tar(path)?
            };
            Box::new(oci::OciLayout::open(
                container,
                reference.as_deref(),
                &dir_name(path),
                label,
            )?)
        }
    })
}

/// A repository name from a file or directory name, for OCI refs that are bare tags.
fn dir_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".tar")
        .trim_end_matches(".oci");
    stem.to_ascii_lowercase()
}

/// Parsed essentials of an image config.
pub(crate) struct ConfigFacts {
    pub platform: Platform,
    pub diff_ids: Vec<Digest>,
}

pub(crate) fn parse_config(source: &str, bytes: &[u8]) -> Result<ConfigFacts, SourceError> {
    let config = oci_spec::image::ImageConfiguration::from_reader(bytes).map_err(|e| {
        SourceError::NoPlatform {
            what: source.to_string(),
            detail: e.to_string(),
        }
    })?;
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    if os.is_empty() || arch.is_empty() {
        return Err(SourceError::NoPlatform {
            what: source.to_string(),
            detail: "empty os or architecture".into(),
        });
    }
    let platform = Platform::new(&os, &arch, config.variant().as_deref());
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse::<Digest>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| SourceError::BadDigest {
            what: source.to_string(),
            error,
        })?;
    Ok(ConfigFacts { platform, diff_ids })
}

/// Familiar form of an image name: `docker.io/library/svc:v1` → `svc:v1`.
pub fn familiar_name(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    let n = n.strip_prefix("library/").unwrap_or(n);
    n.to_string()
}

/// Architecture suffixes stripped from a tag to find the logical name.
const ARCH_SUFFIXES: &[&str] = &[
    "amd64", "x86_64", "x86-64", "x64", "arm64v8", "arm64", "aarch64", "arm32v7", "arm32v6",
    "armv7l", "armv7", "armv6l", "armv6", "armv5", "armhf", "armel", "arm", "i386", "386",
    "ppc64le", "s390x", "riscv64", "loong64",
];

/// `svc:v1.0-arm64` → `svc:v1.0`; `svc:arm64` → `svc:latest`; a name without a tag
/// gets `latest`.
pub fn logical_name(tag: &str) -> String {
    let tag = familiar_name(tag);
    let (repo, version) = match tag.rfind(':') {
        Some(i) if !tag[i + 1..].contains('/') => (&tag[..i], &tag[i + 1..]),
        _ => (tag.as_str(), "latest"),
    };
    let lower = version.to_ascii_lowercase();
    for suffix in ARCH_SUFFIXES {
        if lower == *suffix {
            return format!("{repo}:latest");
        }
        for sep in ['-', '_', '.'] {
            let s = format!("{sep}{suffix}");
            if lower.ends_with(&s) {
                return format!("{repo}:{}", &version[..version.len() - s.len()]);
            }
        }
    }
    format!("{repo}:{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_path_asks_for_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.tar");
        std::fs::write(&file, b"").unwrap();
        for s in [file.to_str().unwrap(), "./app.tar", "/nonexistent/app.tar"] {
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
        for bad in ["", "docker-archive:", "oci:", "/abs/path.tar", "has space"] {
            assert!(SourceRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn logical_names_drop_arch_suffixes() {
        for (tag, want) in [
            ("svc:v1.0-arm64", "svc:v1.0"),
            ("svc:v1.0-amd64", "svc:v1.0"),
            ("svc:v1.0_x86_64", "svc:v1.0"),
            ("svc:v1.0-armv7", "svc:v1.0"),
            ("svc:v1.0-arm", "svc:v1.0"),
            ("svc:arm64", "svc:latest"),
            ("svc", "svc:latest"),
            ("docker.io/library/svc:v2", "svc:v2"),
            (
                "registry:5000/team/svc:v2-arm64v8",
                "registry:5000/team/svc:v2",
            ),
            ("registry:5000/svc", "registry:5000/svc:latest"),
            ("svc:v1.0-harmony", "svc:v1.0-harmony"),
        ] {
            assert_eq!(logical_name(tag), want, "{tag}");
        }
    }
}
