//! Images in the local engine (`docker-daemon:NAME:TAG` or bare `NAME:TAG`).
//!
//! Planning uses `inspect` (platform, diff_ids, image ID = config digest). Layers come
//! from one `docker save` stream per request; that stream names layers only in its
//! trailing manifest, so layers are identified by their content hash as they pass.

use super::container::{decompress, read_up_to};
use super::{familiar_name, LayerSink, Source, SourceError, SourceImage, MAX_METADATA_MEMBER};
use crate::digest::Digest;
use crate::docker::Engine;
use crate::platform::Platform;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::mpsc;

/// Every engine image of a create, served by one `docker save`: shared layers cross
/// the socket and the compressor once, in platform order.
pub struct DaemonSource {
    engine: Engine,
    references: Vec<String>,
    images: Vec<SourceImage>,
    exported: bool,
}

impl DaemonSource {
    pub fn connect() -> Result<DaemonSource, SourceError> {
        let engine = Engine::connect().map_err(|e| SourceError::Engine {
            host: std::env::var("DOCKER_HOST").unwrap_or_default(),
            detail: e.to_string(),
        })?;
        Ok(DaemonSource {
            engine,
            references: Vec::new(),
            images: Vec::new(),
            exported: false,
        })
    }

    /// Adds an engine image (by name or ID), described by `inspect`.
    pub fn add(&mut self, reference: &str, label: String) -> Result<(), SourceError> {
        let engine = &self.engine;
        let engine_err = |detail: String| SourceError::Engine {
            host: engine.host.clone(),
            detail,
        };
        let inspect = engine
            .runtime
            .block_on(engine.client.inspect_image(reference))
            .map_err(|e| engine_err(format!("image {reference}: {e}")))?;
        let id = inspect.id.clone().unwrap_or_default();
        let config: Digest = id
            .parse()
            .map_err(|e| engine_err(format!("image {reference}: image ID {id:?}: {e}")))?;
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
        let mut tags: Vec<String> = inspect
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| familiar_name(t))
            .collect();
        // The name the user asked for comes first: it decides the logical name.
        let asked = familiar_name(reference);
        tags.retain(|t| *t != asked);
        if !reference.starts_with("sha256:") {
            tags.insert(0, asked);
        }
        self.images.push(SourceImage {
            source: label,
            tags,
            platform,
            config,
            config_bytes: None,
            diff_ids,
            size_hint: inspect.size.unwrap_or(0).max(0) as u64,
            name: None,
        });
        self.references.push(reference.to_string());
        Ok(())
    }
}

impl Source for DaemonSource {
    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn images_mut(&mut self) -> &mut [SourceImage] {
        &mut self.images
    }

    /// The first call exports every image at once (the writer asks platform by
    /// platform; the sink keeps what any platform needs), later calls have nothing left.
    fn read_layers(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        if which.is_empty() || self.exported {
            return Ok(());
        }
        self.exported = true;
        // Platform order, so each platform's layers come (and are stored) together.
        let mut order: Vec<usize> = (0..self.images.len()).collect();
        order.sort_by(|&a, &b| self.images[a].platform.cmp(&self.images[b].platform));
        let names: Vec<&str> = order.iter().map(|&i| self.references[i].as_str()).collect();
        let label = format!("the engine at {}", self.engine.host);
        let configs: HashSet<Digest> = self.images.iter().map(|i| i.config.clone()).collect();
        let (tx, rx) = mpsc::sync_channel::<io::Result<bytes::Bytes>>(16);
        let stream = self.engine.client.export_images(&names);
        // The export runs on the runtime; this thread reads it through a bounded channel.
        let pump = self.engine.runtime.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(io::Error::other);
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        };
        let result = read_export(reader, &label, &configs, sink);
        pump.abort();
        result
    }
}

fn read_export(
    reader: ChannelReader,
    label: &str,
    configs: &HashSet<Digest>,
    sink: &mut dyn LayerSink,
) -> Result<(), SourceError> {
    let engine_err = |e: io::Error| SourceError::Engine {
        host: label.to_string(),
        detail: format!("reading the exported image: {e}"),
    };
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
        let mut head = [0u8; 1];
        let n = read_up_to(&mut entry, &mut head).map_err(engine_err)?;
        let chained = (&head[..n]).chain(&mut entry);
        if n == 1 && head[0] == b'{' {
            let mut bytes = Vec::new();
            chained
                .take(MAX_METADATA_MEMBER)
                .read_to_end(&mut bytes)
                .map_err(engine_err)?;
            if configs.contains(&Digest::of(&bytes)) {
                sink.config(bytes);
            }
            continue;
        }
        if name.ends_with(".json") || name == "repositories" || name.ends_with("VERSION") {
            continue;
        }
        let mut layer = decompress(chained).map_err(engine_err)?;
        sink.layer(&format!("{label}:{name}"), None, &mut layer)?;
    }
    Ok(())
}

/// Blocking `Read` over chunks sent from the async export.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
