//! Images in the local engine (`docker-daemon:NAME:TAG` or bare `NAME:TAG`).
//!
//! Planning uses `inspect` (platform, diff_ids, image ID). The images are then exported
//! in one request per platform (`docker save A B …`: a layer they share comes once),
//! the next asked for along with the one before, and the writer puts each layer in
//! its bundle place whatever order the engine streams them in, so what a bundle holds
//! never depends on that order.
//!
//! What an export holds depends on the engine: Docker 20.10 names layers by v1 IDs
//! (identified here by their content hash), Docker 25+ adds an OCI layout whose layer
//! blobs are named by digest (identified by name), and the containerd image store keeps
//! compressed blobs and reports the *manifest* digest as the image ID. So the config is
//! found by what the image says — the ID is the config (classic store) or the manifest
//! that names it (containerd store) — and checked against the layers `inspect` lists.

use super::container::{decompress, read_up_to, Compression};
use super::{familiar_name, LayerSink, Source, SourceError, SourceImage, MAX_METADATA_MEMBER};
use crate::bridge::ChunkReader;
use crate::digest::{Digest, HashingReader};
use crate::docker::{Endpoint, Engine};
use crate::platform::Platform;
use crate::reference::ImageRef;
use oci_spec::image::{ImageIndex, ImageManifest};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

/// JSON members kept from one export (manifests, configs, indexes): bounded.
const MAX_EXPORT_METADATA: u64 = 64 << 20;

/// Chunks of an export that may wait for the reader (the next export's first bytes).
const EXPORT_CHUNKS_AHEAD: usize = 16;

pub struct EngineSource {
    engine: Engine,
    references: Vec<String>,
    images: Vec<SourceImage>,
    /// The containerd image store: image IDs are manifest (or index) digests.
    containerd_store: bool,
    /// Compressed blob digest → diff_id, learnt from earlier exports (the containerd
    /// store names layers by their compressed digest): a blob seen again is known by
    /// name and skipped unread when the bundle has it.
    learned: HashMap<Digest, Digest>,
}

impl EngineSource {
    pub fn connect(endpoint: &Endpoint) -> Result<EngineSource, SourceError> {
        let engine = Engine::connect(endpoint)?;
        let containerd_store = crate::docker::uses_containerd_store(&engine)?;
        Ok(EngineSource {
            engine,
            references: Vec::new(),
            images: Vec::new(),
            containerd_store,
            learned: HashMap::new(),
        })
    }

    /// Adds an engine image (by name or ID), described by `inspect`.
    pub fn add(&mut self, reference: &str, label: String) -> Result<(), SourceError> {
        let engine = &self.engine;
        let image_err = |detail: String| SourceError::EngineImage {
            what: format!("{label} (the engine at {})", engine.host),
            detail,
        };
        let inspect = engine
            .runtime
            .block_on(engine.client.inspect_image(reference))
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => image_err(format!(
                    "no image {reference} in this engine (`docker images` lists what it has)"
                )),
                other => image_err(other.to_string()),
            })?;
        let id = inspect.id.clone().unwrap_or_default();
        let identity: Digest = id
            .parse()
            .map_err(|e| image_err(format!("image ID {id:?}: {e}")))?;
        let (Some(os), Some(arch)) = (inspect.os.as_deref(), inspect.architecture.as_deref())
        else {
            return Err(SourceError::NoPlatform {
                what: label,
                detail: "the engine reports no os/architecture".into(),
            });
        };
        let platform = Platform::new(os, arch, inspect.variant.as_deref());
        let diff_ids = inspect
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default()
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| SourceError::BadDigest {
                what: label.clone(),
                error,
            })?;
        // Only the name asked for travels: tags the image also has here stay here.
        let names = match ImageRef::parse(reference) {
            Ok(r) if r.digest().is_none() && !super::is_image_id(reference) => {
                vec![familiar_name(reference)]
            }
            _ => Vec::new(),
        };
        self.images.push(SourceImage {
            source: label,
            names,
            platform,
            config: (!self.containerd_store).then(|| identity.clone()),
            identity,
            config_bytes: None,
            diff_ids,
            size_hint: inspect.size.unwrap_or(0).max(0) as u64,
        });
        self.references.push(reference.to_string());
        Ok(())
    }

    /// One image's export, streamed into `sink`. Layers whose size equals one `sink`
    /// already has are only hashed, not compressed again (an image re-sends the base it
    /// shares with one exported before); if such a hash turns out to be a layer still
    /// needed, the export is asked for again without that shortcut.
    fn export(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
        no_shortcut: &HashSet<u64>,
        configs: bool,
        reader: ChunkReader<'static>,
    ) -> Result<Exported, SourceError> {
        let label = self.export_label(which);
        let engine_err = |e: io::Error| export_error(&label, e);
        let all_diff_ids: Vec<&Digest> = which
            .iter()
            .flat_map(|&i| self.images[i].diff_ids.iter())
            .collect();
        let mine: HashSet<&Digest> = all_diff_ids.iter().copied().collect();
        let taken_sizes: HashMap<u64, &Digest> = all_diff_ids
            .iter()
            .filter_map(|d| sink.has_size(d).map(|s| (s, *d)))
            .collect();
        let mut json: HashMap<Digest, Vec<u8>> = HashMap::new();
        let mut json_bytes = 0u64;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(engine_err)? {
            let mut entry = entry.map_err(engine_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let size = entry.size();
            let origin = format!("{label}:{name}");
            // Docker 25+ names uncompressed layers by their diff_id.
            // Docker 25+ names uncompressed layers by their diff_id; a compressed blob
            // an earlier export decompressed is known by its digest.
            let named = blob_digest(&name);
            let known = named.as_ref().and_then(|d| {
                if mine.contains(d) {
                    Some(d.clone())
                } else {
                    self.learned
                        .get(d)
                        .filter(|diff| mine.contains(diff))
                        .cloned()
                }
            });
            if let Some(d) = known {
                if sink.wants(&d) {
                    let mut layer = decompress(&mut entry).map_err(engine_err)?;
                    sink.layer(&origin, Some(&d), &mut layer)?;
                }
                continue;
            }
            let mut head = [0u8; 4];
            let n = read_up_to(&mut entry, &mut head).map_err(engine_err)?;
            let head = &head[..n];
            if size <= MAX_METADATA_MEMBER && head.first() == Some(&b'{') {
                let mut bytes = head.to_vec();
                entry.read_to_end(&mut bytes).map_err(engine_err)?;
                if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
                    json_bytes += bytes.len() as u64;
                    if json_bytes > MAX_EXPORT_METADATA {
                        return Err(engine_err(io::Error::other(
                            "more than 64 MiB of JSON metadata",
                        )));
                    }
                    json.insert(Digest::of(&bytes), bytes);
                    continue;
                }
                sink.layer(&origin, None, &mut &bytes[..])?;
                continue;
            }
            if name == "repositories" || name.ends_with("VERSION") || name == "oci-layout" {
                continue;
            }
            let mut data = head.chain(&mut entry);
            let plain = Compression::sniff(head) == Compression::None;
            if plain && !sink.wants_size(size) {
                continue;
            }
            if let Some(&known) = taken_sizes
                .get(&size)
                .filter(|_| plain && !no_shortcut.contains(&size))
            {
                let mut hashing = HashingReader::new(&mut data);
                io::copy(&mut hashing, &mut io::sink()).map_err(engine_err)?;
                let (digest, _) = hashing.finish();
                if digest == *known || !sink.wants(&digest) {
                    continue;
                }
                return Ok(Exported::Retry(size));
            }
            let mut layer = HashingReader::new(decompress(data).map_err(engine_err)?);
            sink.layer(&origin, None, &mut layer)?;
            if let (Some(blob), false) = (named, plain) {
                let (diff_id, _) = layer.finish();
                self.learned.insert(blob, diff_id);
            }
        }
        if let Some(missing) = all_diff_ids.iter().find(|d| sink.wants(d)) {
            return Err(SourceError::EngineImage {
                what: label,
                detail: format!("its export did not carry layer {missing}"),
            });
        }
        if configs {
            for &i in which {
                let image = &self.images[i];
                let label = self.export_label(&[i]);
                let config =
                    self.find_config(image, &json)
                        .map_err(|detail| SourceError::EngineImage {
                            what: label.clone(),
                            detail,
                        })?;
                sink.config(&image.identity, &label, config)?;
            }
        }
        Ok(Exported::Done)
    }

    /// The config an image's own documents name: the image ID itself (classic store) or
    /// the one its manifest names (containerd store; an index first picks the manifest
    /// of the image's platform). It must list exactly the layers `inspect` reported.
    fn find_config(
        &self,
        image: &SourceImage,
        json: &HashMap<Digest, Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let mut digest = image.identity.clone();
        for _ in 0..4 {
            let bytes = json
                .get(&digest)
                .ok_or_else(|| format!("its export does not hold {digest}, which it names"))?;
            if let Ok(facts) = archpack_format::config_facts(bytes) {
                if facts.diff_ids != image.diff_ids {
                    return Err(format!(
                        "its config {digest} lists {} layers, `inspect` {}",
                        facts.diff_ids.len(),
                        image.diff_ids.len()
                    ));
                }
                return Ok(bytes.clone());
            }
            if let Ok(index) = serde_json::from_slice::<ImageIndex>(bytes) {
                let chosen = index
                    .manifests()
                    .iter()
                    .find(|m| {
                        m.platform().as_ref().is_some_and(|p| {
                            Platform::new(
                                &p.os().to_string(),
                                &p.architecture().to_string(),
                                p.variant().as_deref(),
                            ) == image.platform
                        })
                    })
                    .ok_or_else(|| {
                        format!("its index {digest} has no manifest for {}", image.platform)
                    })?;
                digest = Digest::from_oci(chosen.digest()).map_err(|e| e.to_string())?;
                continue;
            }
            if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(bytes) {
                digest = Digest::from_oci(manifest.config().digest()).map_err(|e| e.to_string())?;
                continue;
            }
            return Err(format!(
                "{digest} is neither an image config nor a manifest"
            ));
        }
        Err("its documents nest too deeply".into())
    }
}

impl EngineSource {
    /// The images at `which`, as errors name them.
    fn export_label(&self, which: &[usize]) -> String {
        let sources: Vec<&str> = which
            .iter()
            .map(|&i| self.images[i].source.as_str())
            .collect();
        format!(
            "{} (the engine at {})",
            sources.join(", "),
            self.engine.host
        )
    }

    /// Asks the engine for one export of the images at `which`: from now on it is
    /// prepared and streamed, and read when [`Self::export`] gets it.
    fn request_export(&self, which: &[usize]) -> ChunkReader<'static> {
        let names: Vec<&str> = which.iter().map(|&i| self.references[i].as_str()).collect();
        crate::bridge::stream_reader(
            self.engine.client.export_images(&names),
            self.engine.runtime.handle(),
            EXPORT_CHUNKS_AHEAD,
        )
    }

    /// Streams the layers of every image added, in one export (a layer several of them
    /// share comes once), to `sink`: by name where the export names layers by diff_id,
    /// else identified by content. Configs are not looked for: this reads layers back
    /// (a delta load), where their order does not matter.
    pub fn read_layers_at_once(&mut self, sink: &mut dyn LayerSink) -> Result<(), SourceError> {
        let all: Vec<usize> = (0..self.images.len()).collect();
        self.read_all(&all, sink, false, None)
    }

    /// One export of the images at `which`, asked again with one more size's shortcut
    /// off while a hashed-only layer turns out to be needed (bounded by the layer count).
    fn read_all(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
        configs: bool,
        mut requested: Option<ChunkReader<'static>>,
    ) -> Result<(), SourceError> {
        let mut no_shortcut = HashSet::new();
        let layers: usize = which.iter().map(|&i| self.images[i].diff_ids.len()).sum();
        for _ in 0..=layers {
            let reader = requested
                .take()
                .unwrap_or_else(|| self.request_export(which));
            match self.export(which, sink, &no_shortcut, configs, reader)? {
                Exported::Done => return Ok(()),
                Exported::Retry(size) => {
                    no_shortcut.insert(size);
                }
            }
        }
        Ok(())
    }
}

enum Exported {
    Done,
    /// A layer of this size was hashed on the shortcut but is needed: export again.
    Retry(u64),
}

/// An export of the images `label` names failed as it was read.
fn export_error(label: &str, e: io::Error) -> SourceError {
    SourceError::EngineImage {
        what: label.to_string(),
        detail: format!("reading its export: {e}"),
    }
}

/// `which` split by platform, each part in the order asked, parts by first appearance.
fn by_platform(which: &[usize], images: &[SourceImage]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&Platform, Vec<usize>)> = Vec::new();
    for &i in which {
        let platform = &images[i].platform;
        match groups.iter_mut().find(|(p, _)| *p == platform) {
            Some((_, group)) => group.push(i),
            None => groups.push((platform, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// `blobs/sha256/<hex>` → the digest.
fn blob_digest(name: &str) -> Option<Digest> {
    name.strip_prefix("blobs/sha256/")
        .and_then(|hex| Digest::from_hex(hex).ok())
}

impl Source for EngineSource {
    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn read_layers(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        // One export per platform, in the order asked (the bundle's: platform first). A
        // platform's images share their base, which an export sends once (one export per
        // image re-sent it each time: 3.5× the engine's time on the benchmark corpus);
        // platforms share little (identical application layers come again, and are
        // hashed or skipped by name). Docker prepares an export whole before its first
        // byte (moby's tarexport writes it to a temporary directory: 3.0 s of a 3.9 s
        // `docker save` of the bench corpus, on one core), so the next platform's export
        // is asked for together with this one: the engine prepares both side by side
        // and the next while this one is compressed (bench corpus, 2 cores: 0.8-1.1 s
        // less of 5.3-6.4 s than asking for it once this one streams). At most two
        // exports wait in the engine's temporary space. The writer places layers in
        // bundle order whatever order they arrive in.
        let groups = by_platform(which, &self.images);
        let mut next: Option<ChunkReader<'static>> = None;
        for (k, group) in groups.iter().enumerate() {
            let mut reader = next.take().unwrap_or_else(|| self.request_export(group));
            next = groups.get(k + 1).map(|g| self.request_export(g));
            reader
                .wait_for_data()
                .map_err(|e| export_error(&self.export_label(group), e))?;
            self.read_all(group, sink, true, Some(reader))?;
        }
        Ok(())
    }
}
