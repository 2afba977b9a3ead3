//! `join`: the volumes of a bundle back into the one file `create` would have written
//! without `--volume-size`, every member checked as it is copied, written atomically.

use super::BundleInput;
use crate::error::Error;
use crate::fsutil;
use crate::progress::Progress;
use archpack_format::{AdmitAll, BundleReader};
use serde::Serialize;
use std::path::PathBuf;

pub struct JoinRequest {
    pub volumes: BundleInput,
    pub output: PathBuf,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinReport {
    pub output: PathBuf,
    pub bytes: u64,
    pub volumes: usize,
    /// Whether the joined bundle carries a signature (checked when it is used).
    pub signed: bool,
}

/// The signature is not judged here: the joined file carries the same one, and every
/// command that uses it checks it (join copies, and checks each member's digest).
pub fn join(req: &JoinRequest, progress: &dyn Progress) -> Result<JoinReport, Error> {
    let reader = match &req.volumes {
        BundleInput::File(p) => BundleReader::open_paths(p, &[], &AdmitAll)?,
        BundleInput::Volumes(p, more) => BundleReader::open_paths(p, more, &AdmitAll)?,
        BundleInput::Stdin => {
            return Err(crate::error::RequestError::JoinFromStdin.into());
        }
    };
    let volumes = reader.volume_slots().len();
    if volumes == 0 {
        return Err(archpack_format::FormatError::NotVolumes {
            path: reader.path.clone(),
        }
        .into());
    }
    // join_into checks that every volume is here before it writes a byte.
    let bytes = fsutil::write_atomically(&req.output, req.force, 0o644, |file| {
        reader.join_into(file, progress)
    })
    .map_err(|e| match e {
        fsutil::AtomicError::Output(o) => Error::from(o),
        fsutil::AtomicError::Content(e) => Error::from(e),
    })?;
    Ok(JoinReport {
        output: req.output.clone(),
        bytes,
        volumes,
        signed: reader
            .index
            .volumes
            .as_ref()
            .is_some_and(|t| t.joined.signature.is_some()),
    })
}
