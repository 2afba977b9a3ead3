//! `docker save` archives (plain, .gz or .zst), possibly holding several images.

use super::container::{decompress, Container};
use super::{familiar_name, parse_config, LayerSink, Source, SourceError, SourceImage};
use crate::digest::Digest;
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

/// A source whose layers are members at known paths (docker-archives, OCI layouts).
pub struct MappedSource {
    pub(super) container: Container,
    pub(super) images: Vec<SourceImage>,
    /// Per image: layer member paths, parallel to its diff_ids.
    pub(super) layer_paths: Vec<Vec<String>>,
}

impl Source for MappedSource {
    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn images_mut(&mut self) -> &mut [SourceImage] {
        &mut self.images
    }

    fn read_layers(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        read_mapped_layers(
            &self.container,
            which.iter().map(|&i| {
                (
                    &self.images[i].diff_ids,
                    self.layer_paths[i].as_slice(),
                    self.images[i].source.as_str(),
                )
            }),
            sink,
        )
    }
}

pub struct DockerArchive;

impl DockerArchive {
    pub fn open(container: Container, label: String) -> Result<MappedSource, SourceError> {
        if !container.exists("manifest.json") {
            return Err(SourceError::Invalid {
                what: label,
                detail: "no manifest.json: not a `docker save` archive (for OCI archives use oci-archive:PATH)".into(),
            });
        }
        let manifest = container.read_metadata("manifest.json")?;
        let entries: Vec<ManifestEntry> =
            serde_json::from_slice(&manifest).map_err(|e| SourceError::Invalid {
                what: label.clone(),
                detail: format!("manifest.json: {e}"),
            })?;
        if entries.is_empty() {
            return Err(SourceError::Invalid {
                what: label,
                detail: "manifest.json lists no image".into(),
            });
        }
        let mut images = Vec::new();
        let mut layer_paths = Vec::new();
        for entry in entries {
            let config_bytes = container.read_metadata(&entry.config)?;
            let tags: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| familiar_name(t))
                .collect();
            let what = match tags.first() {
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
            images.push(SourceImage {
                source: label.clone(),
                tags,
                platform: facts.platform,
                config: Digest::of(&config_bytes),
                config_bytes: Some(config_bytes),
                diff_ids: facts.diff_ids,
                size_hint,
                name: None,
            });
            layer_paths.push(entry.layers);
        }
        Ok(MappedSource {
            container,
            images,
            layer_paths,
        })
    }
}

/// Streams layers whose member path → diff_id mapping is known (archives, layouts):
/// skips what the sink already has without reading it.
fn read_mapped_layers<'a>(
    container: &Container,
    images: impl Iterator<Item = (&'a Vec<Digest>, &'a [String], &'a str)>,
    sink: &mut dyn LayerSink,
) -> Result<(), SourceError> {
    let mut wanted: Vec<String> = Vec::new();
    let mut expected: std::collections::HashMap<String, (Digest, String)> = Default::default();
    for (diff_ids, paths, source) in images {
        for (diff_id, path) in diff_ids.iter().zip(paths) {
            if !expected.contains_key(path) && sink.wants(diff_id) {
                wanted.push(path.clone());
                expected.insert(path.clone(), (diff_id.clone(), source.to_string()));
            }
        }
    }
    let label = container.describe();
    container.visit_members(&wanted, &mut |name, data| {
        let Some((diff_id, _)) = expected.get(name) else {
            return Ok(true);
        };
        // An earlier member may have carried the same content under another name.
        if !sink.wants(diff_id) {
            return Ok(true);
        }
        let mut layer =
            decompress(data).map_err(|e| SourceError::corrupt(std::path::Path::new(&label), e))?;
        sink.layer(&format!("{label}:{name}"), Some(diff_id), &mut layer)?;
        Ok(true)
    })
}
