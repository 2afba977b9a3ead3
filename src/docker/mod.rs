//! The connection to a Docker-compatible engine (Docker, podman's compatible API),
//! shared by the engine source, the probe and the loader. The endpoint is resolved once
//! ([`Endpoint::from_env`], as the docker CLI does) and handed down; blocking callers
//! drive the async client through a private tokio runtime.

use bollard::models::{SystemInfo, SystemVersion};
use bollard::Docker;
use std::sync::OnceLock;
use std::time::Duration;

/// Loads and exports take as long as the bytes take; the engine answers only at the end.
const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

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
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where the engine is, as the docker CLI would find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///…`, `tcp://…`, `http://…`.
    pub host: String,
}

impl Endpoint {
    /// `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Result<Endpoint, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Ok(Endpoint { host })
    }

    /// A unix socket means the engine's disk is this host's disk.
    pub fn is_local(&self) -> bool {
        self.host.starts_with("unix://")
    }
}

pub struct Engine {
    pub client: Docker,
    pub host: String,
    pub endpoint: Endpoint,
    pub runtime: tokio::runtime::Runtime,
    // `/info` and `/version` do not change within one command; the probe and the loader
    // both need them, so each is asked once.
    info: OnceLock<SystemInfo>,
    version: OnceLock<SystemVersion>,
}

impl Engine {
    /// Connects and negotiates the API version, so Debian's 20.10 (API 1.41) and newer
    /// engines both work.
    pub fn connect(endpoint: &Endpoint) -> Result<Engine, EngineError> {
        let host = endpoint.host.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        let unreachable = |detail: String| EngineError::Unreachable {
            host: host.clone(),
            hint: unreachable_hint(&host, &detail),
            detail,
        };
        let client = Docker::connect_with_host(&host).map_err(|e| unreachable(e.to_string()))?;
        let client = runtime
            .block_on(
                client
                    .with_timeout(Duration::from_secs(30))
                    .negotiate_version(),
            )
            .map_err(|e| unreachable(e.to_string()))?;
        // negotiate_version asked `/version`: the engine is reachable.
        let client = client.with_timeout(LONG_TIMEOUT);
        Ok(Engine {
            client,
            host,
            endpoint: endpoint.clone(),
            runtime,
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
        EngineError::Api {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }
}

/// "Is dockerd running?" only where the failure looks like nothing listening.
fn unreachable_hint(host: &str, detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    let nothing_there = lower.contains("no such file")
        || lower.contains("connection refused")
        || lower.contains("not found");
    if nothing_there {
        format!(" (is the engine running? set DOCKER_HOST to its socket; now {host})")
    } else if lower.contains("permission denied") {
        " (no permission on the socket: run as root or as a member of the docker group)".into()
    } else {
        String::new()
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
