//! `inventory`: what the engine here holds — images, their layers by diff_id and chain,
//! and the platform `load` would choose — written for a build host to make a delta
//! bundle against (`create --base`).

use super::decide_platform;
use crate::deliver::engine as deliver;
use crate::docker::{Endpoint, Engine};
use crate::error::Error;
use crate::fsutil;
use crate::platform::Platform;
use archpack_format::inventory::{Inventory, InventoryEngine};
use serde::Serialize;
use std::path::PathBuf;

pub struct InventoryRequest {
    pub endpoint: Endpoint,
    /// What the site calls itself (recorded; messages on the build host name it).
    pub name: String,
    /// The platform to record instead of the detected one.
    pub platform: Option<Platform>,
    /// Write the inventory here.
    pub output: Option<PathBuf>,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReport {
    pub path: Option<PathBuf>,
    /// The inventory's bytes (what the file holds).
    pub bytes: u64,
    pub images: usize,
    pub layers: usize,
    pub platform: String,
    pub store: String,
    #[serde(skip)]
    pub inventory: Inventory,
    #[serde(skip)]
    pub rendered: Vec<u8>,
}

pub fn inventory(req: &InventoryRequest) -> Result<InventoryReport, Error> {
    if let Some(path) = &req.output {
        fsutil::check_absent(path, req.force)?;
    }
    let engine = Engine::connect(&req.endpoint)?;
    let (_, decision) = decide_platform(req.platform.as_ref(), Some(&engine), &req.endpoint)?;
    let store = deliver::store_of(&engine)?;
    let version = engine
        .version()?
        .version
        .clone()
        .unwrap_or_else(|| "unknown".into());
    let images = deliver::inventory_images(&engine, store)?;
    let inventory = Inventory::new(
        req.name.clone(),
        InventoryEngine {
            store: store.as_str().to_string(),
            version,
        },
        decision.platform.clone(),
        images,
    );
    let rendered = inventory.render();
    if let Some(path) = &req.output {
        fsutil::write_bytes(path, &rendered, req.force, 0o644)?;
    }
    Ok(InventoryReport {
        path: req.output.clone(),
        bytes: rendered.len() as u64,
        images: inventory.images.len(),
        layers: inventory.layers.len(),
        platform: decision.platform.to_string(),
        store: store.as_str().to_string(),
        inventory,
        rendered,
    })
}
