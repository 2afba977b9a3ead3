//! The error a use-case returns: one variant per stage, each carrying that stage's own
//! error. The exit code is a property of the error ([`Error::exit_code`]).

use archpack_format::{exit, FormatError};

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
    Compose(#[from] crate::compose::ComposeError),
    #[error(transparent)]
    Up(#[from] crate::compose::UpError),
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Output(#[from] crate::fsutil::OutputError),
    /// A request that names something that is not there or cannot be (`--image TYPO`).
    #[error("{0}")]
    Request(#[from] crate::ops::RequestError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Format(e) => e.exit_code(),
            Error::Trust(e) => e.exit_code(),
            Error::Load(e) => e.exit_code(),
            Error::Archive(e) => e.exit_code(),
            Error::Push(e) => e.exit_code(),
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
