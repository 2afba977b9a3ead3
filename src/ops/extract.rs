//! `extract`: one platform of a bundle as a docker-archive or an OCI archive, for hosts
//! whose runtime archpack does not drive (podman, containerd, k3s).

use super::{decide_platform, open_bundle, BundleInput, Signature, TrustPolicy};
pub use crate::deliver::archive::ArchiveFormat;
use crate::deliver::archive::{self, ArchiveStats};
use crate::docker::Endpoint;
use crate::error::Error;
use crate::platform::{select, Platform};
use crate::progress::Progress;
use serde::Serialize;
use std::path::PathBuf;

pub struct ExtractRequest {
    pub bundle: BundleInput,
    pub trust: TrustPolicy,
    pub endpoint: Endpoint,
    pub platform: Option<Platform>,
    pub format: ArchiveFormat,
    pub output: PathBuf,
    pub images: Vec<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractReport {
    pub signature: Signature,
    pub output: PathBuf,
    pub format: ArchiveFormat,
    pub platforms: Vec<String>,
    #[serde(flatten)]
    pub stats: ArchiveStats,
}

pub fn extract(req: &ExtractRequest, progress: &dyn Progress) -> Result<ExtractReport, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    super::refuse_delta(&reader, "extract")?;
    let (_, decision) = decide_platform(req.platform.as_ref(), None, &req.endpoint)?;
    let selected = select(&reader.index, &decision, &req.images)?;
    super::require_volumes(&reader, &selected)?;
    let stats = archive::archive_file(
        req.format,
        &reader,
        &selected,
        &req.output,
        req.force,
        0,
        progress,
    )?;
    let mut platforms: Vec<String> = selected
        .iter()
        .map(|s| s.entry.platform.to_string())
        .collect();
    platforms.sort();
    platforms.dedup();
    Ok(ExtractReport {
        signature,
        output: req.output.clone(),
        format: req.format,
        platforms,
        stats,
    })
}
