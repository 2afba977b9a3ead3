//! `platform`: what this host can run, why, and which of a bundle's platforms it would
//! load.

use super::decide_platform;
use crate::docker::Endpoint;
use crate::error::Error;
use crate::platform::probe::{self, best_match, DecidedBy, EngineFacts, ProbeInputs};
use crate::platform::{Platform, PlatformChoiceError};
use archpack_format::BundleReader;
use serde::Serialize;
use std::path::PathBuf;

pub struct PlatformRequest {
    pub endpoint: Endpoint,
    pub platform: Option<Platform>,
    pub bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    pub kernel: Option<String>,
    pub engine: Option<EngineFacts>,
    pub engine_error: Option<String>,
    pub userland: Option<String>,
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformReport {
    pub platform: String,
    pub decided_by: DecidedBy,
    pub compatible: Vec<String>,
    pub notes: Vec<String>,
    pub inputs: Option<ProbeReport>,
    pub bundle_platform: Option<String>,
}

pub fn platform(req: &PlatformRequest) -> Result<PlatformReport, Error> {
    let (inputs, decision) = decide_platform(req.platform.as_ref(), None, &req.endpoint)?;
    let bundle_platform = match &req.bundle {
        Some(path) => {
            let reader = BundleReader::open(path)?;
            Some(
                best_match(&decision, &reader.index.platforms())
                    .map_err(PlatformChoiceError::from)?
                    .to_string(),
            )
        }
        None => None,
    };
    Ok(PlatformReport {
        platform: decision.platform.to_string(),
        decided_by: decision.decided_by,
        compatible: decision.compatible.iter().map(|p| p.to_string()).collect(),
        notes: decision.notes.clone(),
        inputs: inputs.as_ref().map(probe_report),
        bundle_platform,
    })
}

fn probe_report(i: &ProbeInputs) -> ProbeReport {
    ProbeReport {
        kernel: i.kernel.clone(),
        engine: i.engine.clone(),
        engine_error: i.engine_error.clone(),
        userland: i.userland.map(|e| e.to_string()),
        cpu: probe::cpu_summary(i),
    }
}
