//! `keygen`: a minisign key pair.

pub use crate::trust::KeyFiles;

use crate::error::Error;
use std::path::PathBuf;

pub struct KeygenRequest {
    pub prefix: PathBuf,
    /// None: an unprotected key (throwaway use only).
    pub password: Option<String>,
    pub force: bool,
}

pub fn keygen(req: KeygenRequest) -> Result<KeyFiles, Error> {
    Ok(crate::trust::keygen(&req.prefix, req.password, req.force)?)
}
