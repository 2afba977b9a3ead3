//! The connection to a Docker-compatible engine (Docker, podman's compatible API),
//! shared by the engine source, the probe and the loader. The endpoint is resolved once
//! ([`Endpoint::from_env`], as the docker CLI does: `DOCKER_HOST`, TLS, `ssh://`, the
//! current docker context) and handed down; blocking callers drive the async client
//! through a private tokio runtime.

mod endpoint;
mod ssh;

pub use endpoint::{DockerEnv, Endpoint, Transport};

use bollard::models::{SystemInfo, SystemVersion};
use bollard::{Docker, API_DEFAULT_VERSION};
use std::sync::OnceLock;
use std::time::Duration;

/// Loads and exports take as long as the bytes take; the engine answers only at the end.
const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Seconds to wait for the engine's first answer.
const CONNECT_TIMEOUT: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the docker engine at {host}: {detail}{hint}")]
    Unreachable {
        host: String,
        detail: String,
        /// What to try, where the failure suggests something.
        hint: String,
    },
    #[error("the docker engine at {host}: {detail}")]
    Api { host: String, detail: String },
    #[error("DOCKER_HOST={host:?} is not an engine address: {detail}")]
    BadHost { host: String, detail: String },
    #[error("docker context {context:?}: {detail}")]
    BadContext { context: String, detail: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub struct Engine {
    pub client: Docker,
    pub host: String,
    pub endpoint: Endpoint,
    pub runtime: tokio::runtime::Runtime,
    /// The local end of an `ssh://` engine's connections, while the engine is in use.
    ssh: Option<ssh::SshTunnel>,
    // `/info` and `/version` do not change within one command; the probe and the loader
    // both need them, so each is asked once.
    info: OnceLock<SystemInfo>,
    version: OnceLock<SystemVersion>,
}

impl Engine {
    /// Connects and negotiates the API version, so Debian's 20.10 (API 1.41) and newer
    /// engines both work.
    pub fn connect(endpoint: &Endpoint) -> Result<Engine, EngineError> {
        let host = match &endpoint.context {
            Some(c) => format!("{} (docker context {c})", endpoint.host),
            None => endpoint.host.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        let unreachable = |detail: String, ssh: Option<&ssh::SshTunnel>| {
            let said = ssh.and_then(|t| t.last_error());
            let detail = match said {
                Some(s) => format!("{detail} (ssh: {s})"),
                None => detail,
            };
            EngineError::Unreachable {
                host: host.clone(),
                hint: unreachable_hint(&endpoint.transport, &detail),
                detail,
            }
        };
        let mut tunnel = None;
        let client = match &endpoint.transport {
            Transport::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                CONNECT_TIMEOUT,
                API_DEFAULT_VERSION,
            ),
            Transport::Http { addr } => {
                Docker::connect_with_http(addr, CONNECT_TIMEOUT, API_DEFAULT_VERSION)
            }
            Transport::Tls { addr, certs } => Docker::connect_with_ssl(
                addr,
                &certs.join("key.pem"),
                &certs.join("cert.pem"),
                &certs.join("ca.pem"),
                CONNECT_TIMEOUT,
                API_DEFAULT_VERSION,
            ),
            Transport::Ssh {
                user,
                host: ssh_host,
                port,
                socket,
            } => {
                let t = ssh::SshTunnel::start(user.as_deref(), ssh_host, *port, socket.as_deref())
                    .map_err(|e| unreachable(format!("starting the ssh tunnel: {e}"), None))?;
                let client = Docker::connect_with_unix(
                    &t.socket.to_string_lossy(),
                    CONNECT_TIMEOUT,
                    API_DEFAULT_VERSION,
                );
                tunnel = Some(t);
                client
            }
        }
        .map_err(|e| unreachable(with_causes(&e), tunnel.as_ref()))?;
        let client = runtime
            .block_on(client.negotiate_version())
            .map_err(|e| unreachable(with_causes(&e), tunnel.as_ref()))?;
        // negotiate_version asked `/version`: the engine is reachable.
        let client = client.with_timeout(LONG_TIMEOUT);
        Ok(Engine {
            client,
            host,
            endpoint: endpoint.clone(),
            runtime,
            ssh: tunnel,
            info: OnceLock::new(),
            version: OnceLock::new(),
        })
    }

    /// The engine's `/info`, asked once per command.
    pub fn info(&self) -> Result<&SystemInfo, EngineError> {
        self.asked_once(&self.info, self.client.info())
    }

    /// The engine's `/version`, asked once per command.
    pub fn version(&self) -> Result<&SystemVersion, EngineError> {
        self.asked_once(&self.version, self.client.version())
    }

    fn asked_once<'a, T>(
        &'a self,
        cell: &'a OnceLock<T>,
        ask: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<&'a T, EngineError> {
        if let Some(answer) = cell.get() {
            return Ok(answer);
        }
        let answer = self.runtime.block_on(ask).map_err(|e| self.api_error(e))?;
        Ok(cell.get_or_init(|| answer))
    }

    pub fn api_error(&self, e: impl std::fmt::Display) -> EngineError {
        let said = self.ssh.as_ref().and_then(|t| t.last_error());
        EngineError::Api {
            host: self.host.clone(),
            detail: match said {
                Some(s) => format!("{e} (ssh: {s})"),
                None => e.to_string(),
            },
        }
    }
}

/// An error and the causes under it: bollard's "client error (Connect)" hides the TLS
/// or socket error that says what is wrong.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// What to try, only where the failure points at something: nothing listening (is it
/// running?), no permission, TLS on one side only, ssh refusing.
fn unreachable_hint(transport: &Transport, detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("http request to an https server") {
        return " (the engine speaks TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem, or use https://)".into();
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("cert path") {
        return " (check the TLS files in DOCKER_CERT_PATH: ca.pem must have signed the engine's certificate, cert.pem/key.pem must be a client certificate it accepts)".into();
    }
    if lower.contains("permission denied") {
        return match transport {
            Transport::Ssh { .. } => " (ssh could not log in: check the user, the key and `ssh HOST docker version` by hand)".into(),
            _ => " (no permission on the socket: run as root or as a member of the docker group)".into(),
        };
    }
    let nothing_there = lower.contains("no such file")
        || lower.contains("socket not found")
        || lower.contains("connection refused")
        || lower.contains("not found");
    match transport {
        Transport::Ssh { .. } if lower.contains("invalid http") => {
            " (what came back over ssh is not the engine's API: does `ssh HOST docker system dial-stdio` work by hand?)".into()
        }
        Transport::Ssh { .. } if lower.contains("ssh:") => {
            " (ssh reached the host but not its engine: is docker installed and running there?)"
                .into()
        }
        Transport::Unix(_) | Transport::Http { .. } | Transport::Tls { .. } if nothing_there => {
            " (is the engine running? point DOCKER_HOST at it, e.g. unix:///var/run/docker.sock)"
                .into()
        }
        _ => String::new(),
    }
}

/// Whether the engine keeps images in the containerd image store (Docker 29's default
/// for new installs): image IDs are manifest digests there, and it reads only complete
/// archives.
pub fn uses_containerd_store(engine: &Engine) -> Result<bool, EngineError> {
    let info = engine.info()?;
    Ok(info
        .driver_status
        .iter()
        .flatten()
        .any(|kv| kv.iter().any(|v| v.contains("io.containerd.snapshotter"))))
}

/// Whether the engine is podman's Docker-compatible service.
pub fn is_podman(engine: &Engine) -> Result<bool, EngineError> {
    let version = engine.version()?;
    Ok(version
        .components
        .iter()
        .flatten()
        .any(|c| c.name.to_ascii_lowercase().contains("podman")))
}
