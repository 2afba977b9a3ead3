//! `docker save` archives (plain, .gz or .zst), possibly holding several images. An
//! archive that also carries an OCI index (Docker 25+ writes both; a containerd-store
//! engine's save of a multi-platform image holds every platform only there) is read by
//! its index, so no platform is silently dropped.

use super::container::Container;
use super::mapped::MappedSource;
use super::{familiar_name, parse_config, SourceError};
use serde::Deserialize;

/// One entry of a docker-archive `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn open(container: Container, label: String) -> Result<MappedSource, SourceError> {
    if container.exists("index.json") && container.exists("oci-layout") {
        let names = repo_tags(&container, &label).unwrap_or_default();
        return super::oci::open_with_names(container, None, label, &names);
    }
    if !container.exists("manifest.json") {
        return Err(SourceError::Invalid {
            what: label,
            detail: "no manifest.json: not a `docker save` archive (for OCI archives use oci-archive:PATH)".into(),
        });
    }
    let entries = manifest(&container, &label)?;
    let mut source = MappedSource {
        container,
        images: Vec::new(),
        layer_paths: Vec::new(),
        absent: Vec::new(),
    };
    for entry in entries {
        let container = &source.container;
        let config_bytes = container.read_metadata(&entry.config)?;
        let names: Vec<String> = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| familiar_name(t))
            .collect();
        let what = match names.first() {
            Some(t) => format!("{label} ({t})"),
            None => format!("{label} ({})", entry.config),
        };
        let facts = parse_config(&what, &config_bytes)?;
        if facts.diff_ids.len() != entry.layers.len() {
            return Err(SourceError::Invalid {
                what,
                detail: format!(
                    "manifest.json lists {} layers but the config has {} diff_ids",
                    entry.layers.len(),
                    facts.diff_ids.len()
                ),
            });
        }
        let size_hint = entry
            .layers
            .iter()
            .filter_map(|l| container.member_size(l))
            .sum();
        source.push_image(
            label.clone(),
            names,
            facts,
            config_bytes,
            entry.layers,
            size_hint,
        );
    }
    Ok(source)
}

fn manifest(container: &Container, label: &str) -> Result<Vec<ManifestEntry>, SourceError> {
    let bytes = container.read_metadata("manifest.json")?;
    let entries: Vec<ManifestEntry> =
        serde_json::from_slice(&bytes).map_err(|e| SourceError::Invalid {
            what: label.to_string(),
            detail: format!("manifest.json: {e}"),
        })?;
    if entries.is_empty() {
        return Err(SourceError::Invalid {
            what: label.to_string(),
            detail: "manifest.json lists no image".into(),
        });
    }
    Ok(entries)
}

/// The tags `manifest.json` gives, when the archive has one.
fn repo_tags(container: &Container, label: &str) -> Option<Vec<String>> {
    if !container.exists("manifest.json") {
        return None;
    }
    let entries = manifest(container, label).ok()?;
    Some(
        entries
            .into_iter()
            .flat_map(|e| e.repo_tags.unwrap_or_default())
            .map(|t| familiar_name(&t))
            .collect(),
    )
}
