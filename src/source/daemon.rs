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
use std::io::{self, Read};
use std::sync::mpsc;

pub struct DaemonSource {
    engine: Engine,
    reference: String,
    images: Vec<SourceImage>,
}

impl DaemonSource {
    pub fn open(reference: &str, label: String) -> Result<DaemonSource, SourceError> {
        let engine = Engine::connect().map_err(|e| SourceError::Engine {
            host: std::env::var("DOCKER_HOST").unwrap_or_default(),
            detail: e.to_string(),
        })?;
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
        let image = SourceImage {
            source: label,
            tags,
            platform,
            config,
            config_bytes: None,
            diff_ids,
            size_hint: inspect.size.unwrap_or(0).max(0) as u64,
        };
        Ok(DaemonSource {
            engine,
            reference: reference.to_string(),
            images: vec![image],
        })
    }
}

impl Source for DaemonSource {
    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn read_layers(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        let image = match which {
            [] => return Ok(()),
            [i, ..] => &self.images[*i],
        };
        if !image.diff_ids.iter().any(|d| sink.wants(d)) && image.config_bytes.is_some() {
            return Ok(());
        }
        let label = image.source.clone();
        let config = image.config.clone();
        let (tx, rx) = mpsc::sync_channel::<io::Result<bytes::Bytes>>(16);
        let stream = self.engine.client.export_image(&self.reference);
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
        let result = read_export(reader, &label, &config, sink);
        pump.abort();
        result
    }
}

fn read_export(
    reader: ChannelReader,
    label: &str,
    config: &Digest,
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
            if Digest::of(&bytes) == *config {
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
