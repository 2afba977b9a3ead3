//! `push`: every platform of a bundle's images into a registry, one multi-platform
//! index per logical image.

use super::{open_bundle, BundleInput, Signature, TrustPolicy};
use crate::deliver::registry::{self, PushOptions, PushReport};
use crate::error::Error;
use crate::platform::{select_all, Platform};
use crate::progress::Progress;

pub struct PushRequest {
    pub bundle: BundleInput,
    pub trust: TrustPolicy,
    /// Only these platforms (None: all the bundle has).
    pub platforms: Option<Vec<Platform>>,
    /// Only these images (logical names); all when empty.
    pub images: Vec<String>,
    pub options: PushOptions,
}

/// The registry's report, with who signed what was pushed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSummary {
    pub signature: Signature,
    #[serde(flatten)]
    pub pushed: PushReport,
}

pub fn push(req: &PushRequest, progress: &dyn Progress) -> Result<PushSummary, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    super::refuse_delta(&reader, "push")?;
    let selected = select_all(&reader.index, &req.images, req.platforms.as_deref())?;
    super::require_volumes(&reader, &selected)?;
    let pushed = registry::push(&reader, &selected, &req.options, progress)?;
    Ok(PushSummary { signature, pushed })
}
