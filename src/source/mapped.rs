//! Sources whose layers are members at known paths: docker-archives and OCI layouts.
//! Random-access containers read the layers in the order asked; a compressed tarball is
//! streamed once in its own order, and the sink places what arrives.

use super::container::{decompress, Container};
use super::{AbsentImage, LayerSink, Source, SourceError, SourceImage};
use crate::digest::Digest;
use std::collections::HashMap;

pub struct MappedSource {
    pub(super) container: Container,
    pub(super) images: Vec<SourceImage>,
    /// Per image: layer member paths, parallel to its diff_ids.
    pub(super) layer_paths: Vec<Vec<String>>,
    pub(super) absent: Vec<AbsentImage>,
}

impl MappedSource {
    /// Adds an image whose config bytes are known (and so its config digest) and whose
    /// layers are the members at `paths`, parallel to the config's diff_ids.
    pub(super) fn push_image(
        &mut self,
        source: String,
        names: Vec<String>,
        facts: archpack_format::ConfigFacts,
        config_bytes: Vec<u8>,
        paths: Vec<String>,
        size_hint: u64,
    ) {
        let config = Digest::of(&config_bytes);
        self.images.push(SourceImage {
            source,
            names,
            platform: facts.platform,
            config: Some(config.clone()),
            identity: config,
            config_bytes: Some(config_bytes),
            diff_ids: facts.diff_ids,
            size_hint,
        });
        self.layer_paths.push(paths);
    }
}

impl Source for MappedSource {
    fn images(&self) -> &[SourceImage] {
        &self.images
    }

    fn absent(&self) -> &[AbsentImage] {
        &self.absent
    }

    fn read_layers(
        &mut self,
        which: &[usize],
        sink: &mut dyn LayerSink,
    ) -> Result<(), SourceError> {
        for &i in which {
            let image = &self.images[i];
            if let Some(bytes) = &image.config_bytes {
                sink.config(&image.identity, &image.source, bytes.clone())?;
            }
        }
        // Member path → diff_id of every wanted layer, in the order asked.
        let mut wanted: Vec<String> = Vec::new();
        let mut expected: HashMap<String, Digest> = HashMap::new();
        for &i in which {
            for (diff_id, path) in self.images[i].diff_ids.iter().zip(&self.layer_paths[i]) {
                if !expected.contains_key(path) && sink.wants(diff_id) {
                    wanted.push(path.clone());
                    expected.insert(path.clone(), diff_id.clone());
                }
            }
        }
        let label = self.container.describe();
        self.container.visit_members(&wanted, &mut |name, data| {
            let Some(diff_id) = expected.get(name) else {
                return Ok(true);
            };
            // An earlier member may have carried the same content under another name.
            if !sink.wants(diff_id) {
                return Ok(true);
            }
            let mut layer = decompress(data)
                .map_err(|e| SourceError::corrupt(std::path::Path::new(&label), e))?;
            sink.layer(&format!("{label}:{name}"), Some(diff_id), &mut layer)?;
            Ok(true)
        })
    }
}
