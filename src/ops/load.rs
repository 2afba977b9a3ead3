//! `load`: verify, decide the platform, plan against what the engine has, stream only
//! what is missing, tag and prove the result; optionally write and start the compose
//! file for this host.

use super::{decide_platform, open_bundle, BundleInput, Signature, TrustPolicy};
use crate::compose::ServiceState;
use crate::deliver::archive::{ExtraLayers, NoExtraLayers};
use crate::deliver::delta::{DeltaLoadSummary, DeltaPlan};
use crate::deliver::engine as deliver;
use crate::docker::{Endpoint, Engine};
use crate::error::Error;
use crate::platform::probe::DecidedBy;
use crate::platform::{select, Platform};
use crate::progress::Progress;
use crate::{fsutil, ops};
use serde::Serialize;
use std::path::PathBuf;

pub struct LoadRequest {
    pub bundle: BundleInput,
    pub trust: TrustPolicy,
    pub endpoint: Endpoint,
    /// Load this platform instead of the detected one.
    pub platform: Option<Platform>,
    /// Only these images (logical names); all when empty.
    pub images: Vec<String>,
    pub dry_run: bool,
    /// Write the compose file for this host here.
    pub compose_out: Option<PathBuf>,
    pub force: bool,
    /// Start the services and wait this many seconds for them to be healthy.
    pub up_timeout: Option<u64>,
    /// Bundles a delta was made against, to take the layers it leaves out from
    /// (`--base`; checked against the same trust as the bundle).
    pub bases: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedImage {
    pub name: String,
    pub platform: String,
    /// The config digest: the image's identity (the image ID on Docker's classic store
    /// and podman).
    pub image_id: String,
    /// The bundle's manifest digest: the image ID on the containerd image store.
    pub manifest_digest: String,
    /// What this engine calls the image (`docker images` shows it).
    pub engine_id: String,
    /// `already present`, `would load`, `loaded`.
    pub status: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub platform: String,
    pub decided_by: DecidedBy,
    pub dry_run: bool,
    /// Who signed the bundle, in words.
    pub signer: String,
    pub signature: Signature,
    pub images: Vec<LoadedImage>,
    pub bytes_to_send: u64,
    pub archive_bytes_sent: u64,
    pub layers_to_send: usize,
    pub layers_present: usize,
    /// `POST /images/load` requests the load makes, and the most of them at once
    /// (images that share only layers already in go side by side).
    pub engine_requests: usize,
    pub concurrent_requests: usize,
    pub bundle_bytes_read: u64,
    /// Why every layer of a missing image is sent, when the engine needs that.
    pub full_uploads: Option<String>,
    /// How the engine stores images (what it reads, what it calls an image).
    pub store: deliver::Store,
    pub free_space: Option<u64>,
    pub space_needed: u64,
    pub engine_root: Option<String>,
    pub compose_file: Option<PathBuf>,
    pub services: Option<Vec<ServiceState>>,
    /// A delta: where the layers it leaves out came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaLoadSummary>,
}

pub fn load(req: &LoadRequest, progress: &dyn Progress) -> Result<LoadReport, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    // A name the bundle lacks is the user's to fix before the engine is asked anything.
    crate::platform::check_image_names(&reader.index, &req.images)?;
    let is_delta = reader.index.is_delta();
    let bases = open_bases(&req.bases, &req.trust, is_delta)?;
    let engine = Engine::connect(&req.endpoint)?;
    let (_, decision) = decide_platform(req.platform.as_ref(), Some(&engine), &req.endpoint)?;
    let selected = select(&reader.index, &decision, &req.images)?;
    ops::require_volumes(&reader, &selected)?;
    // Every name is checked before a byte is sent: a bundle may carry one no engine takes.
    crate::deliver::archive::checked_tags(&selected)
        .map_err(crate::deliver::engine::LoadError::from)?;
    // The compose file is rendered before anything is sent: its errors come first.
    let compose_text = match &req.compose_out {
        Some(path) => {
            fsutil::check_absent(path, req.force)?;
            Some(ops::compose::render_for(&reader, &selected)?)
        }
        None => None,
    };
    let state = deliver::engine_state(&engine, is_delta)?;
    let plan = deliver::plan(&reader, &selected, &state)?;
    // A delta's missing parts are found (or named) before anything is sent.
    let delta_plan = if is_delta {
        Some(DeltaPlan::new(
            &reader,
            &bundle_label(&req.bundle),
            &selected,
            &state,
            &plan.skip,
            &bases,
        )?)
    } else {
        None
    };
    let delta_summary = delta_plan.as_ref().map(|d| d.summary.clone());
    deliver::check_space(&plan, &state)?;
    let mut sent = 0;
    if !req.dry_run {
        let extra = match delta_plan {
            Some(d) => Some(d.gather(
                &req.endpoint,
                &reader,
                &bases,
                reader.index.compression.level,
                progress,
            )?),
            None => None,
        };
        let extra: &(dyn ExtraLayers + Sync) = match &extra {
            Some(d) => d,
            None => &NoExtraLayers,
        };
        let done = deliver::send(&engine, &reader, &selected, &plan, extra, progress)?;
        sent = done.bytes;
        let tagged = deliver::tag_and_check(&engine, state.store, &selected)
            .and_then(|()| deliver::remove_temporary(&engine, &done.temporary));
        crate::deliver::engine::pipeline::load_ended();
        tagged?;
    }
    let mut compose_file = None;
    let mut services = None;
    if let (Some(path), Some(text), false) = (&req.compose_out, &compose_text, req.dry_run) {
        fsutil::write_bytes(path, text.as_bytes(), req.force, 0o644)?;
        progress.note(&format!("wrote {}", path.display()));
        compose_file = Some(path.clone());
        if let Some(timeout) = req.up_timeout {
            let project = crate::compose::project_name(&reader.index.name);
            progress.note(&format!(
                "starting the services of {} and waiting until healthy",
                path.display()
            ));
            services = Some(crate::compose::up(path, &project, timeout, &req.endpoint)?);
        }
    }
    let images = selected
        .iter()
        .map(|s| LoadedImage {
            name: s.image.name.clone(),
            platform: s.entry.platform.to_string(),
            image_id: s.entry.config.to_string(),
            manifest_digest: s.entry.manifest.to_string(),
            engine_id: state.store.image_id(s.entry).to_string(),
            status: match (plan.skip.images.contains(&s.entry.config), req.dry_run) {
                (true, _) => "already present",
                (false, true) => "would load",
                (false, false) => "loaded",
            }
            .to_string(),
            tags: s.tags(),
        })
        .collect();
    Ok(LoadReport {
        platform: decision.platform.to_string(),
        decided_by: decision.decided_by,
        dry_run: req.dry_run,
        signer: signature.to_string(),
        signature,
        images,
        bytes_to_send: plan.bytes_to_send,
        archive_bytes_sent: sent,
        layers_to_send: plan.layers_to_send,
        layers_present: plan.layers_present,
        engine_requests: plan.requests(),
        concurrent_requests: plan.most_at_once(),
        bundle_bytes_read: reader.bytes_read(),
        full_uploads: state.full_uploads().map(String::from),
        store: state.store,
        free_space: plan.free_space,
        space_needed: deliver::space_needed(&plan),
        engine_root: state.root_dir.clone(),
        compose_file,
        services,
        delta: delta_summary,
    })
}

/// The bundle as messages name it.
fn bundle_label(input: &BundleInput) -> String {
    input.label()
}

/// `--base` bundles: trusted as the bundle is; only for a delta.
fn open_bases(
    paths: &[PathBuf],
    trust: &TrustPolicy,
    is_delta: bool,
) -> Result<Vec<archpack_format::BundleReader>, Error> {
    if !paths.is_empty() && !is_delta {
        return Err(crate::error::RequestError::BaseForFullBundle.into());
    }
    paths
        .iter()
        .map(|p| open_bundle(&BundleInput::File(p.clone()), trust).map(|(r, _)| r))
        .collect()
}
