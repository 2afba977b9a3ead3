//! Where the engine is, found the way the docker CLI finds it: `DOCKER_HOST` (with
//! `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for TLS), else the docker context named by
//! `DOCKER_CONTEXT` or the CLI's `currentContext`, else the default socket.

use super::EngineError;
use std::path::{Path, PathBuf};

const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// How to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A local socket.
    Unix(PathBuf),
    /// Plain HTTP (`tcp://` without TLS, `http://`).
    Http { addr: String },
    /// HTTPS with the client certificate the engine wants (`ca.pem`, `cert.pem`, `key.pem`).
    Tls { addr: String, certs: PathBuf },
    /// `ssh://[user@]host[:port][/socket]`, through `ssh … docker system dial-stdio`.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// The engine's socket on the remote host, when the URL names one.
        socket: Option<String>,
    },
}

/// The engine's whereabouts, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As the user wrote it (or the context gave it), for messages and for the compose
    /// child process.
    pub host: String,
    pub transport: Transport,
    /// The docker context it came from, if any.
    pub context: Option<String>,
}

/// The environment the docker CLI reads, gathered so resolution is a pure function.
#[derive(Debug, Clone, Default)]
pub struct DockerEnv {
    pub docker_host: Option<String>,
    pub tls_verify: Option<String>,
    pub cert_path: Option<PathBuf>,
    pub context: Option<String>,
    /// `$DOCKER_CONFIG`, default `~/.docker`.
    pub config_dir: Option<PathBuf>,
}

impl DockerEnv {
    pub fn from_process() -> DockerEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let config_dir = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        DockerEnv {
            docker_host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            cert_path: var("DOCKER_CERT_PATH").map(PathBuf::from),
            context: var("DOCKER_CONTEXT"),
            config_dir,
        }
    }
}

impl Endpoint {
    /// The process's environment, as the docker CLI reads it.
    pub fn from_env() -> Result<Endpoint, EngineError> {
        Endpoint::resolve(&DockerEnv::from_process())
    }

    /// A plain host URL (tests, `--host`-like uses): no TLS, no context.
    pub fn from_host(host: &str) -> Result<Endpoint, EngineError> {
        Endpoint::resolve(&DockerEnv {
            docker_host: Some(host.to_string()),
            ..DockerEnv::default()
        })
    }

    pub fn resolve(env: &DockerEnv) -> Result<Endpoint, EngineError> {
        if let Some(host) = &env.docker_host {
            let certs = env
                .cert_path
                .clone()
                .or_else(|| env.config_dir.clone())
                .unwrap_or_else(|| PathBuf::from(".docker"));
            return Ok(Endpoint {
                host: host.clone(),
                transport: parse_host(host, env.tls_verify.is_some(), certs)?,
                context: None,
            });
        }
        let context = env.context.clone().or_else(|| current_context(env));
        match context.as_deref() {
            None | Some("default") => Ok(Endpoint {
                host: DEFAULT_SOCKET.into(),
                transport: Transport::Unix(PathBuf::from("/var/run/docker.sock")),
                context: None,
            }),
            Some(name) => context_endpoint(env, name),
        }
    }

    /// A unix socket means the engine's disk is this host's disk.
    pub fn is_local(&self) -> bool {
        matches!(self.transport, Transport::Unix(_))
    }
}

fn bad_host(host: &str, detail: &str) -> EngineError {
    EngineError::BadHost {
        host: host.to_string(),
        detail: detail.to_string(),
    }
}

/// `unix://`, `tcp://`, `http://`, `https://`, `ssh://`; TLS for `tcp://` when asked,
/// with the client certificates in `certs`.
fn parse_host(host: &str, tls: bool, certs: PathBuf) -> Result<Transport, EngineError> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad_host(host, "no socket path after unix://"));
        }
        return Ok(Transport::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        let addr = with_default_port(addr, tls);
        return Ok(if tls {
            Transport::Tls { addr, certs }
        } else {
            Transport::Http { addr }
        });
    }
    if let Some(addr) = host.strip_prefix("http://") {
        return Ok(Transport::Http {
            addr: with_default_port(addr, false),
        });
    }
    if let Some(addr) = host.strip_prefix("https://") {
        return Ok(Transport::Tls {
            addr: with_default_port(addr, true),
            certs,
        });
    }
    if let Some(rest) = host.strip_prefix("ssh://") {
        let (authority, socket) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (name, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| bad_host(host, "the port after ':' is not a number"))?;
                (h.trim_matches(['[', ']']).to_string(), Some(port))
            }
            _ => (hostport.to_string(), None),
        };
        if name.is_empty() {
            return Err(bad_host(host, "no host after ssh://"));
        }
        return Ok(Transport::Ssh {
            user,
            host: name,
            port,
            socket: socket.filter(|s| s != "/"),
        });
    }
    Err(bad_host(
        host,
        "use unix:///path/docker.sock, tcp://HOST:PORT (with DOCKER_TLS_VERIFY=1 for TLS), https://HOST:PORT or ssh://[USER@]HOST",
    ))
}

/// Docker's ports: 2375 plain, 2376 TLS.
fn with_default_port(addr: &str, tls: bool) -> String {
    let addr = addr.trim_end_matches('/');
    let has_port = addr.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty()
    });
    if has_port {
        addr.to_string()
    } else {
        format!("{addr}:{}", if tls { 2376 } else { 2375 })
    }
}

/// `currentContext` in the CLI's `config.json`.
fn current_context(env: &DockerEnv) -> Option<String> {
    let text = std::fs::read_to_string(env.config_dir.as_ref()?.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config
        .get("currentContext")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// A context's docker endpoint: `contexts/meta/<sha256 of name>/meta.json`, its TLS files
/// in `contexts/tls/<sha256 of name>/docker/`.
fn context_endpoint(env: &DockerEnv, name: &str) -> Result<Endpoint, EngineError> {
    let missing = |detail: String| EngineError::BadContext {
        context: name.to_string(),
        detail,
    };
    let config_dir = env.config_dir.clone().ok_or_else(|| {
        missing("no docker config directory (HOME and DOCKER_CONFIG unset)".into())
    })?;
    let id = archpack_format::digest::Digest::of(name.as_bytes()).hex();
    let meta_path = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| {
        missing(format!(
            "{}: {e} (see `docker context ls`)",
            meta_path.display()
        ))
    })?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| missing(format!("{}: {e}", meta_path.display())))?;
    let docker = &meta["Endpoints"]["docker"];
    let host = docker["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            missing(format!(
                "{} names no docker endpoint Host",
                meta_path.display()
            ))
        })?
        .to_string();
    let tls_dir = config_dir.join("contexts/tls").join(&id).join("docker");
    let tls = tls_dir.join("ca.pem").exists() && docker["SkipTLSVerify"].as_bool() != Some(true);
    let transport = parse_host(&host, tls, tls_dir)?;
    Ok(Endpoint {
        host,
        transport,
        context: Some(name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(host: &str, tls: bool) -> Transport {
        Endpoint::resolve(&DockerEnv {
            docker_host: Some(host.into()),
            tls_verify: tls.then(|| "1".into()),
            cert_path: Some("/certs".into()),
            ..DockerEnv::default()
        })
        .unwrap()
        .transport
    }

    #[test]
    fn hosts_resolve_as_the_docker_cli_reads_them() {
        assert_eq!(
            resolve("unix:///run/d.sock", false),
            Transport::Unix("/run/d.sock".into())
        );
        assert_eq!(
            resolve("tcp://h:2376", true),
            Transport::Tls {
                addr: "h:2376".into(),
                certs: "/certs".into()
            }
        );
        assert_eq!(
            resolve("tcp://h", false),
            Transport::Http {
                addr: "h:2375".into()
            }
        );
        assert_eq!(
            resolve("https://h", false),
            Transport::Tls {
                addr: "h:2376".into(),
                certs: "/certs".into()
            }
        );
        assert_eq!(
            resolve("ssh://pi@edge:2222/run/user/1000/docker.sock", false),
            Transport::Ssh {
                user: Some("pi".into()),
                host: "edge".into(),
                port: Some(2222),
                socket: Some("/run/user/1000/docker.sock".into())
            }
        );
        assert_eq!(
            resolve("ssh://edge", false),
            Transport::Ssh {
                user: None,
                host: "edge".into(),
                port: None,
                socket: None
            }
        );
        for bad in [
            "ftp://x",
            "unix://",
            "ssh://",
            "ssh://h:port",
            "/var/run/docker.sock",
        ] {
            assert!(
                Endpoint::resolve(&DockerEnv {
                    docker_host: Some(bad.into()),
                    ..DockerEnv::default()
                })
                .is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn the_current_context_is_used_when_docker_host_is_unset() {
        let dir = tempfile::tempdir().unwrap();
        let id = archpack_format::digest::Digest::of(b"edge").hex();
        let meta = dir.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"edge","Endpoints":{"docker":{"Host":"tcp://10.0.0.7:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        let tls = dir.path().join("contexts/tls").join(&id).join("docker");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.pem"), "x").unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"edge"}"#,
        )
        .unwrap();
        let env = DockerEnv {
            config_dir: Some(dir.path().into()),
            ..DockerEnv::default()
        };
        let e = Endpoint::resolve(&env).unwrap();
        assert_eq!(e.context.as_deref(), Some("edge"));
        assert_eq!(
            e.transport,
            Transport::Tls {
                addr: "10.0.0.7:2376".into(),
                certs: tls.clone()
            }
        );
        // DOCKER_CONTEXT names one that does not exist: said so, with where it looked.
        let e = Endpoint::resolve(&DockerEnv {
            context: Some("nope".into()),
            ..env.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("nope") && e.contains("docker context ls"), "{e}");
        // DOCKER_HOST wins over any context.
        let e = Endpoint::resolve(&DockerEnv {
            docker_host: Some("unix:///x.sock".into()),
            ..env
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Unix("/x.sock".into()));
    }
}
