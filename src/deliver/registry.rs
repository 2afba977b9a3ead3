//! Delivering into a registry (`push`): fill it from a bundle, each logical image one tag pointing at an
//! image index of exactly the platforms pushed. Children first (blobs, then manifests by
//! digest), the index last, so a tag never names a manifest the registry lacks.
//!
//! Layers are re-encoded from the bundle's zstd to gzip on the fly (Docker 20.10 and
//! older containerd cannot pull zstd) with a block-parallel gzip, or pushed as stored
//! with `--layer-format zstd`. Configs are unchanged, so image IDs match `load`'s.
//!
//! HTTPS with the system's CA certificates plus `--ca-cert`, or plain HTTP with
//! `--insecure`; basic auth, or Bearer tokens from the registry's token service.
//!
//! Why a client of our own on ureq rather than oci-client (checked with oci-client 0.17,
//! December 2026; what `tests/push.rs` needs is all there otherwise — blob checks,
//! mounts, chunked uploads, Basic and Bearer auth):
//! - it names images with oci-spec's `distribution::Reference`, whose compiled regex
//!   keeps ~10 MiB resident for the whole run (measured with massif; see
//!   `reference.rs`), a sixth of the 64 MiB budget a Pi gets;
//! - its `rustls-tls` feature brings aws-lc-rs/aws-lc-sys (through reqwest 0.13 and
//!   jsonwebtoken) beside the ring that rustls already uses here: a second C crypto
//!   library to cross-build for arm64, armv7 and armv5te;
//! - it builds its reqwest client itself, so a static binary cannot be given the
//!   resolver it needs instead of glibc's NSS (`/etc/hosts`, DNS).
//!
//! Credentials `docker login` stored (including credential helpers) are read with the
//! maintained `docker_credential` crate ([`stored_credentials`]).

use crate::deliver::archive::{member, ArchiveError};
use crate::deliver::gzip::{self, GzipDigestCache};
use crate::digest::Digest;
use crate::platform::Selected;
use crate::progress::Progress;
use crate::reference::ImageRef;
use archpack_format::{exit, oci, BundleReader, FormatError, Member, MemberKind};
use oci_spec::image::MediaType;
use std::io::{self, Read};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0:?} is not a registry reference; use HOST[:PORT][/PREFIX], e.g. registry.local:5000/team")]
    Target(String),
    #[error("{path}: {detail}")]
    CaCert { path: String, detail: String },
    #[error("{url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{what}: the registry answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{0}: authentication required or refused; give --username and --password-stdin, or log in with docker login")]
    Unauthorized(String),
    #[error(transparent)]
    Bundle(#[from] ArchiveError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Name(#[from] crate::reference::ReferenceError),
    #[error("{member}: {detail}; nothing was committed for this blob")]
    Corrupt { member: String, detail: String },
}

impl PushError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PushError::Bundle(e) => e.exit_code(),
            PushError::Format(e) => e.exit_code(),
            PushError::Corrupt { .. } => exit::INTEGRITY,
            PushError::Target(_)
            | PushError::CaCert { .. }
            | PushError::Http { .. }
            | PushError::Status { .. }
            | PushError::Unauthorized(_)
            | PushError::Name(_) => exit::FAILURE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    Gzip,
    Zstd,
}

pub struct PushOptions {
    /// `host[:port][/prefix]`.
    pub target: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Extra trusted CA certificates (PEM), on top of the system's.
    pub ca_certs: Vec<std::path::PathBuf>,
    /// Basic credentials (`--username`/`--password-stdin`, or what `docker login`
    /// stored: [`stored_credentials`]).
    pub username: Option<String>,
    pub password: Option<String>,
    pub layer_format: LayerFormat,
    pub gzip_threads: usize,
    /// Where gzip digests of layers are remembered between pushes (None: nowhere).
    pub digest_cache: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedImage {
    pub name: String,
    pub reference: String,
    pub platforms: Vec<String>,
    pub index_digest: Digest,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub images: Vec<PushedImage>,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    /// Blobs linked from another repository of this push instead of uploaded again.
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    /// Layers gzip-compressed by this push (a re-push whose digests are remembered: 0).
    pub gzip_passes: usize,
    /// Repository each blob was pushed to first, for mounts.
    #[serde(skip)]
    seen_in: std::collections::HashMap<Digest, String>,
}

impl PushReport {
    /// Whether `digest` is already in `repo`, or could be mounted there from a
    /// repository this push filled.
    fn have(
        &mut self,
        registry: &Registry,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, PushError> {
        if registry.blob_exists(repo, digest)? {
            self.blobs_present += 1;
            self.seen_in
                .entry(digest.clone())
                .or_insert_with(|| repo.to_string());
            return Ok(true);
        }
        if let Some(from) = self.seen_in.get(digest).filter(|f| *f != repo).cloned() {
            if registry.mount(repo, digest, &from)? {
                self.blobs_mounted += 1;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn uploaded(&mut self, repo: &str, digest: &Digest, bytes: u64) {
        self.blobs_uploaded += 1;
        self.bytes_uploaded += bytes;
        self.seen_in
            .entry(digest.clone())
            .or_insert_with(|| repo.to_string());
    }
}

/// Splits `host[:port][/prefix]`.
pub fn parse_target(target: &str) -> Result<(String, String), PushError> {
    let t = target.trim_end_matches('/').trim_start_matches("http://");
    let (host, prefix) = match t.split_once('/') {
        Some((h, p)) => (h, p),
        None => (t, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) || target.starts_with("https://") {
        return Err(PushError::Target(target.to_string()));
    }
    Ok((host.to_string(), prefix.to_string()))
}

/// System CA bundles Debian, Ubuntu, Fedora and friends keep.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The system's CA certificates plus the given PEM files.
fn trusted_roots(
    extra: &[std::path::PathBuf],
) -> Result<Vec<ureq::tls::Certificate<'static>>, PushError> {
    let mut certs = Vec::new();
    let mut add = |pem: &[u8], path: &str, required: bool| -> Result<(), PushError> {
        let before = certs.len();
        for item in ureq::tls::parse_pem(pem) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if required && certs.len() == before {
            return Err(PushError::CaCert {
                path: path.to_string(),
                detail: "no PEM certificate in it".into(),
            });
        }
        Ok(())
    };
    for bundle in SYSTEM_CA_BUNDLES {
        if let Ok(pem) = std::fs::read(bundle) {
            add(&pem, bundle, false)?;
        }
    }
    for path in extra {
        let pem = std::fs::read(path).map_err(|e| PushError::CaCert {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        add(&pem, &path.display().to_string(), true)?;
    }
    Ok(certs)
}

/// The user and password `docker login` stored for `host` — in `$DOCKER_CONFIG/config.json`
/// (default `~/.docker/config.json`) or through the credential helper (`credsStore`,
/// `credHelpers`) it names, as the docker CLI finds them. Identity tokens (OAuth
/// refresh tokens) are not used.
pub fn stored_credentials(host: &str) -> Option<(String, String)> {
    match docker_credential::get_credential(host) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            Some((user, password))
        }
        _ => None,
    }
}

/// Repository and tag in the registry for a logical name, under `prefix`: the name's
/// familiar repository (`svc`, `team/svc`) below the prefix, as `docker tag` would.
fn destination(prefix: &str, logical: &str) -> Result<(String, String), PushError> {
    let name = ImageRef::parse_tagged(logical)?;
    let repo = name.familiar_repository();
    let repo = if prefix.is_empty() {
        repo
    } else {
        format!("{prefix}/{repo}")
    };
    Ok((repo, name.tag().to_string()))
}

struct Registry {
    agent: ureq::Agent,
    base: String,
    host: String,
    /// The header sent with every request (Basic, or a Bearer token for the current
    /// scope), renewed before the token expires.
    auth: std::sync::Mutex<Option<Credential>>,
    /// Basic credentials, kept to ask a token service for Bearer tokens.
    basic: Option<String>,
    /// The token service (realm, service) when the registry asked for Bearer tokens.
    token_service: Option<(String, String)>,
}

/// An `Authorization` header; a Bearer token also says when to ask for the next one.
struct Credential {
    header: String,
    renew: Option<(std::time::Instant, Vec<String>)>,
}

/// Tokens are asked for again after this share of their lifetime: a push of big layers
/// over a slow link outlives the 60–300 s tokens registries usually hand out.
const TOKEN_RENEW_AT: f64 = 0.75;

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_challenge(header: &str) -> Option<(String, String)> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut realm = None;
    let mut service = String::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"').to_string();
        match k {
            "realm" => realm = Some(v),
            "service" => service = v,
            _ => {}
        }
    }
    Some((realm?, service))
}

impl Registry {
    /// Gets a Bearer token for `scopes` (`repository:NAME:pull,push`) from the token
    /// service the registry named, when it uses one.
    fn authorize(&self, scopes: &[String]) -> Result<(), PushError> {
        let Some((realm, service)) = self.token_service.clone() else {
            return Ok(());
        };
        let mut url = format!("{realm}?service={service}");
        for scope in scopes {
            url.push_str(&format!("&scope={scope}"));
        }
        let mut req = self.agent.get(&url);
        if let Some(b) = &self.basic {
            req = req.header("Authorization", b);
        }
        let resp = req.call().map_err(|e| self.http_err(&url, e))?;
        let mut resp = self.check("getting a registry token", resp, &[200])?;
        let body: serde_json::Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| self.http_err(&url, e))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| PushError::Http {
                url,
                detail: "the token service answered without a token".into(),
            })?;
        // The token spec's default when a service leaves expires_in out: 60 s.
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .filter(|&s| s > 0)
            .unwrap_or(60);
        let renew_at = std::time::Instant::now()
            + std::time::Duration::from_secs_f64(lifetime as f64 * TOKEN_RENEW_AT);
        *self.credential() = Some(Credential {
            header: format!("Bearer {token}"),
            renew: Some((renew_at, scopes.to_vec())),
        });
        Ok(())
    }

    fn credential(&self) -> std::sync::MutexGuard<'_, Option<Credential>> {
        // A panic elsewhere cannot leave a header half-written: take it as it is.
        self.auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `req` with the `Authorization` header, renewing the token first if it is due.
    fn authed<B>(
        &self,
        req: ureq::RequestBuilder<B>,
    ) -> Result<ureq::RequestBuilder<B>, PushError> {
        Ok(match self.auth_header()? {
            Some(a) => req.header("Authorization", a),
            None => req,
        })
    }

    /// The `Authorization` header for the next request, a new token if this one is due.
    fn auth_header(&self) -> Result<Option<String>, PushError> {
        let due = match &*self.credential() {
            Some(Credential {
                renew: Some((at, scopes)),
                ..
            }) if std::time::Instant::now() >= *at => Some(scopes.clone()),
            _ => None,
        };
        if let Some(scopes) = due {
            self.authorize(&scopes)?;
        }
        Ok(self.credential().as_ref().map(|c| c.header.clone()))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn http_err(&self, url: &str, e: ureq::Error) -> PushError {
        let mut detail = e.to_string();
        if detail.contains("certificate") || detail.contains("UnknownIssuer") {
            detail.push_str(
                " (the registry's TLS certificate is not trusted here: pass --ca-cert with your site's CA certificate)",
            );
        }
        PushError::Http {
            url: url.to_string(),
            detail,
        }
    }

    fn check(
        &self,
        what: &str,
        mut resp: ureq::http::Response<ureq::Body>,
        ok: &[u16],
    ) -> Result<ureq::http::Response<ureq::Body>, PushError> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            return Ok(resp);
        }
        if status == 401 || status == 403 {
            return Err(PushError::Unauthorized(self.host.clone()));
        }
        let body = resp
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(PushError::Status {
            what: what.to_string(),
            status,
            body,
        })
    }

    fn get(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, PushError> {
        let url = self.url(path);
        let req = self.authed(self.agent.get(&url))?;
        req.call().map_err(|e| self.http_err(&url, e))
    }

    fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, PushError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let req = self.authed(self.agent.head(&url))?;
        let resp = req.call().map_err(|e| self.http_err(&url, e))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => self
                .check(&format!("checking blob {digest}"), resp, &[])
                .map(|_| false),
        }
    }

    /// Asks the registry to link `digest` from `from` into `repo` (no bytes sent).
    /// Ok(true): mounted. Ok(false): not mounted (the started session is abandoned).
    fn mount(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool, PushError> {
        let url = self.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
        ));
        let req = self.authed(self.agent.post(&url))?;
        let resp = req.send_empty().map_err(|e| self.http_err(&url, e))?;
        Ok(self
            .check("mounting a blob", resp, &[201, 202])?
            .status()
            .as_u16()
            == 201)
    }

    fn start_upload(&self, repo: &str) -> Result<String, PushError> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let req = self.authed(self.agent.post(&url))?;
        let resp = req.send_empty().map_err(|e| self.http_err(&url, e))?;
        let resp = self.check("starting an upload", resp, &[202])?;
        location(&resp).ok_or_else(|| PushError::Http {
            url,
            detail: "upload started without a Location".into(),
        })
    }

    /// Streams `data` as chunked PATCHes; returns the last upload location.
    fn patch_all(
        &self,
        mut location_url: String,
        data: &mut dyn Read,
    ) -> Result<(String, u64), PushError> {
        let mut buf = vec![0u8; 8 << 20];
        let mut sent = 0u64;
        loop {
            let n = crate::source::read_up_to(data, &mut buf)
                .map_err(|e| io_to_push(e, &location_url))?;
            if n == 0 {
                break;
            }
            let url = self.url(&location_url);
            let req = self.authed(
                self.agent
                    .patch(&url)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{}-{}", sent, sent + n as u64 - 1)),
            )?;
            let resp = req.send(&buf[..n]).map_err(|e| self.http_err(&url, e))?;
            let resp = self.check("uploading", resp, &[202, 204])?;
            location_url = location(&resp).unwrap_or(location_url);
            sent += n as u64;
        }
        Ok((location_url, sent))
    }

    fn finish_upload(&self, location_url: &str, digest: &Digest) -> Result<(), PushError> {
        let sep = if location_url.contains('?') { '&' } else { '?' };
        let url = self.url(&format!("{location_url}{sep}digest={digest}"));
        let req = self.authed(self.agent.put(&url))?;
        let resp = req.send_empty().map_err(|e| self.http_err(&url, e))?;
        self.check(&format!("committing blob {digest}"), resp, &[201, 204])?;
        Ok(())
    }

    fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), PushError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let req = self.authed(self.agent.put(&url).header("Content-Type", media_type))?;
        let resp = req.send(bytes).map_err(|e| self.http_err(&url, e))?;
        self.check(
            &format!("pushing manifest {repo}:{reference}"),
            resp,
            &[201, 204],
        )?;
        Ok(())
    }
}

fn location(resp: &ureq::http::Response<ureq::Body>) -> Option<String> {
    resp.headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn io_to_push(e: io::Error, what: &str) -> PushError {
    match archpack_format::codec::LayerFault::in_io(&e) {
        Some(fault) => PushError::Corrupt {
            member: fault.member().to_string(),
            detail: fault.to_string(),
        },
        None => PushError::Http {
            url: what.to_string(),
            detail: e.to_string(),
        },
    }
}

/// A layer as it will be pushed: its digest and size in the pushed encoding.
struct PushedBlob {
    digest: Digest,
    size: u64,
    media_type: MediaType,
}

pub fn push(
    reader: &BundleReader,
    selected: &[Selected],
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport, PushError> {
    let (host, prefix) = parse_target(&opts.target)?;
    let roots = trusted_roots(&opts.ca_certs)?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
                .build(),
        )
        .build();
    // Names are looked up without glibc's NSS: the binary may be static (resolve.rs).
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        crate::deliver::resolve::StaticResolver,
    );
    let auth = match (&opts.username, &opts.password) {
        (Some(u), Some(p)) => {
            use ct_codecs::{Base64, Encoder};
            // Encoding into a String of the right size cannot fail.
            let token = Base64::encode_to_string(format!("{u}:{p}")).unwrap_or_default();
            Some(format!("Basic {token}"))
        }
        _ => None,
    };
    let mut registry = Registry {
        agent,
        base: format!("{}://{host}", if opts.insecure { "http" } else { "https" }),
        host: host.clone(),
        basic: auth.clone(),
        auth: std::sync::Mutex::new(auth.map(|header| Credential {
            header,
            renew: None,
        })),
        token_service: None,
    };
    let ping = registry.get("/v2/")?;
    // A registry with a token service says so in its challenge; tokens are then asked
    // for per repository (with pull on the repositories mounts come from).
    if ping.status().as_u16() == 401 {
        if let Some(challenge) = ping
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
        {
            registry.token_service = Some(challenge);
            *registry.credential() = None;
        }
    }
    if registry.token_service.is_none() {
        registry.check("reaching the registry", ping, &[200])?;
    }

    let mut report = PushReport::default();
    // Group the selected platform entries per logical image.
    let mut names: Vec<&str> = selected.iter().map(|s| s.image.name.as_str()).collect();
    names.dedup();
    for name in names {
        let entries: Vec<&Selected> = selected.iter().filter(|s| s.image.name == name).collect();
        let (repo, tag) = destination(&prefix, name)?;
        let mut scopes = vec![format!("repository:{repo}:pull,push")];
        let mut others: Vec<String> = report.seen_in.values().cloned().collect();
        others.sort();
        others.dedup();
        scopes.extend(
            others
                .into_iter()
                .filter(|r| *r != repo)
                .map(|r| format!("repository:{r}:pull")),
        );
        registry.authorize(&scopes)?;
        progress.note(&format!(
            "pushing {name} ({} platform{}) to {host}/{repo}:{tag}",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" }
        ));
        let mut descriptors = Vec::new();
        for s in &entries {
            let config = member(reader, &s.entry.config)?;
            push_stored_blob(&registry, &repo, reader, config, &mut report)?;
            let mut layers = Vec::new();
            for l in &s.entry.layers {
                let m = member(reader, l)?;
                layers.push(push_layer(
                    &registry,
                    &repo,
                    reader,
                    m,
                    opts,
                    &mut report,
                    progress,
                )?);
            }
            let manifest = oci::manifest(
                oci::descriptor(MediaType::ImageConfig, &config.digest, config.size),
                layers
                    .iter()
                    .map(|b| oci::descriptor(b.media_type.clone(), &b.digest, b.size))
                    .collect(),
            )?;
            let digest = Digest::of(&manifest);
            registry.put_manifest(
                &repo,
                &digest.to_string(),
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            )?;
            descriptors.push(oci::platform_manifest(
                &digest,
                manifest.len() as u64,
                &s.entry.platform,
            ));
        }
        let image_index = oci::index(descriptors)?;
        registry.put_manifest(
            &repo,
            &tag,
            "application/vnd.oci.image.index.v1+json",
            &image_index,
        )?;
        report.images.push(PushedImage {
            name: name.to_string(),
            reference: format!("{host}/{repo}:{tag}"),
            platforms: entries
                .iter()
                .map(|s| s.entry.platform.to_string())
                .collect(),
            index_digest: Digest::of(&image_index),
        });
    }
    Ok(report)
}

fn push_layer(
    registry: &Registry,
    repo: &str,
    reader: &BundleReader,
    m: &Member,
    opts: &PushOptions,
    report: &mut PushReport,
    progress: &dyn Progress,
) -> Result<PushedBlob, PushError> {
    debug_assert_eq!(m.kind, MemberKind::Layer);
    if opts.layer_format == LayerFormat::Zstd {
        push_stored_blob(registry, repo, reader, m, report)?;
        return Ok(PushedBlob {
            digest: m.digest.clone(),
            size: m.size,
            media_type: MediaType::ImageLayerZstd,
        });
    }
    let blob = |digest: Digest, size: u64| PushedBlob {
        digest,
        size,
        media_type: MediaType::ImageLayerGzip,
    };
    // The gzip digest decides whether the registry has it: remembered from an earlier
    // push, or learnt by compressing once (deterministic); a second pass uploads.
    let cache = GzipDigestCache {
        dir: opts.digest_cache.as_deref(),
    };
    let known = gzip::gzip_digest(reader, m, &cache, opts.gzip_threads, &|_| {})
        .map_err(|e| io_to_push(e, &m.name))?;
    if !known.remembered {
        report.gzip_passes += 1;
    }
    let remembered = known.remembered;
    let (digest, gz_size) = (known.digest, known.size);
    if report.have(registry, repo, &digest)? {
        return Ok(blob(digest, gz_size));
    }
    progress.start(&format!("uploading {}", digest.short()), Some(gz_size));
    let location = registry.start_upload(repo)?;
    // Compress into a pipe read by the uploader: bounded memory, both cores busy.
    let (writer, receiver) = crate::bridge::chunk_channel(4, "the upload stopped");
    let threads = opts.gzip_threads;
    let advance = |n: u64| progress.advance(n);
    let result = std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut pipe = writer;
            match gzip::write_gzip(reader, m, &mut pipe, threads) {
                Ok(()) => {
                    let _ = pipe.close();
                }
                Err(e) => pipe.fail(e),
            }
        });
        let mut pipe_reader = crate::digest::HashingReader::new(receiver.into_reader(&advance));
        let uploaded = registry.patch_all(location, &mut pipe_reader);
        // Dropping the receiving end first: after a failed upload, a producer blocked
        // on the full pipe gets an error instead of waiting forever on join.
        let sent = pipe_reader.finish();
        let _ = producer.join();
        uploaded.map(|(location, _)| (location, sent))
    });
    progress.finish();
    report.gzip_passes += 1;
    let (location, (sent_digest, sent)) = result?;
    if (&sent_digest, sent) != (&digest, gz_size) {
        if !remembered {
            return Err(PushError::Corrupt {
                member: m.name.clone(),
                detail: format!(
                    "re-encoding gave {sent_digest} ({sent} bytes), the first pass {digest} ({gz_size} bytes)"
                ),
            });
        }
        // A stale cache entry: what was sent is what counts.
        cache.put(&m.digest, &sent_digest, sent);
    }
    registry.finish_upload(&location, &sent_digest)?;
    report.uploaded(repo, &sent_digest, sent);
    Ok(blob(sent_digest, sent))
}

/// A blob pushed as stored (configs; zstd layers with `--layer-format zstd`), checked
/// against its digest before the upload is committed.
fn push_stored_blob(
    registry: &Registry,
    repo: &str,
    reader: &BundleReader,
    m: &Member,
    report: &mut PushReport,
) -> Result<(), PushError> {
    if report.have(registry, repo, &m.digest)? {
        return Ok(());
    }
    let location = registry.start_upload(repo)?;
    let mut checked = crate::digest::HashingReader::new(reader.member_reader(m));
    let (location, sent) = registry.patch_all(location, &mut checked)?;
    let (digest, n) = checked.finish();
    if digest != m.digest || n != m.size {
        return Err(PushError::Corrupt {
            member: m.name.clone(),
            detail: format!("digest {digest}, the index says {}", m.digest),
        });
    }
    registry.finish_upload(&location, &m.digest)?;
    report.uploaded(repo, &m.digest, sent);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_destinations() {
        assert_eq!(
            parse_target("registry.local:5000/team").unwrap(),
            ("registry.local:5000".into(), "team".into())
        );
        assert_eq!(
            parse_target("127.0.0.1:5000").unwrap(),
            ("127.0.0.1:5000".into(), String::new())
        );
        assert!(parse_target("").is_err());
        assert_eq!(
            destination("team", "svc:v1.0").unwrap(),
            ("team/svc".into(), "v1.0".into())
        );
        assert_eq!(
            destination("", "svc").unwrap(),
            ("svc".into(), "latest".into())
        );
        assert_eq!(
            destination("", "docker.io/library/svc:2").unwrap(),
            ("svc".into(), "2".into())
        );
    }
}
