//! `inspect`: what a bundle holds and who signed it, read from its index alone.

use crate::error::Error;
use crate::trust::{self, TrustError, TrustStore};
use archpack_format::BundleReader;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Who signed it, and whether that key is trusted here.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignerStatus {
    pub key_id: String,
    pub trusted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedPlatform {
    pub platform: String,
    pub image_id: String,
    pub manifest: String,
    pub bytes: u64,
    pub layers: usize,
    pub source_tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedImage {
    pub name: String,
    pub index: String,
    pub platforms: Vec<InspectedPlatform>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectedCompose {
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    pub bundle: PathBuf,
    pub name: String,
    pub format: String,
    pub tool: String,
    pub created: String,
    pub bytes: u64,
    pub signed: bool,
    pub signer: Option<SignerStatus>,
    pub shared_bytes: u64,
    pub dedup_saved_bytes: u64,
    pub platforms: Vec<String>,
    pub images: Vec<InspectedImage>,
    pub compose: Option<InspectedCompose>,
    /// Static archpack binaries carried (format 1.1), and the installer.
    pub loaders: Vec<InspectedLoader>,
    /// A delta (format 2.0): what it needs on the target and what it patches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<InspectedDelta>,
    /// A bundle in volumes (format 2.1): each volume, and which a platform needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<InspectedVolumes>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedVolumes {
    /// The size each volume was allowed (none: one file with shared parts).
    pub cap: Option<u64>,
    /// Shared parts (format 2.2): bytes of the single file stored once for several
    /// members.
    pub shared_part_bytes: u64,
    /// The single file `join` writes.
    pub joined_bytes: u64,
    pub files: Vec<InspectedVolume>,
    /// Platform → the volumes a load (or extract) of it reads.
    pub needed_by: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedVolume {
    pub name: String,
    pub bytes: u64,
    pub group: String,
    /// Found beside the one inspected: `present`, `missing`, or what is wrong.
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedDelta {
    /// `name (kind file)` of each base.
    pub made_against: Vec<String>,
    /// Layers the target must hold.
    pub required: Vec<InspectedRequired>,
    pub patches: Vec<InspectedPatch>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedRequired {
    pub diff_id: String,
    /// Uncompressed bytes.
    pub bytes: u64,
    /// The base's images that hold it.
    pub held_by: Vec<String>,
    pub base: String,
    /// This bundle's images that use it.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedPatch {
    pub diff_id: String,
    pub patch_bytes: u64,
    /// The whole layer's blob, as a full bundle would store it.
    pub layer_bytes: u64,
    pub reference: String,
    pub reference_held_by: String,
    pub base: String,
    /// Memory applying it takes (the reference and zstd's window).
    pub memory: u64,
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedLoader {
    pub target: String,
    pub platform: String,
    pub member: String,
    pub bytes: u64,
    pub digest: String,
    pub binary_bytes: u64,
    pub binary_digest: String,
}

pub fn inspect(path: &Path, trust: &TrustStore) -> Result<InspectReport, Error> {
    let reader = BundleReader::open(path)?;
    let index = &reader.index;
    let sizes = index.size_summary();
    Ok(InspectReport {
        bundle: reader.path.clone(),
        name: index.name.clone(),
        format: index.format.clone(),
        tool: index.tool.clone(),
        created: index.created.clone(),
        // Volumes and shared parts: the files written, not the single file they map.
        bytes: reader
            .index
            .volumes
            .as_ref()
            .map_or(reader.file_len, |t| t.files.iter().map(|f| f.size).sum()),
        signed: reader.signature.is_some(),
        signer: signer_status(&reader, trust),
        shared_bytes: sizes.shared_bytes,
        dedup_saved_bytes: sizes.saved_bytes,
        platforms: index.platforms().iter().map(|p| p.to_string()).collect(),
        images: index
            .images
            .iter()
            .map(|image| InspectedImage {
                name: image.name.clone(),
                index: image.index.to_string(),
                platforms: image
                    .platforms
                    .iter()
                    .map(|p| InspectedPlatform {
                        platform: p.platform.to_string(),
                        image_id: p.config.to_string(),
                        manifest: p.manifest.to_string(),
                        bytes: index.entry_bytes(p),
                        layers: p.layers.len(),
                        source_tags: p.source_tags.clone(),
                    })
                    .collect(),
            })
            .collect(),
        compose: index.compose.as_ref().map(|c| InspectedCompose {
            overrides: c.overrides.keys().cloned().collect(),
        }),
        loaders: index
            .loaders
            .iter()
            .flat_map(|l| &l.binaries)
            .map(|b| InspectedLoader {
                target: b.target.clone(),
                platform: b.platform.to_string(),
                member: b.member.name.clone(),
                bytes: b.member.size,
                digest: b.member.digest.to_string(),
                binary_bytes: b.binary_size,
                binary_digest: b.binary_digest.to_string(),
            })
            .collect(),
        delta: inspect_delta(index),
        volumes: inspect_volumes(&reader),
    })
}

fn inspect_volumes(reader: &BundleReader) -> Option<InspectedVolumes> {
    let table = reader.index.volumes.as_ref()?;
    let slots = reader.volume_slots();
    let needed_by = reader
        .index
        .platforms()
        .into_iter()
        .map(|platform| {
            let blobs = super::blobs_read(reader.index.images.iter().flat_map(|image| {
                image
                    .platforms
                    .iter()
                    .filter(|p| p.platform == platform)
                    .map(move |p| (image, p))
            }));
            let names = reader
                .volumes_holding(blobs)
                .into_iter()
                .filter_map(|v| table.files.get(v).map(|f| f.name.clone()))
                .collect();
            (platform.to_string(), names)
        })
        .collect();
    Some(InspectedVolumes {
        cap: table.cap,
        shared_part_bytes: table.shared_bytes(),
        joined_bytes: table.joined.size,
        files: table
            .files
            .iter()
            .enumerate()
            .map(|(v, f)| InspectedVolume {
                name: f.name.clone(),
                bytes: f.size,
                group: f.group.clone(),
                state: slots
                    .get(v)
                    .map(|s| s.state.to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        needed_by,
    })
}

fn inspect_delta(index: &archpack_format::BundleIndex) -> Option<InspectedDelta> {
    let delta = index.delta.as_ref()?;
    let base = |i: usize| {
        delta
            .bases
            .get(i)
            .map(|b| format!("{} ({})", b.name, b.file))
            .unwrap_or_default()
    };
    let used_by = |blob: &archpack_format::Digest| -> Vec<String> {
        index
            .images
            .iter()
            .flat_map(|i| {
                i.platforms
                    .iter()
                    .filter(|p| p.layers.contains(blob))
                    .map(move |p| format!("{} ({})", i.name, p.platform))
            })
            .collect()
    };
    Some(InspectedDelta {
        made_against: delta
            .bases
            .iter()
            .map(|b| {
                let kind = match b.kind {
                    archpack_format::delta::BaseKind::Bundle => "bundle",
                    archpack_format::delta::BaseKind::Inventory => "inventory",
                };
                format!("{} ({kind} {})", b.name, b.file)
            })
            .collect(),
        required: delta
            .required
            .iter()
            .map(|r| InspectedRequired {
                diff_id: r.diff_id.to_string(),
                bytes: r.uncompressed_size,
                held_by: r.holders.clone(),
                base: base(r.base),
                used_by: used_by(&r.digest),
            })
            .collect(),
        patches: delta
            .patches
            .iter()
            .map(|p| InspectedPatch {
                diff_id: p.diff_id.to_string(),
                patch_bytes: index.stored_bytes(&p.digest),
                layer_bytes: p.size,
                reference: p.reference.diff_id.to_string(),
                reference_held_by: p.reference.holder.clone(),
                base: base(p.reference.base),
                memory: p.memory,
                used_by: used_by(&p.digest),
            })
            .collect(),
    })
}

fn signer_status(reader: &BundleReader, store: &TrustStore) -> Option<SignerStatus> {
    let sig = reader.signature.as_deref()?;
    let key_id = trust::signer_key_id(sig).unwrap_or_else(|| "unreadable".into());
    Some(
        match trust::check(&reader.index_bytes, Some(sig), store, false) {
            Ok(_) => SignerStatus {
                key_id,
                trusted: true,
                error: None,
            },
            Err(TrustError::Untrusted { .. }) => SignerStatus {
                key_id,
                trusted: false,
                error: None,
            },
            Err(e) => SignerStatus {
                key_id,
                trusted: false,
                error: Some(e.to_string()),
            },
        },
    )
}
