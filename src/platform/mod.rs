//! Platform choice: what this host can run ([`probe`]), and which of a bundle's
//! platforms each image is delivered for ([`select`]).

pub mod probe;

pub use archpack_format::platform::*;

use archpack_format::{BundleIndex, ImageEntry, PlatformEntry};
use probe::{best_match, Decision, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum PlatformChoiceError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{image}: {error}")]
    NoPlatform { image: String, error: ProbeError },
    #[error("the bundle has no image named {name:?} (it has: {available})")]
    NoSuchImage { name: String, available: String },
    #[error("--platform {value:?}: {error}")]
    BadPlatform { value: String, error: PlatformError },
    #[error("nothing matches --image/--platform: the bundle has {available}")]
    NothingSelected { available: String },
}

/// One image at the platform chosen for it.
#[derive(Debug, Clone)]
pub struct Selected<'a> {
    pub image: &'a ImageEntry,
    pub entry: &'a PlatformEntry,
}

impl Selected<'_> {
    /// Tags to give it: the logical name, then the names it was packed from.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![self.image.name.clone()];
        for t in &self.entry.source_tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags
    }
}

/// Refuses `--image` names the bundle does not have, naming what it has.
pub fn check_image_names(index: &BundleIndex, only: &[String]) -> Result<(), PlatformChoiceError> {
    for name in only {
        if index.image(name).is_none() {
            let names: Vec<&str> = index.images.iter().map(|i| i.name.as_str()).collect();
            return Err(PlatformChoiceError::NoSuchImage {
                name: name.clone(),
                available: names.join(", "),
            });
        }
    }
    Ok(())
}

/// Picks, for each image (or the ones named), the best platform for `decision`.
pub fn select<'a>(
    index: &'a BundleIndex,
    decision: &Decision,
    only: &[String],
) -> Result<Vec<Selected<'a>>, PlatformChoiceError> {
    check_image_names(index, only)?;
    let mut out = Vec::new();
    for image in &index.images {
        if !only.is_empty() && !only.contains(&image.name) {
            continue;
        }
        let offered: Vec<Platform> = image.platforms.iter().map(|p| p.platform.clone()).collect();
        let chosen =
            best_match(decision, &offered).map_err(|error| PlatformChoiceError::NoPlatform {
                image: image.name.clone(),
                error,
            })?;
        if let Some(entry) = image.platforms.iter().find(|p| p.platform == chosen) {
            out.push(Selected { image, entry });
        }
    }
    Ok(out)
}

/// Every platform of the images named (all images when none are), optionally only
/// those in `keep` (`push`, `serve`: a fleet gets every platform).
pub fn select_all<'a>(
    index: &'a BundleIndex,
    only: &[String],
    keep: Option<&[Platform]>,
) -> Result<Vec<Selected<'a>>, PlatformChoiceError> {
    check_image_names(index, only)?;
    let selected: Vec<Selected<'a>> = index
        .images
        .iter()
        .filter(|i| only.is_empty() || only.contains(&i.name))
        .flat_map(|image| {
            image
                .platforms
                .iter()
                .map(move |entry| Selected { image, entry })
        })
        .filter(|s| keep.is_none_or(|k| k.contains(&s.entry.platform)))
        .collect();
    if selected.is_empty() {
        let available: Vec<String> = index.platforms().iter().map(|p| p.to_string()).collect();
        return Err(PlatformChoiceError::NothingSelected {
            available: available.join(", "),
        });
    }
    Ok(selected)
}

/// Parses a `--platform` list (`linux/amd64,linux/arm64`).
pub fn parse_platforms(value: &str) -> Result<Vec<Platform>, PlatformChoiceError> {
    parse_list(value).map_err(|error| PlatformChoiceError::BadPlatform {
        value: value.to_string(),
        error,
    })
}

/// Parses one `--platform` value.
pub fn parse_platform(value: &str) -> Result<Platform, PlatformChoiceError> {
    value
        .parse()
        .map_err(|error| PlatformChoiceError::BadPlatform {
            value: value.to_string(),
            error,
        })
}
