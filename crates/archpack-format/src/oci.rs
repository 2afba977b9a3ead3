//! The OCI documents a bundle carries — image manifests, image indexes, the layout's
//! `index.json` — built with oci-spec's types. `push`, `serve` and `extract` build theirs
//! here too, so every document archpack writes has one shape.

use crate::digest::Digest;
use crate::error::FormatError;
use crate::platform::Platform;
use oci_spec::image::{
    Arch, Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};

/// The annotation naming an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's full image name annotation (`docker.io/library/svc:v1.0`).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// `oci-layout`'s whole content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A descriptor of `size` bytes with `digest`.
pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, digest.to_oci())
}

fn build_error(what: &str, e: impl std::fmt::Display) -> FormatError {
    FormatError::Internal(format!("building {what}: {e}"))
}

/// An image manifest's bytes: the config and the layers, in order.
pub fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> Result<Vec<u8>, FormatError> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| build_error("a manifest", e))?;
    canonical_json(&manifest).map_err(|e| build_error("a manifest", e))
}

/// An image index's bytes over `manifests`.
pub fn index(manifests: Vec<Descriptor>) -> Result<Vec<u8>, FormatError> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| build_error("an image index", e))?;
    canonical_json(&index).map_err(|e| build_error("an image index", e))
}

/// JSON with oci-spec's field order and annotations sorted by key: oci-spec keeps
/// annotations in a `HashMap`, whose order would change the bytes (and the digest) from
/// run to run.
fn canonical_json<T: serde::Serialize>(doc: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sort_annotations(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if key == "annotations" {
                        if let serde_json::Value::Object(a) = child {
                            a.sort_keys();
                        }
                    }
                    sort_annotations(child);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(sort_annotations),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(doc)?;
    sort_annotations(&mut value);
    serde_json::to_vec(&value)
}

/// The descriptor an image index gives a platform's manifest (`digest`, `size` bytes).
pub fn platform_manifest(digest: &Digest, size: u64, platform: &Platform) -> Descriptor {
    let mut d = descriptor(MediaType::ImageManifest, digest, size);
    d.set_platform(Some(oci_platform(platform)));
    d
}

/// `d` annotated with the names an OCI layout gives an image: the OCI ref name and, for
/// containerd (`ctr import`, k3s), the full Docker reference.
pub fn named(mut d: Descriptor, ref_name: &str, full_name: Option<&str>) -> Descriptor {
    let mut annotations: std::collections::HashMap<String, String> =
        [(REF_NAME.to_string(), ref_name.to_string())].into();
    if let Some(full) = full_name {
        annotations.insert(CONTAINERD_NAME.to_string(), full.to_string());
    }
    d.set_annotations(Some(annotations));
    d
}

/// oci-spec's platform for ours: no `variant` key at all when there is none.
pub fn oci_platform(p: &Platform) -> oci_spec::image::Platform {
    let mut b = PlatformBuilder::default()
        .architecture(Arch::from(p.architecture.as_str()))
        .os(Os::from(p.os.as_str()));
    if let Some(v) = &p.variant {
        b = b.variant(v.clone());
    }
    // Both required fields are set above.
    b.build().unwrap_or_default()
}
