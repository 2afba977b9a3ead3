//! OCI image layouts (`oci:DIR[:REF]`) and OCI archives (`oci-archive:PATH[:REF]`),
//! including multi-platform indexes as `docker buildx --output type=oci` writes them.

use super::container::Container;
use super::docker_archive::MappedSource;
use super::{familiar_name, parse_config, SourceError, SourceImage};
use crate::digest::Digest;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Nested indexes deeper than this are refused (a loop or a hostile layout).
const MAX_INDEX_DEPTH: usize = 4;

/// Reads an OCI layout's index into a [`MappedSource`].
pub struct OciLayout {
    source: MappedSource,
}

impl OciLayout {
    /// `fallback_repo` names images whose ref is a bare tag (umoci writes `v1.0`).
    pub fn open(
        container: Container,
        reference: Option<&str>,
        fallback_repo: &str,
        label: String,
    ) -> Result<MappedSource, SourceError> {
        if !container.exists("index.json") {
            return Err(SourceError::Invalid {
                what: label,
                detail: "no index.json: not an OCI image layout".into(),
            });
        }
        let index: ImageIndex = parse_json(&container, "index.json", &label)?;
        let mut layout = OciLayout {
            source: MappedSource {
                container,
                images: Vec::new(),
                layer_paths: Vec::new(),
            },
        };
        let mut names_seen = Vec::new();
        for desc in index.manifests() {
            let name = descriptor_name(desc, fallback_repo);
            if let Some(n) = &name {
                names_seen.push(n.clone());
            }
            if let Some(want) = reference {
                let matches = name.as_deref().is_some_and(|n| {
                    n == want || familiar_name(want) == *n || ref_annotation(desc) == Some(want)
                });
                if !matches {
                    continue;
                }
            }
            layout.add_descriptor(desc, name, &label, 0)?;
        }
        if layout.source.images.is_empty() {
            return Err(match reference {
                Some(r) => SourceError::NoSuchReference {
                    what: label,
                    reference: r.to_string(),
                    available: if names_seen.is_empty() {
                        "no named images".into()
                    } else {
                        names_seen.join(", ")
                    },
                },
                None => SourceError::Invalid {
                    what: label,
                    detail: "index.json lists no image".into(),
                },
            });
        }
        Ok(layout.source)
    }

    fn add_descriptor(
        &mut self,
        desc: &Descriptor,
        name: Option<String>,
        label: &str,
        depth: usize,
    ) -> Result<(), SourceError> {
        let path = blob_path(desc, label)?;
        if is_index_media_type(desc.media_type()) {
            {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(SourceError::Invalid {
                        what: label.to_string(),
                        detail: "image indexes nested too deeply".into(),
                    });
                }
                let index: ImageIndex = parse_json(&self.source.container, &path, label)?;
                for child in index.manifests() {
                    // Attestation manifests (buildx provenance) are not images.
                    if is_attestation(child) {
                        continue;
                    }
                    self.add_descriptor(child, name.clone(), label, depth + 1)?;
                }
                Ok(())
            }
        } else {
            self.add_manifest(&path, name, label)
        }
    }

    fn add_manifest(
        &mut self,
        path: &str,
        name: Option<String>,
        label: &str,
    ) -> Result<(), SourceError> {
        let manifest: ImageManifest = parse_json(&self.source.container, path, label)?;
        let config_path = blob_path(manifest.config(), label)?;
        let config_bytes = self.source.container.read_metadata(&config_path)?;
        let what = match &name {
            Some(n) => format!("{label} ({n})"),
            None => label.to_string(),
        };
        let config = Digest::of(&config_bytes);
        let declared = Digest::from_oci(manifest.config().digest()).map_err(|error| {
            SourceError::BadDigest {
                what: what.clone(),
                error,
            }
        })?;
        if declared != config {
            return Err(SourceError::Invalid {
                what,
                detail: format!("config blob {declared} does not match its digest (got {config})"),
            });
        }
        let facts = parse_config(&what, &config_bytes)?;
        if facts.diff_ids.len() != manifest.layers().len() {
            return Err(SourceError::Invalid {
                what,
                detail: format!(
                    "manifest lists {} layers but the config has {} diff_ids",
                    manifest.layers().len(),
                    facts.diff_ids.len()
                ),
            });
        }
        let mut paths = Vec::new();
        let mut size_hint = 0;
        for layer in manifest.layers() {
            let p = blob_path(layer, label)?;
            if !self.source.container.exists(&p) {
                return Err(SourceError::MissingMember {
                    container: self.source.container.describe(),
                    member: format!("{p} (layer {} of {what})", layer.digest()),
                });
            }
            size_hint += layer.size();
            paths.push(p);
        }
        self.source.images.push(SourceImage {
            source: label.to_string(),
            tags: name.into_iter().collect(),
            platform: facts.platform,
            config,
            config_bytes: Some(config_bytes),
            diff_ids: facts.diff_ids,
            size_hint,
            name: None,
        });
        self.source.layer_paths.push(paths);
        Ok(())
    }
}

fn is_index_media_type(m: &MediaType) -> bool {
    match m {
        MediaType::ImageIndex => true,
        MediaType::Other(s) => s == "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => false,
    }
}

fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key("vnd.docker.reference.type"))
        || desc
            .platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "unknown")
}

fn ref_annotation(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// The image name a layout gives a top-level descriptor: containerd's full name
/// first, else the OCI ref name (a bare tag is put under `fallback_repo`).
fn descriptor_name(desc: &Descriptor, fallback_repo: &str) -> Option<String> {
    let annotations = desc.annotations().as_ref()?;
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        return Some(familiar_name(full));
    }
    let r = annotations.get(REF_NAME)?;
    if r.contains(':') || r.contains('/') {
        Some(familiar_name(r))
    } else {
        Some(format!("{fallback_repo}:{r}"))
    }
}

fn blob_path(desc: &Descriptor, label: &str) -> Result<String, SourceError> {
    let digest = Digest::from_oci(desc.digest()).map_err(|error| SourceError::BadDigest {
        what: label.to_string(),
        error,
    })?;
    Ok(digest.blob_path())
}

fn parse_json<T: serde::de::DeserializeOwned>(
    container: &Container,
    path: &str,
    label: &str,
) -> Result<T, SourceError> {
    let bytes = container.read_metadata(path)?;
    serde_json::from_slice(&bytes).map_err(|e| SourceError::Invalid {
        what: label.to_string(),
        detail: format!("{path}: {e}"),
    })
}
