//! The inventory (`archpack inventory`): what one engine holds — its images, their
//! layers by diff_id and chain, and the platform a load there would choose — so that a
//! build host can make a delta bundle for it (`create --base INVENTORY`). Small (a few
//! KiB per hundred images) and deterministic: the same engine state gives the same
//! bytes. See bundle-format/SPEC.md §12.

use crate::digest::Digest;
use crate::index::chain_ids;
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const INVENTORY_PREFIX: &str = "archpack-inventory/";
pub const INVENTORY_FORMAT: &str = "archpack-inventory/1.0";
/// An inventory is read into memory whole: bounded like an index.
pub const MAX_INVENTORY_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// `archpack-inventory/1.0`.
    pub format: String,
    /// What the site calls itself (`--name`, default the output file's stem).
    pub name: String,
    pub engine: InventoryEngine,
    /// The platform `archpack load` chooses on that engine.
    pub platform: Platform,
    /// Sorted by image ID.
    pub images: Vec<InventoryImage>,
    /// Every layer the engine holds, as (diff_id, chain): sorted, each pair once.
    pub layers: Vec<InventoryLayer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEngine {
    /// `classic` (Docker's graphdriver store), `containerd` (Docker's containerd image
    /// store) or `podman`.
    pub store: String,
    /// The engine's version as it reports it.
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryImage {
    /// The engine's image ID: the config digest (classic store, podman) or the manifest
    /// or index digest (containerd store).
    pub id: Digest,
    /// The config digest, where the engine's ID is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Digest>,
    /// The manifest (or index) digest, where the engine names the image by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    /// Sorted.
    #[serde(default)]
    pub tags: Vec<String>,
    pub platform: Platform,
    /// Bottom first.
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct InventoryLayer {
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// Why bytes are not an inventory this archpack reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("not an archpack inventory: {0}")]
    NotAnInventory(String),
    #[error("inventory format {0} is newer than this archpack reads ({INVENTORY_FORMAT}); upgrade archpack")]
    Newer(String),
    #[error("the inventory is inconsistent: {0}")]
    Inconsistent(String),
}

impl Inventory {
    /// An inventory of `images`, in its canonical order with its layer list derived.
    pub fn new(
        name: String,
        engine: InventoryEngine,
        platform: Platform,
        mut images: Vec<InventoryImage>,
    ) -> Inventory {
        for image in &mut images {
            image.tags.sort();
            image.tags.dedup();
        }
        images.sort_by(|a, b| a.id.cmp(&b.id));
        images.dedup_by(|a, b| a.id == b.id);
        let layers = layers_of(&images);
        Inventory {
            format: INVENTORY_FORMAT.to_string(),
            name,
            engine,
            platform,
            images,
            layers,
        }
    }

    /// Canonical JSON (pretty, sorted as built, ending in a newline).
    pub fn render(&self) -> Vec<u8> {
        // Plain structs of strings and numbers always serialise.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses and checks an inventory: a known format, and layers that are what its
    /// images say.
    pub fn parse(bytes: &[u8]) -> Result<Inventory, InventoryError> {
        let probe: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| InventoryError::NotAnInventory(format!("not JSON: {e}")))?;
        let format = probe
            .get("format")
            .and_then(|f| f.as_str())
            .unwrap_or_default()
            .to_string();
        let Some(version) = format.strip_prefix(INVENTORY_PREFIX) else {
            return Err(InventoryError::NotAnInventory(format!(
                "format {format:?}, not {INVENTORY_FORMAT}"
            )));
        };
        if version.split('.').next() != Some("1") {
            return Err(InventoryError::Newer(format));
        }
        let inventory: Inventory = serde_json::from_value(probe)
            .map_err(|e| InventoryError::NotAnInventory(e.to_string()))?;
        let derived = layers_of(&inventory.images);
        let listed: BTreeSet<&InventoryLayer> = inventory.layers.iter().collect();
        if let Some(missing) = derived.iter().find(|l| !listed.contains(l)) {
            return Err(InventoryError::Inconsistent(format!(
                "layer {} (chain {}) of an image is not in `layers`",
                missing.diff_id, missing.chain_id
            )));
        }
        Ok(inventory)
    }

    /// Each diff_id the engine holds, with the images (`name (platform)`) that hold it.
    pub fn holders(&self) -> BTreeMap<&Digest, Vec<String>> {
        let mut out: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for image in &self.images {
            let label = image.label();
            for d in &image.diff_ids {
                let names = out.entry(d).or_default();
                if !names.contains(&label) {
                    names.push(label.clone());
                }
            }
        }
        out
    }
}

impl InventoryImage {
    /// `svc:v1.0 (linux/arm64/v8)`, or the short ID for an untagged image.
    pub fn label(&self) -> String {
        let name = self
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| self.id.short().to_string());
        format!("{name} ({})", self.platform)
    }
}

fn layers_of(images: &[InventoryImage]) -> Vec<InventoryLayer> {
    let set: BTreeSet<InventoryLayer> = images
        .iter()
        .flat_map(|i| {
            i.diff_ids
                .iter()
                .cloned()
                .zip(chain_ids(&i.diff_ids))
                .map(|(diff_id, chain_id)| InventoryLayer { diff_id, chain_id })
        })
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &[u8], tags: &[&str], diffs: &[&[u8]]) -> InventoryImage {
        InventoryImage {
            id: Digest::of(id),
            config: Some(Digest::of(id)),
            manifest: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            platform: Platform::new("linux", "arm64", None),
            diff_ids: diffs.iter().map(|d| Digest::of(d)).collect(),
        }
    }

    fn engine() -> InventoryEngine {
        InventoryEngine {
            store: "classic".into(),
            version: "20.10.24".into(),
        }
    }

    #[test]
    fn same_state_same_bytes_and_round_trip() {
        let a = image(b"a", &["svc:v1", "svc:latest"], &[b"base", b"app"]);
        let b = image(b"b", &["other:v1"], &[b"base"]);
        let p = Platform::new("linux", "arm64", None);
        let one = Inventory::new(
            "site".into(),
            engine(),
            p.clone(),
            vec![a.clone(), b.clone()],
        );
        let two = Inventory::new("site".into(), engine(), p, vec![b, a]);
        assert_eq!(one.render(), two.render());
        let parsed = Inventory::parse(&one.render()).unwrap();
        assert_eq!(parsed, one);
        // base appears once (same chain in both images), app once.
        assert_eq!(parsed.layers.len(), 2);
        assert_eq!(parsed.holders()[&Digest::of(b"base")].len(), 2);
    }

    #[test]
    fn refuses_what_is_not_an_inventory() {
        assert!(matches!(
            Inventory::parse(b"[1]"),
            Err(InventoryError::NotAnInventory(_))
        ));
        let newer = br#"{"format":"archpack-inventory/2.0"}"#;
        assert!(matches!(
            Inventory::parse(newer),
            Err(InventoryError::Newer(_))
        ));
        let a = image(b"a", &["svc:v1"], &[b"base"]);
        let mut inv = Inventory::new(
            "s".into(),
            engine(),
            Platform::new("linux", "amd64", None),
            vec![a],
        );
        inv.layers.clear();
        assert!(matches!(
            Inventory::parse(&inv.render()),
            Err(InventoryError::Inconsistent(_))
        ));
    }
}
