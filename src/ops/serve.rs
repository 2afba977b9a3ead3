//! `serve`: bundles answered as a read-only registry. In two steps, so the caller can
//! say who signed what before the server listens: [`prepare`] opens and judges every
//! bundle and builds the registry view; [`run`] serves it until told to stop.

use super::{open_bundle, BundleInput, RequestError, Signature, TrustPolicy};
use crate::deliver::serve::{
    self, LayerChoice, RegistryView, ServeEvents, ServeOptions, ServeReport, ServedBundle,
    StopSignal, ViewOptions,
};
use crate::error::Error;
use crate::platform::select_all;
use crate::progress::Progress;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ServeRequest {
    /// One entry per bundle (a volume of a set finds the rest beside it).
    pub bundles: Vec<BundleInput>,
    pub trust: TrustPolicy,
    /// Serve `svc` as `PREFIX/svc`.
    pub prefix: String,
    pub layers: LayerChoice,
    pub gzip_threads: usize,
    /// Where gzip digests are remembered (`push`'s cache; None: nowhere).
    pub digest_cache: Option<PathBuf>,
}

/// Who signed one of the bundles served.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleSignature {
    pub bundle: String,
    pub signature: Signature,
}

/// Bundles opened, judged and turned into a registry view, ready to serve.
pub struct Prepared {
    pub signatures: Vec<BundleSignature>,
    view: RegistryView,
}

/// What a server did, with who signed what it served.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServeSummary {
    pub signatures: Vec<BundleSignature>,
    /// Layers gzip-compressed at start to learn their digests (0: all remembered).
    pub gzip_passes: usize,
    #[serde(flatten)]
    pub served: ServeReport,
}

/// Opens every bundle after its trust decision (as `load` does), refuses what cannot be
/// served whole (delta bundles, volumes missing), and builds the view (learning gzip
/// digests, with progress, unless only zstd is served).
pub fn prepare(req: &ServeRequest, progress: &dyn Progress) -> Result<Prepared, Error> {
    let prefix = req.prefix.trim_matches('/');
    if !prefix.is_empty() && !is_repository_path(prefix) {
        return Err(RequestError::BadPrefix(req.prefix.clone()).into());
    }
    let mut bundles = Vec::new();
    let mut signatures = Vec::new();
    for input in &req.bundles {
        if matches!(input, BundleInput::Stdin) {
            return Err(RequestError::ServeFromStdin.into());
        }
        let (reader, signature) = open_bundle(input, &req.trust)?;
        super::refuse_delta(&reader, "serve")?;
        let selected = select_all(&reader.index, &[], None)?;
        super::require_volumes(&reader, &selected)?;
        signatures.push(BundleSignature {
            bundle: input.label(),
            signature,
        });
        bundles.push(ServedBundle {
            label: input.label(),
            reader,
        });
    }
    let view = RegistryView::build(
        bundles,
        &ViewOptions {
            prefix,
            choice: req.layers,
            gzip_threads: req.gzip_threads,
            digest_cache: req.digest_cache.as_deref(),
        },
        progress,
    )?;
    Ok(Prepared { signatures, view })
}

/// The distribution spec's path components: `[a-z0-9]+([._-][a-z0-9]+)*`, joined by `/`.
fn is_repository_path(p: &str) -> bool {
    p.split('/').all(|component| {
        let b = component.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
            // Separators alone: `__` and `--` are allowed, `..` or `._` are not.
            && !b.windows(2).any(|w| {
                !w[0].is_ascii_alphanumeric()
                    && !w[1].is_ascii_alphanumeric()
                    && (w[0] != w[1] || w[0] == b'.')
            })
    })
}

/// Serves until `stop` is raised; returns the summary.
pub fn run(
    prepared: Prepared,
    options: &ServeOptions,
    events: Arc<dyn ServeEvents>,
    stop: StopSignal,
) -> Result<ServeSummary, Error> {
    let gzip_passes = prepared.view.gzip_passes;
    let served = serve::serve(prepared.view, options, events, stop)?;
    Ok(ServeSummary {
        signatures: prepared.signatures,
        gzip_passes,
        served,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes() {
        for good in ["site", "team/edge", "a.b-c_d", "x1/y2", "a__b", "a--b"] {
            assert!(super::is_repository_path(good), "{good}");
        }
        for bad in ["Site", "a//b", "-a", "a-", "a..b", "with space"] {
            assert!(!super::is_repository_path(bad), "{bad}");
        }
    }
}
