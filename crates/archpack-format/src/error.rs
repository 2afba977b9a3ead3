//! What can go wrong reading or writing a bundle, and the exit code each failure means.

use crate::digest::Digest;
use std::io;
use std::path::PathBuf;

/// archpack's exit codes (README, "Exit codes"). Every layer's error maps onto these.
pub mod exit {
    /// Bad input, unreachable engine, I/O error.
    pub const FAILURE: u8 = 1;
    /// Unknown option, missing argument.
    pub const USAGE: u8 = 2;
    /// A bundle member is corrupt, truncated or inconsistent with the index.
    pub const INTEGRITY: u8 = 3;
    /// Unsigned (without `--allow-unsigned`), signed by an untrusted key, bad signature.
    pub const UNTRUSTED: u8 = 4;
}

/// Why a reader's gate (archpack's trust check) refused a bundle, and the exit code that
/// refusal means.
pub trait GateRefusal: std::error::Error + Send + Sync {
    fn exit_code(&self) -> u8;
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: not an archpack bundle: {detail}")]
    NotABundle { path: PathBuf, detail: String },
    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: this bundle requires the format feature {feature:?}, which this archpack does not know; upgrade archpack")]
    UnsupportedFeature { path: PathBuf, feature: String },
    #[error("{path}: bundle format {found} is newer than this archpack reads ({supported}); upgrade archpack")]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{path}: member {member}: {detail}")]
    BadMember {
        path: PathBuf,
        member: String,
        detail: String,
    },
    #[error("{path}: member {member} is corrupt: digest {actual}, the index says {expected}")]
    DigestMismatch {
        path: PathBuf,
        member: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: member {member} is corrupt: {detail}")]
    CorruptLayer {
        path: PathBuf,
        member: String,
        detail: String,
    },
    #[error("{path}: the index is inconsistent: {detail}")]
    BadIndex { path: PathBuf, detail: String },
    /// The trust gate refused the index; its own error says why.
    #[error("{path}: refused: {refusal}")]
    Refused {
        path: PathBuf,
        refusal: Box<dyn GateRefusal>,
    },
    #[error("writing {path}: {error} (nothing was written at the output path)")]
    Write { path: PathBuf, error: io::Error },
    #[error("{origin}: layer content has diff_id {actual}, but the image config says {expected}; the source is corrupt")]
    LayerMismatch {
        origin: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{origin}: reading layer: {error}")]
    LayerRead { origin: String, error: io::Error },
    #[error("{image}: layer {diff_id} was never delivered by its source")]
    MissingLayer { image: String, diff_id: Digest },
    #[error("{image}: the config blob {config} was never delivered by its source")]
    MissingConfig { image: String, config: Digest },
    #[error("{what} is {size} bytes, over the format's {limit}-byte limit for it (SPEC §3.4)")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("signing the bundle index: {0}")]
    Signing(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("a volume size of {cap} bytes cannot hold this bundle's index and a piece of a member: give --volume-size {least} or more")]
    VolumeTooSmall { cap: u64, least: u64 },
    #[error("{path}: a volume of a bundle whose volumes are named {first} … {last}; give it back its name (siblings are found by name)")]
    VolumeRenamed {
        path: PathBuf,
        first: String,
        last: String,
    },
    #[error("{path}: {detail}")]
    CorruptVolume { path: PathBuf, detail: String },
    #[error("{path}: not a volume of a bundle (it is one file already)")]
    NotVolumes { path: PathBuf },
    #[error("{path}: the volumes this needs are not all here:\n{problems}")]
    VolumesUnavailable {
        path: PathBuf,
        /// One line per volume: `  app.archpack.004: missing`.
        problems: String,
        /// Some volume is there but damaged (not merely missing).
        damaged: bool,
    },
}

impl FormatError {
    pub fn exit_code(&self) -> u8 {
        match self {
            FormatError::Truncated { .. }
            | FormatError::BadMember { .. }
            | FormatError::DigestMismatch { .. }
            | FormatError::CorruptLayer { .. }
            | FormatError::BadIndex { .. } => exit::INTEGRITY,
            FormatError::Refused { refusal, .. } => refusal.exit_code(),
            FormatError::VolumesUnavailable { damaged: true, .. }
            | FormatError::CorruptVolume { .. } => exit::INTEGRITY,
            FormatError::Io { .. }
            | FormatError::NotABundle { .. }
            | FormatError::UnsupportedFormat { .. }
            | FormatError::UnsupportedFeature { .. }
            | FormatError::Write { .. }
            | FormatError::LayerMismatch { .. }
            | FormatError::LayerRead { .. }
            | FormatError::MissingLayer { .. }
            | FormatError::MissingConfig { .. }
            | FormatError::TooLarge { .. }
            | FormatError::Signing(_)
            | FormatError::Internal(_)
            | FormatError::VolumeTooSmall { .. }
            | FormatError::VolumeRenamed { .. }
            | FormatError::NotVolumes { .. }
            | FormatError::VolumesUnavailable { damaged: false, .. } => exit::FAILURE,
        }
    }
}
