//! Delivering as a registry (`serve`): bundles answered as a read-only OCI Distribution
//! registry, straight from the files. [`view`] is what is served (names, digests, the
//! gzip set's documents); [`http`] answers requests and streams blobs, each checked
//! against the signed index as it goes; this module runs the server until it is told to
//! stop and returns what it did.
//!
//! Memory does not grow with the number of clients: a blob is streamed through a bounded
//! channel by a blocking task, and at most `max_transfers` blobs stream at once (further
//! ones wait their turn); connections beyond [`MAX_CONNECTIONS`] wait in the kernel's
//! backlog.

pub mod http;
pub mod view;

use crate::digest::Digest;
use archpack_format::{exit, FormatError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use view::{LayerChoice, LayerSet, RegistryView, ServedBundle, ServedImage, ViewOptions};

/// Open connections at most (idle keep-alive ones included); more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{reference} is in both {first} and {second} with different contents; serve them separately, or give one --prefix in a server of its own")]
    TagConflict {
        reference: String,
        first: String,
        second: String,
    },
    #[error("{bundle}: the index names {digest} but no member holds it")]
    MissingMember { bundle: String, digest: Digest },
    #[error("--listen {address}: {error}{hint}")]
    Listen {
        address: String,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: {detail}")]
    Tls { path: PathBuf, detail: String },
    #[error("the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl ServeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::MissingMember { .. } => exit::INTEGRITY,
            ServeError::Format(e) => e.exit_code(),
            ServeError::TagConflict { .. }
            | ServeError::Listen { .. }
            | ServeError::Tls { .. }
            | ServeError::Runtime(_)
            | ServeError::Name(_) => exit::FAILURE,
        }
    }
}

/// A certificate chain and its key (PEM) to serve HTTPS with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct ServeOptions {
    /// `host:port` to listen on (`0.0.0.0:5000`; port 0: any free one).
    pub listen: String,
    pub tls: Option<TlsFiles>,
    /// Blobs streamed at once; further requests wait their turn.
    pub max_transfers: usize,
    pub gzip_threads: usize,
    /// Where the gzip encodings made while serving are kept for later pulls (in a
    /// temporary directory made inside, removed at stop; None: the system's temporary
    /// directory).
    pub gzip_keep_in: Option<PathBuf>,
    /// How long requests under way may finish once a stop is asked for.
    pub grace: Duration,
}

/// Tells a running server to stop (from a signal handler's thread, say).
#[derive(Clone)]
pub struct Stopper(Arc<tokio::sync::watch::Sender<bool>>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// What a server waits on to stop.
pub struct StopSignal(tokio::sync::watch::Receiver<bool>);

/// A stop handle and the signal it raises.
pub fn stop_signal() -> (Stopper, StopSignal) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (Stopper(Arc::new(tx)), StopSignal(rx))
}

/// What a running server tells its caller.
pub trait ServeEvents: Send + Sync {
    /// Listening, with what is served.
    fn listening(&self, listening: &Listening);
    /// One request answered (for a blob: once its body has been sent, or cut).
    fn request(&self, entry: &AccessEntry);
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listening {
    /// `http://127.0.0.1:5000` (the port really bound).
    pub url: String,
    pub images: Vec<ServedImage>,
    pub layer_sets: Vec<LayerSet>,
    pub gzip_passes: usize,
    /// Layers that failed their check at start (never served).
    pub faulty_members: Vec<FaultyMember>,
}

/// One line of the access log.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    pub time: String,
    pub client: String,
    pub method: String,
    pub path: String,
    /// 0: no HTTP answer (a TLS handshake that failed).
    pub status: u16,
    pub bytes: u64,
    pub ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The set a tag was resolved in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerSet>,
    /// The bundle the bytes came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// What went wrong: a member that failed its check, a client gone mid-blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleTraffic {
    pub bundle: String,
    pub requests: u64,
    pub bytes: u64,
}

/// A member that failed its check while being served (never served as good again).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultyMember {
    pub bundle: String,
    pub member: String,
    pub detail: String,
}

impl std::fmt::Display for FaultyMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: member {}: {}",
            self.bundle, self.member, self.detail
        )
    }
}

/// What a server did, from start to stop.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServeReport {
    pub url: String,
    pub seconds: f64,
    pub requests: u64,
    pub bytes_sent: u64,
    pub by_bundle: Vec<BundleTraffic>,
    /// Answers of 4xx (unknown names, refused uploads, bad ranges).
    pub client_errors: u64,
    /// Answers of 5xx, and blobs cut because a check failed.
    pub server_errors: u64,
    pub faulty_members: Vec<FaultyMember>,
    /// Requests still under way when the grace period after a stop ran out.
    pub cut_at_stop: usize,
    /// gzip encodings made while serving (each layer once, then kept for the run).
    pub gzip_encodings: u64,
    /// gzip blobs (or ranges of them) answered from a kept encoding.
    pub gzip_cache_hits: u64,
}

/// Runs the server on `view` until `stop` is raised; then lets requests under way
/// finish for `opts.grace` and returns what it did.
pub fn serve(
    view: RegistryView,
    opts: &ServeOptions,
    events: Arc<dyn ServeEvents>,
    stop: StopSignal,
) -> Result<ServeReport, ServeError> {
    let tls = opts.tls.as_ref().map(http::tls_acceptor).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("archpack-serve")
        .build()
        .map_err(ServeError::Runtime)?;
    let report = runtime.block_on(http::run(view, opts, tls, events, stop.0));
    // Producers still reading for a cut client stop at their next write.
    runtime.shutdown_timeout(Duration::from_secs(2));
    report
}
