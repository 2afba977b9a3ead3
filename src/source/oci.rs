//! OCI image layouts (`oci:DIR[:REF]`) and OCI archives (`oci-archive:PATH[:REF]`),
//! including multi-platform indexes as `docker buildx --output type=oci` writes them,
//! and the OCI index inside a Docker 25+ `docker save`.
//!
//! An index may name platforms whose blobs are not there (a containerd-store engine's
//! save after a single-platform pull): those are listed as absent, not an error; a
//! platform that is asked for must be complete (the create plan decides).

use super::container::Container;
use super::mapped::MappedSource;
use super::{familiar_name, parse_config, AbsentImage, SourceError};
use crate::digest::Digest;
use crate::platform::Platform;
use archpack_format::oci::{CONTAINERD_NAME, REF_NAME};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

/// Nested indexes deeper than this are refused (a loop or a hostile layout).
const MAX_INDEX_DEPTH: usize = 4;

pub fn open(
    container: Container,
    reference: Option<&str>,
    label: String,
) -> Result<MappedSource, SourceError> {
    open_with_names(container, reference, label, &[])
}

/// `fallback_names` name images whose descriptors carry no full name (a docker-archive's
/// `RepoTags` beside its OCI index).
pub fn open_with_names(
    container: Container,
    reference: Option<&str>,
    label: String,
    fallback_names: &[String],
) -> Result<MappedSource, SourceError> {
    if !container.exists("index.json") {
        return Err(SourceError::Invalid {
            what: label,
            detail: "no index.json: not an OCI image layout".into(),
        });
    }
    let index: ImageIndex = parse_json(&container, "index.json", &label)?;
    let mut layout = Layout {
        source: MappedSource {
            container,
            images: Vec::new(),
            layer_paths: Vec::new(),
            absent: Vec::new(),
        },
        label: label.clone(),
    };
    let mut names_seen = Vec::new();
    let single = index.manifests().len() == 1;
    for desc in index.manifests() {
        let mut name = descriptor_name(desc);
        if name.is_none() && single && fallback_names.len() == 1 {
            name = Some(fallback_names[0].clone());
        }
        let shown = name
            .clone()
            .or_else(|| ref_annotation(desc).map(String::from));
        if let Some(n) = &shown {
            names_seen.push(n.clone());
        }
        if let Some(want) = reference {
            let matches = name.as_deref() == Some(familiar_name(want).as_str())
                || ref_annotation(desc) == Some(want);
            if !matches {
                continue;
            }
        }
        layout.add_descriptor(desc, name, 0, true)?;
    }
    if layout.source.images.is_empty() {
        if let (Some(first), None) = (layout.source.absent.first(), reference) {
            return Err(SourceError::Invalid {
                what: label,
                detail: format!(
                    "no image in it is complete: {} ({})",
                    first.platform, first.missing
                ),
            });
        }
        return Err(match reference {
            Some(r) if layout.source.absent.is_empty() => SourceError::NoSuchReference {
                what: label,
                reference: r.to_string(),
                available: if names_seen.is_empty() {
                    "no named images".into()
                } else {
                    names_seen.join(", ")
                },
            },
            Some(_) => {
                let a = &layout.source.absent[0];
                SourceError::Invalid {
                    what: label,
                    detail: format!("{} is incomplete: {}", a.platform, a.missing),
                }
            }
            None => SourceError::Invalid {
                what: label,
                detail: "index.json lists no image".into(),
            },
        });
    }
    Ok(layout.source)
}

struct Layout {
    source: MappedSource,
    label: String,
}

impl Layout {
    /// Adds the image(s) `desc` names. Below an index, an image whose blobs are missing
    /// is recorded as absent; at the top it is an error.
    fn add_descriptor(
        &mut self,
        desc: &Descriptor,
        name: Option<String>,
        depth: usize,
        top: bool,
    ) -> Result<(), SourceError> {
        let path = blob_path(desc, &self.label)?;
        if !is_index_media_type(desc.media_type()) {
            return match self.add_manifest(&path, name.clone()) {
                Err(SourceError::MissingMember { member, .. }) if !top => {
                    let platform = desc
                        .platform()
                        .as_ref()
                        .map(|p| {
                            Platform::new(
                                &p.os().to_string(),
                                &p.architecture().to_string(),
                                p.variant().as_deref(),
                            )
                        })
                        .unwrap_or_else(|| Platform::new("unknown", "unknown", None));
                    self.source.absent.push(AbsentImage {
                        source: self.label.clone(),
                        names: name.into_iter().collect(),
                        platform,
                        missing: format!("missing {member}"),
                    });
                    Ok(())
                }
                other => other,
            };
        }
        if depth >= MAX_INDEX_DEPTH {
            return Err(SourceError::Invalid {
                what: self.label.clone(),
                detail: "image indexes nested too deeply".into(),
            });
        }
        let index: ImageIndex = parse_json(&self.source.container, &path, &self.label)?;
        for child in index.manifests() {
            // Attestation manifests (buildx provenance) are not images.
            if is_attestation(child) {
                continue;
            }
            self.add_descriptor(child, name.clone(), depth + 1, false)?;
        }
        Ok(())
    }

    fn add_manifest(&mut self, path: &str, name: Option<String>) -> Result<(), SourceError> {
        let label = self.label.clone();
        let container = &self.source.container;
        if !container.exists(path) {
            return Err(SourceError::MissingMember {
                container: container.describe(),
                member: format!("{path} (a manifest)"),
            });
        }
        let manifest: ImageManifest = parse_json(container, path, &label)?;
        let config_path = blob_path(manifest.config(), &label)?;
        if !container.exists(&config_path) {
            return Err(SourceError::MissingMember {
                container: container.describe(),
                member: format!("{config_path} (the config of manifest {path})"),
            });
        }
        let config_bytes = container.read_metadata(&config_path)?;
        let what = match &name {
            Some(n) => format!("{label} ({n})"),
            None => label.clone(),
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
            let p = blob_path(layer, &label)?;
            if !container.exists(&p) {
                return Err(SourceError::MissingMember {
                    container: container.describe(),
                    member: format!("{p} (layer {} of {what})", layer.digest()),
                });
            }
            size_hint += layer.size();
            paths.push(p);
        }
        self.source.push_image(
            label,
            name.into_iter().collect(),
            facts,
            config_bytes,
            paths,
            size_hint,
        );
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

/// The image name a layout gives a top-level descriptor: containerd's full name, else
/// an OCI ref name that is a whole reference (`svc:v1.0`). A bare tag (`v1.0`, as umoci
/// writes) names no image: a directory name is never made into one.
fn descriptor_name(desc: &Descriptor) -> Option<String> {
    let annotations = desc.annotations().as_ref()?;
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        return Some(familiar_name(full));
    }
    let r = annotations.get(REF_NAME)?;
    (r.contains(':') || r.contains('/')).then(|| familiar_name(r))
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
