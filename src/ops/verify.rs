//! `verify`: the signature, then every member of a bundle against its index (layers
//! decompressed and checked, configs checked to be image configs).

use super::{open_bundle, BundleInput, Signature, TrustPolicy};
use crate::error::Error;
use crate::progress::Progress;
use serde::Serialize;

pub struct VerifyRequest {
    pub bundle: BundleInput,
    pub trust: TrustPolicy,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub signature: Signature,
    pub members: usize,
    pub bytes: u64,
}

pub fn verify(req: &VerifyRequest, progress: &dyn Progress) -> Result<VerifyReport, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    let checked = reader.verify(progress)?;
    Ok(VerifyReport {
        signature,
        members: checked.members,
        bytes: checked.bytes,
    })
}
