//! `verify`: the signature, then every member of a bundle against its index (layers
//! decompressed and checked, configs checked to be image configs). A volume named alone
//! is checked alone; the whole set (its name without a number, or every volume) is
//! checked as the one bundle it is.

use super::{open_bundle, BundleInput, Signature, TrustPolicy};
use crate::error::Error;
use crate::progress::Progress;
use archpack_format::volumes::VolumeState;
use serde::Serialize;
use std::path::PathBuf;

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
    /// A bundle in volumes: each volume and what became of it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VerifiedVolume>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedVolume {
    pub name: String,
    pub path: PathBuf,
    /// `verified`, or (not asked for) `present`, `missing`, or what is wrong with it.
    pub status: String,
    pub group: String,
}

pub fn verify(req: &VerifyRequest, progress: &dyn Progress) -> Result<VerifyReport, Error> {
    let (reader, signature) = open_bundle(&req.bundle, &req.trust)?;
    let slots = reader.volume_slots();
    if slots.is_empty() {
        let checked = reader.verify(progress)?;
        return Ok(VerifyReport {
            signature,
            members: checked.members,
            bytes: checked.bytes,
            volumes: Vec::new(),
        });
    }
    let named: Vec<PathBuf> = match &req.bundle {
        BundleInput::File(p) => vec![p.clone()],
        BundleInput::Volumes(p, more) => std::iter::once(p.clone()).chain(more.clone()).collect(),
        BundleInput::Stdin => Vec::new(),
    };
    let asked: Vec<usize> = if reader.opened_whole_set() {
        (0..slots.len()).collect()
    } else {
        (0..slots.len())
            .filter(|&v| named.iter().any(|p| same_file(p, &slots[v].path)))
            .collect()
    };
    let groups: Vec<String> = reader
        .index
        .volumes
        .iter()
        .flat_map(|t| t.files.iter().map(|f| f.group.clone()))
        .collect();
    let (members, bytes) = if asked.len() == slots.len() {
        // The whole set: every member read through the volumes, as one bundle.
        reader.require_every_volume()?;
        let checked = reader.verify(progress)?;
        (checked.members, checked.bytes)
    } else {
        let mut totals = (0, 0);
        for &v in &asked {
            let checked = reader.verify_volume(v, progress)?;
            totals.0 += checked.members;
            totals.1 += checked.bytes;
        }
        totals
    };
    let volumes = slots
        .iter()
        .enumerate()
        .map(|(v, s)| VerifiedVolume {
            name: s.name.clone(),
            path: s.path.clone(),
            status: if asked.contains(&v) {
                "verified".to_string()
            } else {
                match &s.state {
                    VolumeState::Present => "present (not checked)".to_string(),
                    other => other.to_string(),
                }
            },
            group: groups.get(v).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(VerifyReport {
        signature,
        members,
        bytes,
        volumes,
    })
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
