//! The connection to a Docker-compatible engine (`DOCKER_HOST`, API version negotiated),
//! shared by the daemon source, the probe and the loader. Blocking callers drive it
//! through a private tokio runtime.

use bollard::models::{SystemInfo, SystemVersion};
use bollard::Docker;
use std::sync::OnceLock;
use std::time::Duration;

/// Loads and exports take as long as the bytes take; the engine answers only at the end.
const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the docker engine at {host}: {detail} (is dockerd running? set DOCKER_HOST to its socket)")]
    Unreachable { host: String, detail: String },
    #[error("docker engine at {host}: {detail}")]
    Api { host: String, detail: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub struct Engine {
    pub client: Docker,
    pub host: String,
    pub runtime: tokio::runtime::Runtime,
    // `/info` and `/version` do not change within one command; the probe and the loader
    // both need them, so each is asked once.
    info: OnceLock<SystemInfo>,
    version: OnceLock<SystemVersion>,
}

impl Engine {
    /// Connects to `DOCKER_HOST` (default `unix:///var/run/docker.sock`) and negotiates
    /// the API version, so Debian's 20.10 (API 1.41) and newer engines both work.
    pub fn connect() -> Result<Engine, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        let unreachable = |detail: String| EngineError::Unreachable {
            host: host.clone(),
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
