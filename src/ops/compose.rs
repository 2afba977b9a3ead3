//! `compose`: the bundle's compose file for a platform — its template merged with that
//! platform's override, every bundled image pinned.

use super::{decide_platform, open_bundle, BundleInput, Signature, TrustPolicy};
use crate::compose;
use crate::docker::Endpoint;
use crate::error::Error;
use crate::platform::{select, Platform, Selected};
use archpack_format::BundleReader;
use serde::Serialize;
use std::path::PathBuf;

pub struct ComposeRequest {
    pub bundle: BundleInput,
    pub trust: TrustPolicy,
    pub endpoint: Endpoint,
    pub platform: Option<Platform>,
    /// Write it here (None: the text is only returned).
    pub output: Option<PathBuf>,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComposeReport {
    pub signature: Signature,
    pub platform: String,
    pub text: String,
    pub written: Option<PathBuf>,
}

pub fn compose(req: &ComposeRequest) -> Result<ComposeReport, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    let (_, decision) = decide_platform(req.platform.as_ref(), None, &req.endpoint)?;
    let selected = select(&reader.index, &decision, &[])?;
    let text = render_for(&reader, &selected)?;
    if let Some(path) = &req.output {
        crate::fsutil::write_bytes(path, text.as_bytes(), req.force, 0o644)?;
    }
    Ok(ComposeReport {
        signature,
        platform: decision.platform.to_string(),
        text,
        written: req.output.clone(),
    })
}

/// The bundle's compose file for the selected images' platforms.
pub fn render_for(reader: &BundleReader, selected: &[Selected]) -> Result<String, Error> {
    let files = reader
        .index
        .compose
        .as_ref()
        .ok_or(compose::ComposeError::NoTemplate)?;
    let platform = selected
        .first()
        .map(|s| s.entry.platform.clone())
        .ok_or(crate::ops::RequestError::NoImages(String::new()))?;
    let chosen = |logical: &str| {
        selected
            .iter()
            .find(|s| s.image.name == logical)
            .map(|s| s.entry.platform.clone())
    };
    let header = compose::header(&reader.index, &platform);
    Ok(compose::render(
        files,
        &compose::Carried::from_index(&reader.index),
        &platform,
        &chosen,
        &header,
    )?)
}
