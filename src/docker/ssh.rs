//! `ssh://` engines, reached the way the docker CLI reaches them: every connection is an
//! `ssh … docker system dial-stdio` whose stdin and stdout carry the HTTP. The client
//! talks to a private unix socket here; each connection to it runs one such ssh.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// A local socket whose connections are piped through ssh to the remote engine.
pub struct SshTunnel {
    /// Holds the socket; removed with the tunnel.
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The last thing ssh said on stderr, for an error message.
    stderr: Arc<Mutex<String>>,
}

impl SshTunnel {
    pub fn start(
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
        remote_socket: Option<&str>,
    ) -> io::Result<SshTunnel> {
        let dir = tempfile::Builder::new().prefix("archpack-ssh-").tempdir()?;
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket)?;
        let mut args: Vec<String> = vec!["-T".into(), "-o".into(), "ConnectTimeout=30".into()];
        if let Some(u) = user {
            args.extend(["-l".into(), u.to_string()]);
        }
        if let Some(p) = port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.extend(["--".into(), host.to_string(), "docker".into()]);
        if let Some(s) = remote_socket {
            args.extend(["--host".into(), format!("unix://{s}")]);
        }
        args.extend(["system".into(), "dial-stdio".into()]);
        let stderr = Arc::new(Mutex::new(String::new()));
        let said = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let args = args.clone();
                let said = Arc::clone(&said);
                std::thread::spawn(move || {
                    if let Err(e) = pipe_through_ssh(conn, &args, &said) {
                        if let Ok(mut s) = said.lock() {
                            *s = format!("running ssh: {e}");
                        }
                    }
                });
            }
        });
        Ok(SshTunnel {
            _dir: dir,
            socket,
            stderr,
        })
    }

    /// What ssh last said on stderr (why a connection failed), if anything.
    pub fn last_error(&self) -> Option<String> {
        let s = self.stderr.lock().ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

fn pipe_through_ssh(conn: UnixStream, args: &[String], said: &Mutex<String>) -> io::Result<()> {
    let mut child = Command::new("ssh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("ssh without pipes"));
    };
    let mut from_client = conn.try_clone()?;
    let mut to_client = conn;
    let upstream = std::thread::spawn(move || {
        let _ = copy_plain(&mut from_client, &mut stdin);
    });
    let mut err_text = String::new();
    let errors = std::thread::spawn(move || {
        let _ = stderr.read_to_string(&mut err_text);
        err_text
    });
    let answered = copy_plain(&mut stdout, &mut to_client).unwrap_or(0);
    // ssh said why before the client learns the connection is gone: record it first.
    let text = errors.join().unwrap_or_default();
    if answered == 0 && !text.trim().is_empty() {
        if let Ok(mut s) = said.lock() {
            *s = text.trim().lines().last().unwrap_or("").to_string();
        }
    }
    let _ = to_client.flush();
    // The remote end is done: end the client's side too, so the upstream copy stops,
    // ssh's stdin closes and ssh exits.
    let _ = to_client.shutdown(std::net::Shutdown::Both);
    let _ = upstream.join();
    let _ = child.wait();
    Ok(())
}

/// A copy loop of plain reads and writes. Not `io::copy`: on Linux it splices between a
/// socket and a pipe, and here that ended the client-to-ssh copy after the first request
/// (137 bytes, then a false end), closing ssh's stdin before the engine had answered.
fn copy_plain(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}
