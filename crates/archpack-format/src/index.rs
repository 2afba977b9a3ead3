//! The bundle index (`archpack-index.json`): archpack's own metadata, first member of
//! every bundle. The signature covers exactly these bytes. See bundle-format/SPEC.md.

use crate::digest::Digest;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const INDEX_MEMBER: &str = "archpack-index.json";
pub const SIGNATURE_MEMBER: &str = "archpack-index.json.minisig";
/// The format of a full bundle. Readers accept the same major and any minor.
pub const FORMAT_MAJOR: u32 = 1;
/// The newest minor of major 1 this archpack writes: 1.1 adds loaders (SPEC §11). A
/// bundle that uses nothing of 1.1 is written as 1.0, byte for byte what 1.0 writers wrote.
pub const FORMAT_MINOR: u32 = 1;
/// Major 2 (SPEC §8, §12): a bundle a 1.x reader would misread. It names what it needs
/// in `requires`; the first such feature is `delta`.
pub const FORMAT_MAJOR_FEATURES: u32 = 2;
/// The features (`requires`) this archpack reads.
pub const KNOWN_FEATURES: &[&str] = &[
    crate::delta::FEATURE_DELTA,
    crate::volumes::FEATURE_VOLUMES,
    crate::volumes::FEATURE_PARTS,
];
/// Where the static archpack binaries a bundle carries live, and the installer.
pub const LOADER_DIR: &str = "archpack-loaders";
pub const INSTALLER_MEMBER: &str = "archpack-install";
pub const FORMAT_PREFIX: &str = "archpack-bundle/";

pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BundleIndex {
    /// `archpack-bundle/MAJOR.MINOR`.
    pub format: String,
    pub name: String,
    /// RFC 3339 UTC; from SOURCE_DATE_EPOCH when set.
    pub created: String,
    /// The tool that wrote it, e.g. `archpack 0.1.0`.
    pub tool: String,
    pub compression: CompressionInfo,
    pub images: Vec<ImageEntry>,
    /// Every member after the index and its signature, in file order.
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeFiles>,
    /// 1.1: static archpack binaries for the bundle's platforms and the script that
    /// installs the right one (SPEC §11). Placed after every member; 1.0 readers skip them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaders: Option<Loaders>,
    /// 2.0: what a reader must understand to read this bundle (SPEC §8); a reader
    /// refuses a bundle that requires a feature it does not know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// 2.0, feature `delta`: the layers this bundle leaves to its target and the ones it
    /// carries as patches (SPEC §12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<crate::delta::Delta>,
    /// 2.1, feature `volumes`: this is the index of one volume of a bundle cut into
    /// several files; where each member's pieces are (SPEC §13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<crate::volumes::VolumeTable>,
}

/// A tar member outside `members` (loaders, the installer): where it is and its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TailMember {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Loaders {
    /// `archpack-install`, a POSIX sh script at the tar's root.
    pub installer: TailMember,
    pub binaries: Vec<LoaderBinary>,
}

/// One static archpack binary, gzip-compressed (busybox can unpack it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoaderBinary {
    /// `amd64`, `arm64`, `arm-v7`, `arm-v6`.
    pub target: String,
    /// The platform it runs on.
    pub platform: Platform,
    /// The `.gz` member.
    #[serde(flatten)]
    pub member: TailMember,
    /// The binary itself, once gunzipped.
    pub binary_digest: Digest,
    pub binary_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompressionInfo {
    pub algorithm: String,
    pub level: i32,
}

/// One logical image (`svc:v1.0`) and its platforms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    pub name: String,
    /// The OCI image index blob for this image.
    pub index: Digest,
    pub platforms: Vec<PlatformEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlatformEntry {
    pub platform: Platform,
    /// The names the user packed it from (`svc:v1.0-arm64`), applied on the target
    /// beside the logical name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_tags: Vec<String>,
    pub manifest: Digest,
    /// Config blob digest = the image ID an engine will report.
    pub config: Digest,
    /// Layer blob digests in manifest order (bottom first).
    pub layers: Vec<Digest>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MemberKind {
    Layer,
    Config,
    Manifest,
    ImageIndex,
    OciLayout,
    OciIndex,
    /// 2.0 (delta): a zstd patch that rebuilds a layer from its reference (SPEC §12).
    LayerPatch,
}

impl MemberKind {
    /// The kind as the index spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberKind::Layer => "layer",
            MemberKind::Config => "config",
            MemberKind::Manifest => "manifest",
            MemberKind::ImageIndex => "image-index",
            MemberKind::OciLayout => "oci-layout",
            MemberKind::OciIndex => "oci-index",
            MemberKind::LayerPatch => "layer-patch",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    pub kind: MemberKind,
    /// Byte offset of the member's data in the file (its tar header is 512 bytes before).
    pub offset: u64,
    pub size: u64,
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
}

/// The compose template and per-platform overrides, as text (YAML).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ComposeFiles {
    pub template: String,
    /// Platform string (`linux/arm64/v8`) → override text.
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
}

impl BundleIndex {
    /// An index with nothing in it (a reader's state before the real one is parsed).
    pub fn empty() -> BundleIndex {
        BundleIndex {
            format: String::new(),
            name: String::new(),
            created: String::new(),
            tool: String::new(),
            compression: CompressionInfo {
                algorithm: String::new(),
                level: 0,
            },
            images: Vec::new(),
            members: Vec::new(),
            compose: None,
            loaders: None,
            requires: Vec::new(),
            delta: None,
            volumes: None,
        }
    }

    /// The newest format this archpack reads and writes.
    pub fn format_string() -> String {
        BundleIndex::format_for(FORMAT_MINOR)
    }

    /// `archpack-bundle/1.MINOR`.
    pub fn format_for(minor: u32) -> String {
        format!("{FORMAT_PREFIX}{FORMAT_MAJOR}.{minor}")
    }

    /// (major, minor) of this index's format, if it names one.
    pub fn format_version(&self) -> Option<(u32, u32)> {
        let v = self.format.strip_prefix(FORMAT_PREFIX)?;
        let (major, minor) = v.split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    }

    pub fn member_by_digest(&self, digest: &Digest) -> Option<&Member> {
        self.members.iter().find(|m| m.digest == *digest)
    }

    pub fn image(&self, name: &str) -> Option<&ImageEntry> {
        self.images.iter().find(|i| i.name == name)
    }

    /// Every distinct platform in the bundle, sorted.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut all: Vec<Platform> = self
            .images
            .iter()
            .flat_map(|i| i.platforms.iter().map(|p| p.platform.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The diff_ids of an entry's layers (every layer has one: the reader checks that
    /// before the index is used).
    pub fn diff_ids_of(&self, entry: &PlatformEntry) -> Option<Vec<Digest>> {
        entry
            .layers
            .iter()
            .map(|l| self.layer(l).map(|l| l.diff_id().clone()))
            .collect()
    }

    /// How the bundle holds the layer blob `digest` that a manifest names: whole, left
    /// to the target (a delta's required layer), or as a patch.
    pub fn layer(&self, digest: &Digest) -> Option<LayerStorage<'_>> {
        if let Some(m) = self
            .member_by_digest(digest)
            .filter(|m| m.kind == MemberKind::Layer)
        {
            if let (Some(diff_id), Some(size)) = (&m.diff_id, m.uncompressed_size) {
                return Some(LayerStorage::Whole {
                    member: m,
                    diff_id,
                    uncompressed_size: size,
                });
            }
            return None;
        }
        let delta = self.delta.as_ref()?;
        if let Some(r) = delta.required.iter().find(|r| r.digest == *digest) {
            return Some(LayerStorage::Required(r));
        }
        let patch = delta.patches.iter().find(|p| p.digest == *digest)?;
        let member = self
            .member_by_digest(&patch.patch)
            .filter(|m| m.kind == MemberKind::LayerPatch)?;
        Some(LayerStorage::Patched { patch, member })
    }

    /// Whether this is a delta bundle (format 2.0 with `delta`).
    pub fn is_delta(&self) -> bool {
        self.delta.is_some()
    }

    /// Bytes the bundle stores for a blob (a patch's bytes for a patched layer, none for
    /// a layer left to the target).
    pub fn stored_bytes(&self, digest: &Digest) -> u64 {
        match self.layer(digest) {
            Some(LayerStorage::Whole { member, .. })
            | Some(LayerStorage::Patched { member, .. }) => member.size,
            Some(LayerStorage::Required(_)) => 0,
            None => self.member_by_digest(digest).map_or(0, |m| m.size),
        }
    }

    /// Blob digests one platform entry needs: config, manifest and layers.
    pub fn blobs_of(entry: &PlatformEntry) -> impl Iterator<Item = &Digest> {
        std::iter::once(&entry.config)
            .chain(std::iter::once(&entry.manifest))
            .chain(entry.layers.iter())
    }
}

/// Where a layer's bytes come from (see [`BundleIndex::layer`]).
#[derive(Debug, Clone, Copy)]
pub enum LayerStorage<'a> {
    /// A layer member: the layer itself, compressed.
    Whole {
        member: &'a Member,
        diff_id: &'a Digest,
        uncompressed_size: u64,
    },
    /// Not in this (delta) bundle: the target holds it.
    Required(&'a crate::delta::RequiredLayer),
    /// Rebuilt from a reference layer the target holds and a patch member.
    Patched {
        patch: &'a crate::delta::LayerPatch,
        member: &'a Member,
    },
}

impl LayerStorage<'_> {
    pub fn diff_id(&self) -> &Digest {
        match self {
            LayerStorage::Whole { diff_id, .. } => diff_id,
            LayerStorage::Required(r) => &r.diff_id,
            LayerStorage::Patched { patch, .. } => &patch.diff_id,
        }
    }

    pub fn uncompressed_size(&self) -> u64 {
        match self {
            LayerStorage::Whole {
                uncompressed_size, ..
            } => *uncompressed_size,
            LayerStorage::Required(r) => r.uncompressed_size,
            LayerStorage::Patched { patch, .. } => patch.uncompressed_size,
        }
    }

    /// The layer blob's size as its manifest gives it (the zstd blob, whole).
    pub fn blob_size(&self) -> u64 {
        match self {
            LayerStorage::Whole { member, .. } => member.size,
            LayerStorage::Required(r) => r.size,
            LayerStorage::Patched { patch, .. } => patch.size,
        }
    }
}

/// The ChainID of each prefix of `diff_ids` (image-spec: ChainID(L0) = DiffID(L0),
/// ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))): how engines name the
/// layer stacks they hold.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What an image config says that the format relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFacts {
    pub platform: Platform,
    pub diff_ids: Vec<Digest>,
}

/// Why bytes are not an image config a bundle can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("not an image config: {0}")]
    NotAConfig(String),
    #[error(
        "not an image config: it has no {0} (a manifest or another document in a config's place?)"
    )]
    Missing(&'static str),
    #[error("a diff_id in rootfs is not a sha256 digest: {0}")]
    BadDiffId(String),
}

/// Reads an image config's platform and `rootfs.diff_ids`. A manifest, an index or any
/// other JSON in a config's place is refused (it has no `rootfs`): an engine could not
/// load it, or would make an empty image of it.
pub fn config_facts(bytes: &[u8]) -> Result<ConfigFacts, ConfigError> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(rename = "type")]
        kind: Option<String>,
        diff_ids: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    struct Config {
        architecture: Option<String>,
        os: Option<String>,
        variant: Option<String>,
        rootfs: Option<RootFs>,
    }
    let config: Config =
        serde_json::from_slice(bytes).map_err(|e| ConfigError::NotAConfig(e.to_string()))?;
    let rootfs = config.rootfs.ok_or(ConfigError::Missing("rootfs"))?;
    if rootfs.kind.as_deref() != Some("layers") {
        return Err(ConfigError::Missing("rootfs.type \"layers\""));
    }
    let diff_ids = rootfs
        .diff_ids
        .unwrap_or_default()
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|_| ConfigError::BadDiffId(d.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let os = config
        .os
        .filter(|o| !o.is_empty())
        .ok_or(ConfigError::Missing("os"))?;
    let arch = config
        .architecture
        .filter(|a| !a.is_empty())
        .ok_or(ConfigError::Missing("architecture"))?;
    Ok(ConfigFacts {
        platform: Platform::new(&os, &arch, config.variant.as_deref()),
        diff_ids,
    })
}

/// RFC 3339 UTC timestamp for a Unix time, without a date crate.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn only_image_configs_pass_for_configs() {
        let d = Digest::of(b"layer");
        let good = format!(
            r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let facts = config_facts(good.as_bytes()).unwrap();
        assert_eq!(facts.platform.to_string(), "linux/arm64/v8");
        assert_eq!(facts.diff_ids, vec![d]);
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(config_facts(manifest), Err(ConfigError::Missing("rootfs")));
        assert!(config_facts(b"[1,2]").is_err());
        let no_arch = r#"{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(
            config_facts(no_arch.as_bytes()),
            Err(ConfigError::Missing("architecture"))
        );
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

/// Sizes for `inspect`: what each platform entry needs, and what dedup saved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SizeSummary {
    /// Bytes of members stored once but used by more than one image/platform.
    pub shared_bytes: u64,
    /// Bytes a bundle without deduplication would have stored on top.
    pub saved_bytes: u64,
}

impl BundleIndex {
    /// Stored bytes one platform entry needs (config, manifest, layers).
    pub fn entry_bytes(&self, entry: &PlatformEntry) -> u64 {
        BundleIndex::blobs_of(entry)
            .map(|d| self.stored_bytes(d))
            .sum()
    }

    pub fn size_summary(&self) -> SizeSummary {
        let mut uses: std::collections::HashMap<&Digest, u64> = Default::default();
        for image in &self.images {
            for p in &image.platforms {
                for l in &p.layers {
                    *uses.entry(l).or_default() += 1;
                }
            }
        }
        let mut s = SizeSummary::default();
        for (digest, n) in uses {
            let size = self.stored_bytes(digest);
            if n > 1 {
                s.shared_bytes += size;
                s.saved_bytes += size * (n - 1);
            }
        }
        s
    }
}
