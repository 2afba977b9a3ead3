//! The OCI Distribution API, read-only, over hyper: `/v2/`, manifests and blobs by tag
//! and digest (GET, HEAD, one byte range), `tags/list`, `_catalog`; every write refused
//! with 405 `UNSUPPORTED`, errors in the spec's JSON body.
//!
//! Trust while serving: a document is read whole and checked before its first byte is
//! sent. A blob is checked as it streams, and its last chunk is held back until the
//! check passes: a mismatch fails the body, the connection is cut short, and the client
//! never holds a complete wrong blob. The member is then faulty for the rest of the run
//! (500 without reading it again). A range is served only from a blob checked whole once
//! in this run (a first ranged request checks it first).

use super::view::{Blob, Document, LayerSet, RegistryView};
use super::{
    AccessEntry, BundleTraffic, FaultyMember, Listening, ServeError, ServeEvents, ServeOptions,
    ServeReport, TlsFiles, MAX_CONNECTIONS,
};
use crate::bridge::{chunk_channel, ChunkWriter};
use crate::deliver::gzip;
use crate::digest::{Digest, HashingReader, HashingWriter};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

type Body = BoxBody<Bytes, io::Error>;

/// Chunks of a blob in flight per transfer (each `bridge::CHUNK`, 256 KiB).
const CHANNEL_DEPTH: usize = 4;
/// gzip re-encodings at once: two keep the cores busy, and each holds up to the layer's
/// zstd window (16 MiB for bundles made with long-distance matching) plus the parallel
/// compressor's blocks.
const GZIP_ENCODES: usize = 2;
/// Bytes of a blob held back until its check passes: at least one chunk.
const HOLD_BACK: usize = crate::bridge::CHUNK;

/// What the server shares between requests.
struct State {
    view: RegistryView,
    events: Arc<dyn ServeEvents>,
    gzip_threads: usize,
    transfers: Arc<Semaphore>,
    /// gzip re-encodings under way (each holds a layer's zstd window and the
    /// compressor's blocks, and keeps the cores busy on its own).
    gzip_encodes: Arc<Semaphore>,
    stats: Mutex<Stats>,
    /// Members that failed a check, by the digest they were asked for under.
    faulty: Mutex<HashMap<Digest, FaultyMember>>,
    /// Blobs sent whole and checked in this run (ranges are served from these).
    verified: Mutex<HashSet<Digest>>,
    /// gzip encodings made in this run, kept for the next pull (None: no temporary
    /// directory could be made; every pull encodes).
    gzip_cache: Option<GzipCache>,
}

/// The gzip encodings this run has made and checked, one file per blob in a private
/// temporary directory (removed when the server stops): a fleet's second host, and
/// every host after it, reads the encoding back instead of waiting for one. Best effort:
/// a copy that cannot be written costs the next pull an encoding, not its answer.
struct GzipCache {
    dir: tempfile::TempDir,
}

/// Free space a kept copy leaves on its filesystem at least: the copies never fill it.
const GZIP_KEEP_MARGIN: u64 = 1 << 30;

impl GzipCache {
    fn new(inside: Option<&std::path::Path>) -> Option<GzipCache> {
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("serve-gzip.");
            b
        };
        let dir = inside
            .filter(|d| std::fs::create_dir_all(d).is_ok())
            .and_then(|d| builder.tempdir_in(d).ok())
            .or_else(|| builder.tempdir().ok())?;
        Some(GzipCache { dir })
    }

    fn path(&self, blob: &Digest) -> std::path::PathBuf {
        self.dir.path().join(blob.hex())
    }

    fn open(&self, blob: &Digest) -> Option<std::fs::File> {
        std::fs::File::open(self.path(blob)).ok()
    }

    fn has(&self, blob: &Digest) -> bool {
        self.path(blob).is_file()
    }

    /// A file to write an encoding of `size` bytes into (None: too little room); kept
    /// under the blob's name by [`Self::keep`].
    fn start(&self, size: u64) -> Option<io::BufWriter<tempfile::NamedTempFile>> {
        let room = fs4::available_space(self.dir.path()).ok()?;
        if room < size.saturating_add(GZIP_KEEP_MARGIN) {
            return None;
        }
        tempfile::NamedTempFile::new_in(self.dir.path())
            .ok()
            .map(|f| io::BufWriter::with_capacity(crate::bridge::CHUNK, f))
    }

    /// An encoding written whole and checked: the next pull of `blob` reads it.
    fn keep(&self, blob: &Digest, copy: io::BufWriter<tempfile::NamedTempFile>) {
        if let Ok(file) = copy.into_inner() {
            let _ = file.persist(self.path(blob));
        }
    }

    /// A kept copy that failed its check: gone, so the next pull encodes again.
    fn forget(&self, blob: &Digest) {
        let _ = std::fs::remove_file(self.path(blob));
    }
}

/// Writes to the client and, best effort, to a copy (dropped at its first failed write).
struct Tee<'a> {
    out: &'a mut dyn Write,
    copy: Option<io::BufWriter<tempfile::NamedTempFile>>,
}

impl Write for Tee<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(copy) = &mut self.copy {
            if copy.write_all(&data[..n]).is_err() {
                self.copy = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A kept gzip encoding that no longer hashes to its digest: the bundle is not at fault.
#[derive(Debug)]
struct KeptCopyFault(String);

impl std::fmt::Display for KeptCopyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeptCopyFault {}

fn is_kept_copy_fault(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<KeptCopyFault>())
}

#[derive(Default)]
struct Stats {
    requests: u64,
    bytes: u64,
    client_errors: u64,
    server_errors: u64,
    /// Per bundle: (requests, bytes).
    by_bundle: HashMap<usize, (u64, u64)>,
    /// gzip encodings made, and answers from kept ones (a lock, not an atomic: ARMv5
    /// and ARMv6 have no 64-bit atomics).
    gzip_encodings: u64,
    gzip_cache_hits: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn record(&self, entry: AccessEntry, bundle: Option<usize>, failed: bool) {
        {
            let mut s = lock(&self.stats);
            s.requests += 1;
            s.bytes += entry.bytes;
            if failed || entry.status >= 500 {
                s.server_errors += 1;
            } else if entry.status >= 400 {
                s.client_errors += 1;
            }
            if let Some(b) = bundle {
                let t = s.by_bundle.entry(b).or_default();
                t.0 += 1;
                t.1 += entry.bytes;
            }
        }
        self.events.request(&entry);
    }

    fn faulty(&self, digest: &Digest) -> Option<FaultyMember> {
        lock(&self.faulty).get(digest).cloned()
    }

    /// Records member `member` of bundle `bundle`, asked for as `digest`, as faulty
    /// (the first fault found stands); returns what is recorded.
    fn mark_faulty(
        &self,
        digest: &Digest,
        (bundle, member): (usize, usize),
        detail: String,
    ) -> FaultyMember {
        lock(&self.faulty)
            .entry(digest.clone())
            .or_insert_with(|| FaultyMember {
                bundle: self.label(bundle),
                member: self.view.member_at(bundle, member).1.name.clone(),
                detail,
            })
            .clone()
    }

    fn label(&self, bundle: usize) -> String {
        self.view.bundles[bundle].label.clone()
    }
}

/// The TLS side of `--tls-cert/--tls-key`, checked before anything listens.
pub fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, detail: String| ServeError::Tls {
        path: path.to_path_buf(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, format!("cannot read a PEM certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            &files.cert,
            "no PEM certificate in it (--tls-cert)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        bad(
            &files.key,
            format!("no PEM private key in it (--tls-key): {e}"),
        )
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&files.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        bad(
            &files.key,
            format!(
                "does not go with the certificate {}: {e}",
                files.cert.display()
            ),
        )
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub(super) async fn run(
    view: RegistryView,
    opts: &ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: Arc<dyn ServeEvents>,
    mut stop: watch::Receiver<bool>,
) -> Result<ServeReport, ServeError> {
    let addresses = listen_addresses(&opts.listen)?;
    let listener = tokio::net::TcpListener::bind(&addresses[..])
        .await
        .map_err(|error| ServeError::Listen {
            address: opts.listen.clone(),
            hint: if error.kind() == io::ErrorKind::AddrInUse {
                " (another server has that port: stop it, or give another --listen)"
            } else {
                ""
            },
            error,
        })?;
    let local = listener.local_addr().map_err(ServeError::Runtime)?;
    let url = format!("{}://{local}", if tls.is_some() { "https" } else { "http" });
    let started = Instant::now();
    events.listening(&Listening {
        url: url.clone(),
        images: view.images.clone(),
        layer_sets: view.choice.sets().to_vec(),
        gzip_passes: view.gzip_passes,
        faulty_members: view.faulty.values().cloned().collect(),
    });
    let faulty = view.faulty.clone();
    let state = Arc::new(State {
        view,
        events,
        gzip_threads: opts.gzip_threads.max(1),
        transfers: Arc::new(Semaphore::new(opts.max_transfers.max(1))),
        gzip_encodes: Arc::new(Semaphore::new(GZIP_ENCODES)),
        stats: Mutex::new(Stats::default()),
        faulty: Mutex::new(faulty),
        verified: Mutex::new(HashSet::new()),
        gzip_cache: GzipCache::new(opts.gzip_keep_in.as_deref()),
    });
    let connections_allowed = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = connections_allowed.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors, a connection reset before accept: go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(hyper_util::rt::TokioIo::new(tcp), state, peer, stop).await,
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        connection(hyper_util::rt::TokioIo::new(stream), state, peer, stop).await
                    }
                    Err(e) => {
                        let mut entry = entry_for(peer, "-", "-".into(), None);
                        entry.error = Some(format!("TLS handshake failed: {e}"));
                        state.record(entry, None, false)
                    }
                },
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(opts.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let cut_at_stop = if drained.is_err() {
        connections.len()
    } else {
        0
    };
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    // Kept encodings go with the run, even while a producer cut at stop still holds
    // the state (its copy then fails to be kept).
    if let Some(cache) = &state.gzip_cache {
        let _ = std::fs::remove_dir_all(cache.dir.path());
    }

    let stats = lock(&state.stats);
    let mut by_bundle: Vec<BundleTraffic> = (0..state.view.bundles.len())
        .map(|b| {
            let (requests, bytes) = stats.by_bundle.get(&b).copied().unwrap_or_default();
            BundleTraffic {
                bundle: state.label(b),
                requests,
                bytes,
            }
        })
        .collect();
    by_bundle.sort_by(|a, b| a.bundle.cmp(&b.bundle));
    let mut faulty_members: Vec<FaultyMember> = lock(&state.faulty).values().cloned().collect();
    faulty_members.sort_by(|a, b| (&a.bundle, &a.member).cmp(&(&b.bundle, &b.member)));
    faulty_members.dedup_by(|a, b| (&a.bundle, &a.member) == (&b.bundle, &b.member));
    Ok(ServeReport {
        url,
        seconds: started.elapsed().as_secs_f64(),
        requests: stats.requests,
        bytes_sent: stats.bytes,
        by_bundle,
        client_errors: stats.client_errors,
        server_errors: stats.server_errors,
        faulty_members,
        cut_at_stop,
        gzip_encodings: stats.gzip_encodings,
        gzip_cache_hits: stats.gzip_cache_hits,
    })
}

/// `ADDR:PORT` (`0.0.0.0:5000`, `[::]:5000`, `edge-gw:5000`, `:5000` for every
/// address) to addresses, looked up without glibc's NSS (the binary may be static).
fn listen_addresses(listen: &str) -> Result<Vec<SocketAddr>, ServeError> {
    let bad = |detail: String| ServeError::Listen {
        address: listen.to_string(),
        error: io::Error::new(io::ErrorKind::InvalidInput, detail),
        hint: "",
    };
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| bad("expected ADDR:PORT, e.g. 0.0.0.0:5000".into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("{port:?} is not a port number (0 to 65535)")))?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::from(([0, 0, 0, 0], port))]);
    }
    crate::deliver::resolve::resolve(
        host,
        port,
        &crate::deliver::resolve::Sources::default(),
        Duration::from_secs(5),
    )
    .map_err(|e| bad(e.to_string()))
}

/// Resolves once a stop is asked for (or the stopper is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One HTTP/1.1 connection; on a stop, requests under way finish and idle
/// keep-alive connections close.
async fn connection<I>(io: I, state: Arc<State>, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(state, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60))
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// An answer before it becomes a response: a whole body, or a blob to stream.
enum Reply {
    Whole {
        status: StatusCode,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
        bundle: Option<usize>,
        layers: Option<LayerSet>,
        error: Option<String>,
    },
    Stream {
        status: StatusCode,
        headers: Vec<(&'static str, String)>,
        bundle: usize,
        transfer: Transfer,
    },
}

/// What a blob body streams.
struct Transfer {
    digest: Digest,
    blob: Blob,
    /// `(first byte, byte count)`; None: the whole blob.
    range: Option<(u64, u64)>,
    length: u64,
    /// The transfer slot, and the gzip encoder's: held until the body is done with.
    permits: Permits,
}

type Permits = (
    tokio::sync::OwnedSemaphorePermit,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

fn error_body(code: &str, message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
            .to_string(),
    )
}

fn error_reply(status: StatusCode, code: &str, message: String) -> Reply {
    Reply::Whole {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: error_body(code, &message),
        bundle: None,
        layers: None,
        error: (status.as_u16() >= 500).then_some(message),
    }
}

fn json_reply(value: serde_json::Value, extra: Vec<(&'static str, String)>) -> Reply {
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend(extra);
    Reply::Whole {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(value.to_string()),
        bundle: None,
        layers: None,
        error: None,
    }
}

/// An access-log entry before its answer is known.
fn entry_for(
    peer: SocketAddr,
    method: &str,
    path: String,
    user_agent: Option<String>,
) -> AccessEntry {
    AccessEntry {
        time: now(),
        client: peer.to_string(),
        method: method.to_string(),
        path,
        status: 0,
        bytes: 0,
        ms: 0,
        user_agent,
        layers: None,
        bundle: None,
        error: None,
    }
}

fn now() -> String {
    archpack_format::index::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

async fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let reply = route(&state, &req, user_agent.as_deref()).await;
    let mut entry = entry_for(peer, method.as_str(), path, user_agent);
    let head = method == Method::HEAD;
    let mut builder = Response::builder().header("docker-distribution-api-version", "registry/2.0");
    match reply {
        Reply::Whole {
            status,
            headers,
            body,
            bundle,
            layers,
            error,
        } => {
            builder = builder.status(status);
            if !headers.iter().any(|(k, _)| *k == "content-length") {
                builder = builder.header(CONTENT_LENGTH, body.len());
            }
            for (k, v) in headers {
                builder = builder.header(k, v);
            }
            entry.status = status.as_u16();
            entry.bytes = if head { 0 } else { body.len() as u64 };
            entry.ms = start.elapsed().as_millis() as u64;
            entry.layers = layers;
            entry.bundle = bundle.map(|b| state.label(b));
            entry.error = error;
            state.record(entry, bundle, false);
            let body = if head { Bytes::new() } else { body };
            builder
                .body(Full::new(body).map_err(|never| match never {}).boxed())
                .unwrap_or_else(|_| Response::new(empty()))
        }
        Reply::Stream {
            status,
            headers,
            bundle,
            transfer,
        } => {
            builder = builder.status(status);
            for (k, v) in headers {
                builder = builder.header(k, v);
            }
            builder = builder.header(CONTENT_LENGTH, transfer.length);
            entry.status = status.as_u16();
            entry.bundle = Some(state.label(bundle));
            let body = stream_body(state, transfer, entry, bundle, start);
            builder
                .body(body)
                .unwrap_or_else(|_| Response::new(empty()))
        }
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

async fn route(state: &Arc<State>, req: &Request<Incoming>, user_agent: Option<&str>) -> Reply {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let Some(rest) = path.strip_prefix("/v2") else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("{path}: not a registry path (this server answers /v2/)"),
        );
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!(
                "{} {path}: this registry is read-only (archpack serve answers pulls from a bundle); push into a registry of your own with archpack push",
                req.method()
            ),
        );
    }
    if rest.is_empty() || rest == "/" {
        return json_reply(serde_json::json!({}), Vec::new());
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("{path}: not a registry path (this server answers /v2/)"),
        );
    };
    if rest == "_catalog" {
        let names: Vec<&str> = state.view.repositories().collect();
        return paginated("repositories", None, &names, query, "/v2/_catalog");
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let Some(tags) = state.view.tags(repo) else {
            return unknown_repository(repo);
        };
        let tags: Vec<&str> = tags.collect();
        return paginated(
            "tags",
            Some(repo),
            &tags,
            query,
            &format!("/v2/{repo}/tags/list"),
        );
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(state, repo, reference, user_agent).await;
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        let range = req.headers().get(RANGE).and_then(|v| v.to_str().ok());
        return blob(state, repo, digest, req.method() == Method::HEAD, range).await;
    }
    error_reply(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        format!("{path}: not a registry path"),
    )
}

fn unknown_repository(repo: &str) -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        format!("repository {repo:?} is not in the bundles served"),
    )
}

/// `{key: [...]}` (and `name` for tags), after `last` and at most `n` of them, with a
/// `Link` to the next page as distribution gives it.
fn paginated(key: &str, repo: Option<&str>, all: &[&str], query: &str, path: &str) -> Reply {
    let mut n: Option<usize> = None;
    let mut last: Option<String> = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().ok(),
            Some(("last", v)) => last = Some(percent_decode(v)),
            _ => {}
        }
    }
    let after: Vec<&str> = all
        .iter()
        .copied()
        .filter(|x| last.as_deref().is_none_or(|l| *x > l))
        .collect();
    let page: Vec<&str> = match n {
        Some(n) => after.iter().copied().take(n).collect(),
        None => after.clone(),
    };
    let mut extra = Vec::new();
    if let (Some(n), Some(end)) = (n, page.last()) {
        if after.len() > page.len() {
            extra.push(("link", format!("<{path}?last={end}&n={n}>; rel=\"next\"")));
        }
    }
    let mut doc = serde_json::Map::new();
    if let Some(r) = repo {
        doc.insert("name".into(), r.into());
    }
    doc.insert(key.into(), page.into());
    json_reply(serde_json::Value::Object(doc), extra)
}

/// `%2F` and friends in a `last` parameter.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn manifest(
    state: &Arc<State>,
    repo: &str,
    reference: &str,
    user_agent: Option<&str>,
) -> Reply {
    if !state.view.has_repository(repo) {
        return unknown_repository(repo);
    }
    let unknown = || {
        error_reply(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("{repo}:{reference} is not in the bundles served"),
        )
    };
    let (digest, layers) = if reference.contains(':') {
        match reference.parse::<Digest>() {
            Ok(d) => (d, None),
            Err(_) => return unknown(),
        }
    } else {
        let set = state.view.choice.for_client(user_agent);
        match state.view.resolve_tag(repo, reference, set) {
            Some(d) => (d.clone(), Some(set)),
            None => return unknown(),
        }
    };
    let Some(document) = state.view.document(repo, &digest).cloned() else {
        return unknown();
    };
    match read_document(state, &digest, document).await {
        Ok((bytes, media_type, bundle)) => Reply::Whole {
            status: StatusCode::OK,
            headers: vec![
                ("content-type", media_type.to_string()),
                ("docker-content-digest", digest.to_string()),
                ("etag", format!("\"{digest}\"")),
            ],
            body: bytes,
            bundle,
            layers,
            error: None,
        },
        Err(reply) => reply,
    }
}

/// A document's bytes, checked against the signed index before any is sent.
async fn read_document(
    state: &Arc<State>,
    digest: &Digest,
    document: Document,
) -> Result<(Bytes, &'static str, Option<usize>), Reply> {
    match document {
        Document::Built { bytes, media_type } => Ok((bytes, media_type, None)),
        Document::Member {
            bundle,
            member,
            media_type,
        } => {
            if let Some(f) = state.faulty(digest) {
                return Err(faulty_reply(&f));
            }
            let st = state.clone();
            let read = tokio::task::spawn_blocking(move || {
                let (b, m) = st.view.member_at(bundle, member);
                b.reader.read_member(m)
            })
            .await;
            match read {
                Ok(Ok(bytes)) => Ok((Bytes::from(bytes), media_type, Some(bundle))),
                Ok(Err(e)) => Err(faulty_reply(&state.mark_faulty(
                    digest,
                    (bundle, member),
                    e.to_string(),
                ))),
                Err(e) => Err(error_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    format!("reading {digest}: {e}"),
                )),
            }
        }
    }
}

fn faulty_reply(f: &FaultyMember) -> Reply {
    error_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        format!(
            "{}: member {} failed its check against the signed index ({}); it is not served",
            f.bundle, f.member, f.detail
        ),
    )
}

/// A `Range` header: `Ok(None)` to serve the whole blob (none given, or one this server
/// does not take: several ranges), `Err(())` when it cannot be satisfied.
fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // The last N bytes.
        let n: u64 = last.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size.saturating_sub(1)
        } else {
            let end: u64 = last.parse().map_err(|_| ())?;
            if end < start {
                return Err(());
            }
            end.min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end - start + 1)))
}

async fn blob(
    state: &Arc<State>,
    repo: &str,
    digest: &str,
    head: bool,
    range: Option<&str>,
) -> Reply {
    if !state.view.has_repository(repo) {
        return unknown_repository(repo);
    }
    let unknown = || {
        error_reply(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is not in {repo}"),
        )
    };
    let Ok(digest) = digest.parse::<Digest>() else {
        return unknown();
    };
    let Some(blob) = state.view.blob(repo, &digest).cloned() else {
        // Manifests are blobs too (distribution answers them here).
        if let Some(document) = state.view.document(repo, &digest).cloned() {
            return match read_document(state, &digest, document).await {
                Ok((bytes, _, bundle)) => Reply::Whole {
                    status: StatusCode::OK,
                    headers: vec![
                        ("content-type", "application/octet-stream".into()),
                        ("docker-content-digest", digest.to_string()),
                    ],
                    body: bytes,
                    bundle,
                    layers: None,
                    error: None,
                },
                Err(reply) => reply,
            };
        }
        return unknown();
    };
    if let Some(f) = state.faulty(&digest) {
        return faulty_reply(&f);
    }
    let (bundle, size) = match &blob {
        Blob::Stored { bundle, member } => (*bundle, state.view.member_at(*bundle, *member).1.size),
        Blob::Gzip { bundle, size, .. } => (*bundle, *size),
    };
    let mut headers = vec![
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", digest.to_string()),
        (ACCEPT_RANGES.as_str(), "bytes".to_string()),
        ("etag", format!("\"{digest}\"")),
    ];
    if head {
        // The blob's length, not the empty body's.
        headers.push(("content-length", size.to_string()));
        return Reply::Whole {
            status: StatusCode::OK,
            headers,
            body: Bytes::new(),
            bundle: Some(bundle),
            layers: None,
            error: None,
        };
    }
    let range = match parse_range(range, size) {
        Ok(r) => r,
        Err(()) => {
            let mut reply = error_reply(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("the range asked for is outside blob {digest} ({size} bytes)"),
            );
            if let Reply::Whole { headers, .. } = &mut reply {
                headers.push((CONTENT_RANGE.as_str(), format!("bytes */{size}")));
            }
            return reply;
        }
    };
    // Wait for a transfer slot: memory stays bounded however many clients come.
    let stopping = || {
        error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the server is stopping".into(),
        )
    };
    let Ok(permit) = state.transfers.clone().acquire_owned().await else {
        return stopping();
    };
    // A gzip transfer also waits for an encoder (always after its transfer slot).
    let kept = state.gzip_cache.as_ref().is_some_and(|c| c.has(&digest));
    let encoder = match blob {
        Blob::Gzip { .. } if kept => None,
        Blob::Gzip { .. } => match state.gzip_encodes.clone().acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return stopping(),
        },
        Blob::Stored { .. } => None,
    };
    let status = match range {
        None => StatusCode::OK,
        Some((start, n)) => {
            if let Err(reply) = check_whole(state, &digest, &blob).await {
                return reply;
            }
            headers.push((
                CONTENT_RANGE.as_str(),
                format!("bytes {start}-{}/{size}", start + n - 1),
            ));
            StatusCode::PARTIAL_CONTENT
        }
    };
    Reply::Stream {
        status,
        headers,
        bundle,
        transfer: Transfer {
            digest,
            blob,
            length: range.map_or(size, |(_, n)| n),
            range,
            permits: (permit, encoder),
        },
    }
}

/// Before a range is served from it: the blob checked whole once in this run.
async fn check_whole(state: &Arc<State>, digest: &Digest, blob: &Blob) -> Result<(), Reply> {
    if lock(&state.verified).contains(digest) {
        return Ok(());
    }
    let st = state.clone();
    let (d, b) = (digest.clone(), blob.clone());
    let checked =
        tokio::task::spawn_blocking(move || write_blob(&st, &d, &b, &mut io::sink())).await;
    match checked {
        Ok(Ok(())) => {
            lock(&state.verified).insert(digest.clone());
            Ok(())
        }
        Ok(Err(e)) => Err(faulty_reply(&state.mark_faulty(
            digest,
            blob.member(),
            e.to_string(),
        ))),
        Err(e) => Err(error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("checking {digest}: {e}"),
        )),
    }
}

/// The blob's bytes into `out`; `Ok` only when they are the ones the signed index names
/// (digest and size; for gzip, the layer's own checks and the digest served in the
/// manifest).
fn write_blob(state: &State, digest: &Digest, blob: &Blob, out: &mut dyn Write) -> io::Result<()> {
    let mismatch = |detail: String| io::Error::new(io::ErrorKind::InvalidData, detail);
    match blob {
        Blob::Stored { bundle, member } => {
            let (b, m) = state.view.member_at(*bundle, *member);
            let (actual, n) = copy_hashed(b.reader.member_reader(m), out)?;
            if n != m.size || actual != m.digest {
                return Err(mismatch(format!(
                    "its bytes hash to {actual} ({n} bytes), the signed index says {} ({} bytes)",
                    m.digest, m.size
                )));
            }
        }
        Blob::Gzip {
            bundle,
            member,
            size,
        } => {
            let cache = state.gzip_cache.as_ref();
            if let Some(file) = cache.and_then(|c| c.open(digest)) {
                lock(&state.stats).gzip_cache_hits += 1;
                let (actual, n) = copy_hashed(file, out)?;
                if n != *size || actual != *digest {
                    cache.inspect(|c| c.forget(digest));
                    return Err(io::Error::other(KeptCopyFault(format!(
                        "the kept gzip encoding hashes to {actual} ({n} bytes), not {digest} ({size} bytes); dropped, the next pull encodes it again"
                    ))));
                }
                return Ok(());
            }
            lock(&state.stats).gzip_encodings += 1;
            let (b, m) = state.view.member_at(*bundle, *member);
            let mut tee = Tee {
                out,
                copy: cache.and_then(|c| c.start(*size)),
            };
            let mut hashing = HashingWriter::new(&mut tee);
            gzip::write_gzip(&b.reader, m, &mut hashing, state.gzip_threads)?;
            let (_, actual, n) = hashing.finish();
            if n != *size || actual != *digest {
                return Err(mismatch(format!(
                    "its gzip encoding gave {actual} ({n} bytes), the manifest served names {digest} ({size} bytes)"
                )));
            }
            if let (Some(c), Some(copy)) = (cache, tee.copy.take()) {
                c.keep(digest, copy);
            }
        }
    }
    Ok(())
}

/// Copies `from` into `out`: what the bytes hash to, and how many there were.
fn copy_hashed(from: impl io::Read, out: &mut dyn Write) -> io::Result<(Digest, u64)> {
    let mut reader = HashingReader::new(from);
    io::copy(&mut reader, out)?;
    Ok(reader.finish())
}

/// Holds the last bytes written back until [`HoldBack::release`]: a blob whose check
/// fails at its end is never sent complete.
struct HoldBack<W: Write> {
    inner: W,
    held: Vec<u8>,
}

impl<W: Write> Write for HoldBack<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.held.extend_from_slice(data);
        if self.held.len() >= 2 * HOLD_BACK {
            let send = self.held.len() - HOLD_BACK;
            self.inner.write_all(&self.held[..send])?;
            self.held.drain(..send);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> HoldBack<W> {
    fn release(mut self) -> io::Result<W> {
        self.inner.write_all(&self.held)?;
        Ok(self.inner)
    }
}

/// Passes on `count` bytes after skipping `skip`, then stops the producer.
struct Window<W: Write> {
    inner: W,
    skip: u64,
    count: u64,
}

#[derive(Debug)]
struct WindowFilled;

impl std::fmt::Display for WindowFilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("range sent")
    }
}

impl std::error::Error for WindowFilled {}

impl<W: Write> Write for Window<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.count == 0 {
            return Err(io::Error::other(WindowFilled));
        }
        let skipped = (self.skip.min(data.len() as u64)) as usize;
        self.skip -= skipped as u64;
        let rest = &data[skipped..];
        let n = (self.count.min(rest.len() as u64)) as usize;
        self.inner.write_all(&rest[..n])?;
        self.count -= n as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a transfer: a blocking producer reads (and checks) the blob into a bounded
/// channel; the body logs the request when it ends or is dropped.
fn stream_body(
    state: Arc<State>,
    transfer: Transfer,
    entry: AccessEntry,
    bundle: usize,
    start: Instant,
) -> Body {
    let (writer, receiver) = chunk_channel(CHANNEL_DEPTH, "the client went away");
    let Transfer {
        digest,
        blob,
        range,
        length,
        permits,
    } = transfer;
    let producer_state = state.clone();
    tokio::task::spawn_blocking(move || produce(&producer_state, &digest, &blob, range, writer));
    let mut log = TransferLog {
        state,
        entry: Some(entry),
        bundle,
        start,
        expected: length,
        sent: 0,
        failed: None,
        _permits: permits,
    };
    let mut chunks = Box::pin(receiver.into_stream());
    let stream = futures_util::stream::poll_fn(move |cx| {
        let next = chunks.poll_next_unpin(cx);
        if let std::task::Poll::Ready(Some(item)) = &next {
            log.saw(item);
        }
        next.map(|item| item.map(|r| r.map(Frame::data)))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// The producer side of a transfer.
fn produce(
    state: &State,
    digest: &Digest,
    blob: &Blob,
    range: Option<(u64, u64)>,
    writer: ChunkWriter,
) {
    match range {
        None => {
            let mut held = HoldBack {
                inner: writer,
                held: Vec::with_capacity(2 * HOLD_BACK),
            };
            match write_blob(state, digest, blob, &mut held) {
                Ok(()) => {
                    if let Ok(w) = held.release() {
                        if w.close().is_ok() {
                            lock(&state.verified).insert(digest.clone());
                        }
                    }
                }
                // The client went away, or a kept copy failed: nothing is wrong with
                // the member.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe || is_kept_copy_fault(&e) => {
                    held.inner.fail(e)
                }
                Err(e) => {
                    let f = state.mark_faulty(digest, blob.member(), e.to_string());
                    held.inner.fail(io::Error::new(e.kind(), f.to_string()));
                }
            }
        }
        Some((skip, count)) => {
            // Checked whole before (check_whole): stored bytes are read in place, a gzip
            // encoding is made up to the range's end.
            let mut out = writer;
            let written = match blob {
                Blob::Stored { bundle, member } => {
                    let (b, m) = state.view.member_at(*bundle, *member);
                    let mut part = b.reader.range_reader(m.offset + skip, count);
                    io::copy(&mut part, &mut out).map(|_| ())
                }
                Blob::Gzip { .. } => match state.gzip_cache.as_ref().and_then(|c| c.open(digest)) {
                    // Kept after its check: read in place, like a stored blob's range.
                    Some(kept) => {
                        lock(&state.stats).gzip_cache_hits += 1;
                        kept_range(kept, digest, skip, count, &mut out)
                    }
                    None => {
                        let mut window = Window {
                            inner: &mut out,
                            skip,
                            count,
                        };
                        match write_blob(state, digest, blob, &mut window) {
                            Err(e) if is_window_filled(&e) => Ok(()),
                            other => other,
                        }
                    }
                },
            };
            match written {
                Ok(()) => {
                    let _ = out.close();
                }
                Err(e) => out.fail(e),
            }
        }
    }
}

/// `count` bytes from `skip` of `kept`, the kept gzip encoding of `digest`.
fn kept_range(
    mut kept: std::fs::File,
    digest: &Digest,
    skip: u64,
    count: u64,
    out: &mut dyn Write,
) -> io::Result<()> {
    use std::io::{Read, Seek};
    kept.seek(io::SeekFrom::Start(skip))?;
    let copied = io::copy(&mut kept.take(count), out)?;
    if copied != count {
        return Err(io::Error::other(format!(
            "the kept gzip encoding of {digest} is shorter than the range"
        )));
    }
    Ok(())
}

fn is_window_filled(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<WindowFilled>())
}

/// Logs a transfer once its body is done with: sent whole, failed, or cut.
struct TransferLog {
    state: Arc<State>,
    entry: Option<AccessEntry>,
    bundle: usize,
    start: Instant,
    expected: u64,
    sent: u64,
    failed: Option<String>,
    _permits: Permits,
}

impl TransferLog {
    fn saw(&mut self, item: &io::Result<Bytes>) {
        match item {
            Ok(chunk) => self.sent += chunk.len() as u64,
            Err(e) => self.failed = Some(e.to_string()),
        }
    }
}

impl Drop for TransferLog {
    fn drop(&mut self) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.bytes = self.sent;
        entry.ms = self.start.elapsed().as_millis() as u64;
        let failed = self.failed.is_some();
        entry.error = self.failed.take().or_else(|| {
            (self.sent < self.expected).then(|| {
                format!(
                    "the client went away after {} of {} bytes",
                    self.sent, self.expected
                )
            })
        });
        self.state.record(entry, Some(self.bundle), failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_without_nss() {
        assert_eq!(
            listen_addresses("0.0.0.0:5000").unwrap(),
            vec![SocketAddr::from(([0, 0, 0, 0], 5000))]
        );
        assert_eq!(
            listen_addresses(":5001").unwrap(),
            vec![SocketAddr::from(([0, 0, 0, 0], 5001))]
        );
        assert_eq!(listen_addresses("[::1]:5002").unwrap()[0].port(), 5002);
        assert!(listen_addresses("localhost:5003").unwrap()[0]
            .ip()
            .is_loopback());
        assert!(listen_addresses("5000").is_err());
        assert!(listen_addresses("0.0.0.0:http").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 10))));
        assert_eq!(parse_range(Some("bytes=-5"), 100), Ok(Some((95, 5))));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 50))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn hold_back_keeps_the_tail_until_released() {
        let mut out = Vec::new();
        {
            let mut h = HoldBack {
                inner: &mut out,
                held: Vec::new(),
            };
            let data = vec![7u8; 3 * HOLD_BACK + 5];
            h.write_all(&data).unwrap();
            drop(h);
        }
        assert!(out.len() <= 2 * HOLD_BACK + 5);
        let mut out = Vec::new();
        let mut h = HoldBack {
            inner: &mut out,
            held: Vec::new(),
        };
        for _ in 0..10 {
            h.write_all(&[1u8; 100_000]).unwrap();
        }
        h.release().unwrap();
        assert_eq!(out.len(), 1_000_000);
    }

    #[test]
    fn a_window_passes_only_its_bytes() {
        let mut out = Vec::new();
        let mut w = Window {
            inner: &mut out,
            skip: 3,
            count: 4,
        };
        w.write_all(b"ab").unwrap();
        w.write_all(b"cdefghij").unwrap();
        let e = w.write_all(b"k").unwrap_err();
        assert!(is_window_filled(&e));
        assert_eq!(out, b"defg");
    }

    #[test]
    fn last_is_decoded() {
        assert_eq!(percent_decode("team%2Fsvc"), "team/svc");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
