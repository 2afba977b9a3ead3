//! The OCI documents archpack writes — image manifests and image indexes — built with
//! oci-spec's types, for the bundle's own OCI layout view and for `push`.

use crate::digest::Digest;
use crate::platform::Platform;
use oci_spec::image::{
    Arch, Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};

/// A descriptor of `size` bytes with `digest`.
pub(crate) fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, digest.to_oci())
}

/// An image manifest's bytes: the config and the layers, in order.
pub(crate) fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> Result<Vec<u8>, String> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| format!("building manifest: {e}"))?;
    serde_json::to_vec(&manifest).map_err(|e| format!("building manifest: {e}"))
}

/// An image index's bytes over `manifests`.
pub(crate) fn index(manifests: Vec<Descriptor>) -> Result<Vec<u8>, String> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| format!("building image index: {e}"))?;
    serde_json::to_vec(&index).map_err(|e| format!("building image index: {e}"))
}

/// The descriptor an image index gives a platform's manifest (`digest`, `size` bytes).
pub(crate) fn platform_manifest(digest: &Digest, size: u64, platform: &Platform) -> Descriptor {
    let mut d = descriptor(MediaType::ImageManifest, digest, size);
    d.set_platform(Some(oci_platform(platform)));
    d
}

fn oci_platform(p: &Platform) -> oci_spec::image::Platform {
    let mut b = PlatformBuilder::default()
        .architecture(Arch::from(p.architecture.as_str()))
        .os(Os::from(p.os.as_str()));
    if let Some(v) = &p.variant {
        b = b.variant(v.clone());
    }
    // Both required fields are set above.
    b.build().unwrap_or_default()
}
