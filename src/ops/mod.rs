//! The use-cases: each takes a resolved request (the CLI resolved paths, the engine
//! endpoint, the trust store and the platform once) and returns a typed, serialisable
//! report, or an [`Error`](crate::Error) whose exit code says what kind of failure it was.
//! Nothing here reads the environment or prints.

pub mod compose;
pub mod create;
pub mod extract;
pub mod inspect;
pub mod inventory;
pub mod join;
pub mod keygen;
pub mod load;
pub mod platform;
pub mod push;
pub mod serve;
pub mod verify;

use crate::docker::{Endpoint, Engine};
use crate::error::Error;
pub use crate::error::RequestError;
use crate::platform::probe::{self, Decision, ProbeInputs};
use crate::platform::Platform;
use crate::trust::{TrustGate, TrustStore, Verdict};
use archpack_format::BundleReader;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a bundle is read from.
#[derive(Debug, Clone)]
pub enum BundleInput {
    File(PathBuf),
    /// Volumes of one bundle kept apart: the first, then the others (the rest are
    /// looked for beside the first).
    Volumes(PathBuf, Vec<PathBuf>),
    /// A stream (`-`: standard input), read strictly forward.
    Stdin,
}

impl BundleInput {
    /// `-` is standard input.
    pub fn from_arg(path: &Path) -> BundleInput {
        if path.as_os_str() == "-" {
            BundleInput::Stdin
        } else {
            BundleInput::File(path.to_path_buf())
        }
    }

    /// The bundle argument and any further volumes given with it.
    pub fn from_args(path: &Path, more: &[PathBuf]) -> BundleInput {
        if more.is_empty() {
            BundleInput::from_arg(path)
        } else {
            BundleInput::Volumes(path.to_path_buf(), more.to_vec())
        }
    }

    /// The paths named, for messages.
    pub fn label(&self) -> String {
        match self {
            BundleInput::File(p) | BundleInput::Volumes(p, _) => p.display().to_string(),
            BundleInput::Stdin => "the bundle on standard input".into(),
        }
    }
}

/// Before anything is delivered: the volumes holding what `selected` needs (configs,
/// manifests, layers, image indexes) are all here and whole; each one that is not is
/// named. A single-file bundle always passes.
pub fn require_volumes(
    reader: &BundleReader,
    selected: &[crate::platform::Selected],
) -> Result<(), Error> {
    Ok(reader.require_blobs(blobs_read(selected.iter().map(|s| (s.image, s.entry))))?)
}

/// The blobs delivering these images reads: each platform's config, manifest and
/// layers, and the image's index.
pub fn blobs_read<'a>(
    images: impl IntoIterator<
        Item = (
            &'a archpack_format::ImageEntry,
            &'a archpack_format::PlatformEntry,
        ),
    >,
) -> impl Iterator<Item = &'a archpack_format::Digest> {
    images.into_iter().flat_map(|(image, entry)| {
        archpack_format::BundleIndex::blobs_of(entry).chain(std::iter::once(&image.index))
    })
}

/// Which signers to trust.
pub struct TrustPolicy {
    pub store: TrustStore,
    pub allow_unsigned: bool,
}

/// Who signed a bundle, as a report says it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum Signature {
    /// Signed by a key trusted here.
    Trusted {
        key_id: String,
        trusted_via: PathBuf,
    },
    /// Accepted without a signature because `--allow-unsigned` was given.
    UnsignedAllowed,
    /// Not checked (`inspect` without a decision).
    NotChecked,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signature::Trusted {
                key_id,
                trusted_via,
            } => write!(
                f,
                "signed by key {key_id} (trusted via {})",
                trusted_via.display()
            ),
            Signature::UnsignedAllowed => f.write_str("unsigned (allowed)"),
            Signature::NotChecked => f.write_str("signature not checked"),
        }
    }
}

/// Opens a bundle after the trust decision (the signature is judged on the raw index
/// bytes before anything else is read or parsed).
pub fn open_bundle(
    input: &BundleInput,
    trust: &TrustPolicy,
) -> Result<(BundleReader, Signature), Error> {
    let gate = TrustGate::new(&trust.store, trust.allow_unsigned);
    let reader = match input {
        BundleInput::File(path) => BundleReader::open_checked(path, &gate)?,
        BundleInput::Volumes(path, more) => BundleReader::open_paths(path, more, &gate)?,
        BundleInput::Stdin => {
            let stdin: Box<dyn Read + Send> =
                Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()));
            BundleReader::open_stream(stdin, Path::new("(stdin)"), &gate)?
        }
    };
    let signature = match gate.verdict() {
        Some(Verdict::Trusted { key_id, source, .. }) => Signature::Trusted {
            key_id,
            trusted_via: source,
        },
        Some(Verdict::UnsignedAllowed) => Signature::UnsignedAllowed,
        None => Signature::NotChecked,
    };
    Ok((reader, signature))
}

/// `extract` and `push` write whole images: a delta bundle lacks layers its base holds.
pub fn refuse_delta(reader: &BundleReader, command: &'static str) -> Result<(), Error> {
    let Some(delta) = &reader.index.delta else {
        return Ok(());
    };
    let against: Vec<String> = delta
        .bases
        .iter()
        .map(|b| format!("{} ({})", b.name, b.file))
        .collect();
    Err(RequestError::DeltaNeedsBase {
        bundle: reader.path.display().to_string(),
        command,
        against: against.join(", "),
        left_out: delta.required.len() + delta.patches.len(),
    }
    .into())
}

/// The platform decision: `--platform` as given, or probed (asking `engine` when there
/// is one, else connecting to `endpoint` if it answers).
pub fn decide_platform(
    forced: Option<&Platform>,
    engine: Option<&Engine>,
    endpoint: &Endpoint,
) -> Result<(Option<ProbeInputs>, Decision), Error> {
    if let Some(p) = forced {
        return Ok((None, probe::forced(p)));
    }
    let inputs = match engine {
        Some(e) => probe::collect_with_engine(Ok(e)),
        None => {
            let connected = Engine::connect(endpoint);
            probe::collect_with_engine(connected.as_ref().map_err(|e| e.to_string()))
        }
    };
    let decision = probe::decide(&inputs).map_err(crate::platform::PlatformChoiceError::from)?;
    Ok((Some(inputs), decision))
}
