//! The bundle format: one plain tar holding an OCI image layout, with archpack's own
//! index (and its signature) first. `writer` creates bundles, `reader` opens and
//! verifies them. The format is specified in `bundle-format/SPEC.md`.

pub mod index;
mod layer;
pub(crate) mod ocidoc;
mod reader;
pub(crate) mod tarfmt;
mod writer;

pub use index::*;
pub use layer::{LayerFault, VerifiedLayer};
pub use reader::{AdmitAll, BundleReader, IndexGate, MemberReader, VerifyReport};
pub use writer::{create, tool_string, CreateOptions, CreateReport, IndexSigner, Input, PlanEntry};

use crate::digest::Digest;
use crate::source::SourceError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: already exists; pass --force to replace it")]
    OutputExists(PathBuf),
    #[error("writing {path}: {error} (nothing was written at the output path)")]
    Write { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{origin}: layer content has diff_id {actual}, but the image config says {expected}; the source is corrupt")]
    LayerMismatch {
        origin: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{origin}: reading layer: {error}")]
    LayerRead { origin: String, error: io::Error },
    #[error("{image}: layer {diff_id} was not found in {from}")]
    MissingLayer {
        image: String,
        diff_id: Digest,
        from: String,
    },
    #[error("{image}: the config blob {config} was not delivered by {from}")]
    MissingConfig {
        image: String,
        config: Digest,
        from: String,
    },
    #[error("{logical} for {platform} comes from two sources: {first} and {second}; drop one, or give one another name with --name NAME=SOURCE")]
    DuplicatePlatform {
        logical: String,
        platform: String,
        first: String,
        second: String,
    },
    #[error("{from}: image has no tag to name it by; give it a name with --name NAME={from}")]
    NoName { from: String },
    #[error("{0}")]
    PlanRejected(String),
    #[error("no images to bundle{0}")]
    NoImages(String),
    #[error("signing the bundle index: {0}")]
    Signing(String),
    #[error("{path}: not an archpack bundle: {detail}")]
    NotABundle { path: PathBuf, detail: String },
    #[error("{path}: truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
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
    #[error("{path}: refused: {source}")]
    Refused {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: member {member} is corrupt: {detail}")]
    CorruptLayer {
        path: PathBuf,
        member: String,
        detail: String,
    },
    #[error("{path}: the index is inconsistent: {detail}")]
    BadIndex { path: PathBuf, detail: String },
}
