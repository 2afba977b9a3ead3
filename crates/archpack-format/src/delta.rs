//! Delta bundles (format 2.0, feature `delta`; SPEC §12): a bundle made against what a
//! site already holds. A layer the base holds is left out and recorded as *required on
//! the target*; a layer that changed from one the base holds may be stored as a zstd
//! patch against that predecessor's uncompressed tar (zstd's `--patch-from`: the
//! predecessor is the decoder's reference prefix, so the decoder holds it in memory).
//!
//! The manifests and configs of a delta are exactly those of the full bundle: a layer's
//! blob is named by the digest of its whole zstd blob, wherever its bytes come from.

use crate::codec::decoder;
use crate::digest::Digest;
use crate::error::FormatError;
use crate::index::{BundleIndex, LayerStorage, Member};
use crate::inventory::Inventory;
use crate::limits::MAX_WINDOW_LOG;
use crate::platform::Platform;
use crate::progress::Silent;
use crate::reader::BundleReader;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};

pub const FEATURE_DELTA: &str = "delta";

/// The default cap on a patch's reference (`create --patch-max-ref`): applying a patch
/// holds the reference and a window of up to the layer's size (about twice the
/// reference for a layer that changed a little), and 40 MiB keeps that within the 64
/// MiB a load otherwise stays under plus the reference (measured: scripts/bench.sh).
pub const DEFAULT_PATCH_MAX_REFERENCE: u64 = 40 << 20;
/// The largest reference a patch may have: its window must reach back over the whole
/// reference, and windows stop at 2^27 bytes (SPEC §4).
pub const MAX_PATCH_REFERENCE: u64 = 96 << 20;

/// What a delta leaves to its target and what it patches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// What it was made against, in the order given to `create --base`.
    pub bases: Vec<DeltaBase>,
    /// Layers the target must hold, in bundle order of first use.
    #[serde(default)]
    pub required: Vec<RequiredLayer>,
    /// Layers carried as patches, in file order of their patch members.
    #[serde(default)]
    pub patches: Vec<LayerPatch>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BaseKind {
    Bundle,
    Inventory,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaBase {
    pub kind: BaseKind,
    /// A bundle's name, or an inventory's.
    pub name: String,
    /// The file it was read from (its name only).
    pub file: String,
    /// A bundle's index member digest, or the inventory file's digest.
    pub digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequiredLayer {
    /// The layer's whole zstd blob, as the manifests name it.
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// The first base that holds it (an index into `bases`).
    pub base: usize,
    /// Images of that base that hold it (`svc:v1.0 (linux/arm64/v8)`), at most a few.
    pub holders: Vec<String>,
    /// Manifests of base bundles that name this blob: an engine that holds one of
    /// them whole (the containerd image store) holds the blob itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerPatch {
    /// The rebuilt layer's whole zstd blob, as the manifests name it.
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// The `layer-patch` member.
    pub patch: Digest,
    pub reference: PatchReference,
    /// log2 of the patch frame's window (at most 27).
    pub window_log: u32,
    /// Bytes a decoder holds to apply it: the reference and the window.
    pub memory: u64,
}

/// The layer a patch applies to: the target holds it (or a base bundle given at load).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PatchReference {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub base: usize,
    /// The base's image that holds it.
    pub holder: String,
}

/// The window a patch against a `reference`-byte predecessor uses: enough to reach back
/// over the reference (and an eighth more, for content that moved), at least 1 MiB.
pub fn patch_window_log(reference: u64) -> u32 {
    let reach = reference + reference / 8 + (1 << 20);
    let log = 64 - (reach - 1).leading_zeros();
    log.clamp(20, MAX_WINDOW_LOG)
}

/// What applying a patch holds in memory: the reference, and zstd's window (the
/// frame names its content size, so the window is at most the layer).
pub fn patch_memory(reference: u64, window_log: u32, size: u64) -> u64 {
    reference + (1u64 << window_log).min(size)
}

/// A patch encoder: `reference` as zstd's prefix, long-distance matching over the
/// window, single-threaded (its bytes depend on nothing but the inputs), the content
/// size in the frame header.
pub fn patch_encoder<'r, W: Write>(
    sink: W,
    level: i32,
    reference: &'r [u8],
    window_log: u32,
    size: u64,
) -> io::Result<zstd::stream::write::Encoder<'r, W>> {
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(sink, level, reference)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(window_log)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(size))?;
    Ok(encoder)
}

/// Decodes a patch against its reference; windows up to the format's 2^27.
pub fn patch_decoder<'r, R: Read>(
    inner: R,
    reference: &'r [u8],
) -> io::Result<zstd::stream::read::Decoder<'r, io::BufReader<R>>> {
    let mut decoder =
        zstd::stream::read::Decoder::with_ref_prefix(io::BufReader::new(inner), reference)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    Ok(decoder)
}

/// The repository part of an image name (`corp/svc:v1.1` → `corp/svc`): what makes two
/// releases "the same logical image".
pub fn repository_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').map_or(0, |s| s + 1) => &name[..colon],
        _ => name,
    }
}

/// A layer a base holds.
#[derive(Debug, Clone)]
pub struct HeldLayer {
    pub base: usize,
    /// Its zstd blob (digest, size), where a base bundle stores or names it.
    pub blob: Option<(Digest, u64)>,
    pub uncompressed_size: Option<u64>,
    pub holders: Vec<String>,
    pub manifests: Vec<Digest>,
}

/// A layer of a base bundle that a patch may use as its reference.
#[derive(Debug, Clone)]
pub struct ReferenceLayer {
    bundle: usize,
    pub base: usize,
    pub platform: Platform,
    repository: String,
    position: usize,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub holder: String,
    member: Member,
}

/// Paths of a layer tar and their sizes: what "shared content" is measured by.
pub type Listing = HashMap<String, u64>;

/// Most holders a required layer names (the index stays small).
const MAX_HOLDERS: usize = 3;

/// Everything `create --base` was given: what the target holds, and the bundles whose
/// layers patches may refer to.
#[derive(Default)]
pub struct DeltaBases {
    pub bases: Vec<DeltaBase>,
    /// An inventory's layers: the site holds them whatever platform it loads.
    held_anywhere: HashMap<Digest, HeldLayer>,
    /// A base bundle's layers, per platform: a site loaded only its own platform.
    held_for: HashMap<Platform, HashMap<Digest, HeldLayer>>,
    bundles: Vec<BundleReader>,
    references: Vec<ReferenceLayer>,
    listings: RefCell<HashMap<usize, Listing>>,
}

impl DeltaBases {
    pub fn new() -> DeltaBases {
        DeltaBases::default()
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// An inventory: its layers are held on the target, for every platform.
    pub fn add_inventory(&mut self, file: &str, digest: Digest, inventory: &Inventory) {
        let base = self.bases.len();
        self.bases.push(DeltaBase {
            kind: BaseKind::Inventory,
            name: inventory.name.clone(),
            file: file.to_string(),
            digest,
        });
        for (diff_id, holders) in inventory.holders() {
            let held = self
                .held_anywhere
                .entry(diff_id.clone())
                .or_insert_with(|| HeldLayer {
                    base,
                    blob: None,
                    uncompressed_size: None,
                    holders: Vec::new(),
                    manifests: Vec::new(),
                });
            for h in holders {
                if held.holders.len() < MAX_HOLDERS && !held.holders.contains(&h) {
                    held.holders.push(h);
                }
            }
        }
    }

    /// A previous bundle (full or delta): the layers of each of its platforms are held
    /// by a target that loaded it; its whole layers can be patch references.
    pub fn add_bundle(&mut self, file: &str, reader: BundleReader) {
        let base = self.bases.len();
        let bundle = self.bundles.len();
        let index = &reader.index;
        self.bases.push(DeltaBase {
            kind: BaseKind::Bundle,
            name: index.name.clone(),
            file: file.to_string(),
            digest: Digest::of(&reader.index_bytes),
        });
        for image in &index.images {
            let repository = repository_of(&image.name).to_string();
            for p in &image.platforms {
                let holder = format!("{} ({})", image.name, p.platform);
                let held_here = self.held_for.entry(p.platform.clone()).or_default();
                for (position, blob) in p.layers.iter().enumerate() {
                    let Some(storage) = index.layer(blob) else {
                        continue;
                    };
                    let held = held_here
                        .entry(storage.diff_id().clone())
                        .or_insert_with(|| HeldLayer {
                            base,
                            blob: Some((blob.clone(), storage.blob_size())),
                            uncompressed_size: Some(storage.uncompressed_size()),
                            holders: Vec::new(),
                            manifests: Vec::new(),
                        });
                    if held.holders.len() < MAX_HOLDERS && !held.holders.contains(&holder) {
                        held.holders.push(holder.clone());
                    }
                    if held.blob.as_ref().map(|(d, _)| d) == Some(blob)
                        && !held.manifests.contains(&p.manifest)
                    {
                        held.manifests.push(p.manifest.clone());
                    }
                    if let LayerStorage::Whole {
                        member,
                        diff_id,
                        uncompressed_size,
                    } = storage
                    {
                        self.references.push(ReferenceLayer {
                            bundle,
                            base,
                            platform: p.platform.clone(),
                            repository: repository.clone(),
                            position,
                            diff_id: diff_id.clone(),
                            uncompressed_size,
                            holder: holder.clone(),
                            member: member.clone(),
                        });
                    }
                }
            }
        }
        self.bundles.push(reader);
    }

    /// Whether (and how) a target of `platform` holds the layer `diff_id`.
    pub fn held(&self, platform: &Platform, diff_id: &Digest) -> Option<&HeldLayer> {
        self.held_for
            .get(platform)
            .and_then(|m| m.get(diff_id))
            .or_else(|| self.held_anywhere.get(diff_id))
    }

    /// The predecessor of the layer at `position` of `logical` (same repository and
    /// platform, same position), if a base bundle has it whole and it fits `max`.
    pub fn positional_reference(
        &self,
        logical: &str,
        platform: &Platform,
        position: usize,
        diff_id: &Digest,
        max: u64,
    ) -> Option<&ReferenceLayer> {
        let repository = repository_of(logical);
        self.references.iter().find(|r| {
            r.repository == repository
                && r.platform == *platform
                && r.position == position
                && r.diff_id != *diff_id
                && r.uncompressed_size <= max
        })
    }

    /// The base layer of `platform` (within `max`) that shares the most content with a
    /// layer of `listing`: the bytes of paths both hold. None shares any: none.
    pub fn most_shared_reference(
        &self,
        platform: &Platform,
        listing: &Listing,
        max: u64,
    ) -> Result<Option<&ReferenceLayer>, FormatError> {
        let mut best: Option<(u64, &ReferenceLayer)> = None;
        let mut seen = std::collections::HashSet::new();
        for (i, r) in self.references.iter().enumerate() {
            if r.platform != *platform || r.uncompressed_size > max || !seen.insert(&r.diff_id) {
                continue;
            }
            if !self.listings.borrow().contains_key(&i) {
                let bundle = &self.bundles[r.bundle];
                let layer = bundle
                    .layer_reader(&r.member, &Silent)
                    .map_err(|f| reference_error(bundle, &r.member, f.to_string()))?;
                self.listings.borrow_mut().insert(i, listing_of(layer));
            }
            let listings = self.listings.borrow();
            let theirs = &listings[&i];
            let shared: u64 = listing
                .iter()
                .filter_map(|(path, size)| theirs.get(path).map(|s| (*s).min(*size).max(1)))
                .sum();
            if shared > 0 && best.is_none_or(|(b, _)| shared > b) {
                best = Some((shared, r));
            }
        }
        Ok(best.map(|(_, r)| r))
    }

    /// A reference layer's uncompressed bytes, checked against its diff_id.
    pub fn read_reference(&self, r: &ReferenceLayer) -> Result<Vec<u8>, FormatError> {
        let bundle = &self.bundles[r.bundle];
        let mut layer = bundle
            .layer_reader(&r.member, &Silent)
            .map_err(|f| reference_error(bundle, &r.member, f.to_string()))?;
        let mut bytes = Vec::with_capacity(r.uncompressed_size as usize);
        layer
            .read_to_end(&mut bytes)
            .map_err(|e| reference_error(bundle, &r.member, e.to_string()))?;
        Ok(bytes)
    }

    /// The longest holder text any layer could be given (the writer reserves room).
    pub fn longest_holder(&self) -> usize {
        self.references
            .iter()
            .map(|r| r.holder.len())
            .chain(
                self.held_anywhere
                    .values()
                    .chain(self.held_for.values().flat_map(|m| m.values()))
                    .flat_map(|h| h.holders.iter().map(|s| s.len())),
            )
            .max()
            .unwrap_or(0)
    }
}

fn reference_error(bundle: &BundleReader, member: &Member, detail: String) -> FormatError {
    FormatError::CorruptLayer {
        path: bundle.path.clone(),
        member: member.name.clone(),
        detail,
    }
}

/// The regular files of a layer tar and their sizes (the data is read through). A
/// heuristic for choosing a reference: what cannot be parsed (a tar cut short, an odd
/// header) ends the listing, it does not fail it.
pub fn listing_of<R: Read>(layer: R) -> Listing {
    let mut out = Listing::new();
    let mut archive = tar::Archive::new(layer);
    let Ok(entries) = archive.entries() else {
        return out;
    };
    for entry in entries {
        let Ok(entry) = entry else {
            break;
        };
        if entry.header().entry_type().is_file() {
            if let Ok(path) = entry.path() {
                out.insert(path.to_string_lossy().into_owned(), entry.size());
            }
        }
    }
    out
}

/// Rebuilds a patched layer's uncompressed tar: `patch` (the member's bytes) decoded
/// against `reference`. The caller checks the result against the patch's diff_id.
pub fn apply_patch<'r, R: Read + 'r>(patch: R, reference: &'r [u8]) -> io::Result<impl Read + 'r> {
    patch_decoder(patch, reference)
}

/// Decompresses a whole layer blob (for a listing or a patch's input).
pub fn decompress_layer<'a, R: Read + 'a>(blob: R) -> io::Result<impl Read + 'a> {
    decoder(blob)
}

impl BundleIndex {
    /// What a delta requires of its target and patches, per platform entry (for
    /// `inspect`): (required layers, patched layers).
    pub fn delta_counts(&self, entry: &crate::index::PlatformEntry) -> (usize, usize) {
        let mut required = 0;
        let mut patched = 0;
        for l in &entry.layers {
            match self.layer(l) {
                Some(LayerStorage::Required(_)) => required += 1,
                Some(LayerStorage::Patched { .. }) => patched += 1,
                _ => {}
            }
        }
        (required, patched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        assert_eq!(repository_of("svc:v1.1"), "svc");
        assert_eq!(repository_of("corp/svc:v1"), "corp/svc");
        assert_eq!(repository_of("reg:5000/corp/svc"), "reg:5000/corp/svc");
        assert_eq!(repository_of("reg:5000/svc:v2"), "reg:5000/svc");
        assert_eq!(repository_of("svc@sha256:abc"), "svc");
    }

    #[test]
    fn windows_reach_over_the_reference() {
        assert_eq!(patch_window_log(0), 20);
        assert_eq!(patch_window_log(16 << 20), 25);
        assert!(1u64 << patch_window_log(38 << 20) >= (38 << 20) + (38 << 17));
        assert_eq!(patch_window_log(MAX_PATCH_REFERENCE), MAX_WINDOW_LOG);
        const {
            assert!(
                (1u64 << MAX_WINDOW_LOG)
                    >= MAX_PATCH_REFERENCE + MAX_PATCH_REFERENCE / 8 + (1 << 20)
            )
        };
    }

    #[test]
    fn a_patch_rebuilds_its_layer_and_is_small() {
        let mut reference = Vec::new();
        let mut x: u32 = 1;
        for _ in 0..(2 << 20) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            reference.push((x >> 16) as u8);
        }
        let mut changed = reference.clone();
        for b in changed.iter_mut().skip(1000).step_by(4096).take(50) {
            *b ^= 0xff;
        }
        let wl = patch_window_log(reference.len() as u64);
        let mut encoder =
            patch_encoder(Vec::new(), 3, &reference, wl, changed.len() as u64).unwrap();
        encoder.write_all(&changed).unwrap();
        let patch = encoder.finish().unwrap();
        assert!(patch.len() < 20_000, "patch of {} bytes", patch.len());
        let mut rebuilt = Vec::new();
        apply_patch(&patch[..], &reference)
            .unwrap()
            .read_to_end(&mut rebuilt)
            .unwrap();
        assert_eq!(rebuilt, changed);
        // Against another reference it does not rebuild the layer.
        let other = vec![0u8; reference.len()];
        let mut wrong = Vec::new();
        let result = apply_patch(&patch[..], &other)
            .unwrap()
            .read_to_end(&mut wrong);
        assert!(result.is_err() || wrong != changed);
    }
}
