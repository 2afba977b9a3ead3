//! The error a use-case returns: one variant per stage, each carrying that stage's own
//! error. The exit code is a property of the error ([`Error::exit_code`]).

use archpack_format::{exit, FormatError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformChoiceError),
    #[error(transparent)]
    Engine(#[from] crate::docker::EngineError),
    #[error(transparent)]
    Load(#[from] crate::deliver::engine::LoadError),
    #[error(transparent)]
    Archive(#[from] crate::deliver::archive::ArchiveError),
    #[error(transparent)]
    Push(#[from] crate::deliver::registry::PushError),
    #[error(transparent)]
    Serve(#[from] crate::deliver::serve::ServeError),
    #[error(transparent)]
    Compose(#[from] crate::compose::ComposeError),
    #[error(transparent)]
    Up(#[from] crate::compose::UpError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Output(#[from] crate::fsutil::OutputError),
    /// A request that names something that is not there or cannot be (`--image TYPO`).
    #[error("{0}")]
    Request(#[from] RequestError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Format(e) => e.exit_code(),
            Error::Trust(e) => e.exit_code(),
            Error::Load(e) => e.exit_code(),
            Error::Archive(e) => e.exit_code(),
            Error::Push(e) => e.exit_code(),
            Error::Serve(e) => e.exit_code(),
            Error::Source(_)
            | Error::Platform(_)
            | Error::Engine(_)
            | Error::Compose(_)
            | Error::Up(_)
            | Error::Reference(_)
            | Error::Output(_)
            | Error::Request(_) => exit::FAILURE,
        }
    }
}

/// A request that names something that is not there, or cannot be.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{source_ref}: the image has no name to bundle it by{why}; give it one with --name NAME:TAG={source_ref}")]
    NoName { source_ref: String, why: String },
    #[error("join reads volumes from their files, not from standard input: give the path of one (the others are found beside it)")]
    JoinFromStdin,
    #[error("serve answers requests in any order, so it reads bundles from their files, not from standard input: give the bundle's path")]
    ServeFromStdin,
    #[error("--prefix {0:?}: a registry path is lowercase letters, digits and . _ - between slashes (e.g. site or team/edge)")]
    BadPrefix(String),
    #[error("--name {given:?}: {reason}")]
    BadName { given: String, reason: String },
    #[error("--name {0:?}: expected NAME:TAG=SOURCE")]
    NameWithoutSource(String),
    #[error("--name {given:?}: {source_ref:?} is not one of the sources given")]
    NameForNoSource { given: String, source_ref: String },
    #[error("{source_ref}: it names the image {name:?}, which is not a valid image reference: {reason}; give it a valid name with --name NAME:TAG={source_ref}")]
    BadSourceName {
        source_ref: String,
        name: String,
        reason: String,
    },
    #[error("{logical} for {platform} comes from two sources: {first} and {second}; drop one, or give one another name with --name NAME=SOURCE")]
    DuplicatePlatform {
        logical: String,
        platform: String,
        first: String,
        second: String,
    },
    #[error(
        "{source_ref}: {platform} was asked for with --platform but is not there whole ({missing})"
    )]
    PlatformIncomplete {
        source_ref: String,
        platform: String,
        missing: String,
    },
    #[error("loader {path}: {detail}")]
    Loader { path: PathBuf, detail: String },
    #[error("no archpack loader is built for {platform} (there are loaders for linux/amd64, linux/arm64, linux/arm/v7 and linux/arm/v6)")]
    NoLoaderTarget { platform: String },
    #[error("{option} {given:?}: {why}")]
    BadSize {
        option: &'static str,
        given: String,
        why: String,
    },
    #[error("{bundle} is a delta bundle made against {against}: {left_out} of its layers are left to (or patched against) what that base holds, so `{command}` cannot write its images on its own. `load` it where the base is loaded, or {command} a full bundle (create without --base)")]
    DeltaNeedsBase {
        bundle: String,
        command: &'static str,
        against: String,
        left_out: usize,
    },
    #[error("--base is for delta bundles (this one is whole: it needs no base)")]
    BaseForFullBundle,
    #[error("--base {path}: {detail}")]
    BadBase { path: PathBuf, detail: String },
    #[error("--patch-max-ref {given}: at most {max} bytes (a patch's window must reach back over its whole reference, and windows stop at 128 MiB)")]
    PatchReferenceTooLarge { given: u64, max: u64 },
    #[error("--share-parts does not combine with --base: a delta bundle shares nothing (make the delta without --share-parts)")]
    SharePartsWithDelta,
    #[error("--share-parts does not combine with --loaders yet: archpack-install reads each loader at its offset in the plain file (carry loaders in a bundle without --share-parts)")]
    SharePartsWithLoaders,
    #[error("no images to bundle{0}")]
    NoImages(String),
    #[error("--compose-override {0:?}: expected PLATFORM=FILE")]
    BadOverride(String),
    #[error("--compose-override needs --compose (the template it overrides)")]
    OverrideWithoutTemplate,
    #[error("SOURCE_DATE_EPOCH={0:?} is not a Unix time in seconds")]
    BadSourceDateEpoch(String),
    #[error("reading {what} {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}
