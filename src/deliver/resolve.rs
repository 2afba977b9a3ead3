//! Names to addresses without glibc's NSS. archpack ships as a static binary, and a
//! static glibc's `getaddrinfo` loads the *build* host's NSS modules at run time (or fails
//! to): on a Pi that is the wrong glibc. So lookups are done here, the way the NSS
//! `files dns` default does them: a literal address, `localhost`, `/etc/hosts`, then DNS
//! over UDP to the nameservers in `/etc/resolv.conf` (A and AAAA, with its search list).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// What the lookup reads: the two files, for tests to replace.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    pub hosts: &'a Path,
    pub resolv_conf: &'a Path,
}

impl Default for Sources<'_> {
    fn default() -> Self {
        Sources {
            hosts: Path::new("/etc/hosts"),
            resolv_conf: Path::new("/etc/resolv.conf"),
        }
    }
}

/// `host`'s addresses with `port`, IPv4 first.
pub fn resolve(
    host: &str,
    port: u16,
    sources: &Sources,
    timeout: Duration,
) -> io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let mut ips = from_hosts_file(&name, sources.hosts);
    if ips.is_empty() && (name == "localhost" || name.ends_with(".localhost")) {
        ips = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
    }
    if ips.is_empty() {
        ips = from_dns(&name, sources.resolv_conf, timeout)?;
    }
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}: no address in /etc/hosts or from the nameservers in /etc/resolv.conf"),
        ));
    }
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Addresses `/etc/hosts` gives `name` (or an alias of it).
fn from_hosts_file(name: &str, path: &Path) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// The resolver settings that matter here.
struct ResolvConf {
    nameservers: Vec<IpAddr>,
    search: Vec<String>,
    ndots: usize,
}

fn read_resolv_conf(path: &Path) -> ResolvConf {
    let mut conf = ResolvConf {
        nameservers: Vec::new(),
        search: Vec::new(),
        ndots: 1,
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    conf.nameservers.push(ip);
                }
            }
            Some("search") | Some("domain") => conf.search = words.map(String::from).collect(),
            Some("options") => {
                for o in words {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        conf.ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    if conf.nameservers.is_empty() {
        conf.nameservers.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    conf
}

fn from_dns(name: &str, resolv_conf: &Path, timeout: Duration) -> io::Result<Vec<IpAddr>> {
    let conf = read_resolv_conf(resolv_conf);
    let dots = name.matches('.').count();
    let mut candidates: Vec<String> = Vec::new();
    if dots < conf.ndots {
        candidates.extend(conf.search.iter().map(|s| format!("{name}.{s}")));
    }
    candidates.push(name.to_string());
    let mut last_error = None;
    for candidate in &candidates {
        for ns in &conf.nameservers {
            let mut found = Vec::new();
            for qtype in [QTYPE_A, QTYPE_AAAA] {
                match query(*ns, candidate, qtype, timeout) {
                    Ok(ips) => found.extend(ips),
                    Err(e) => last_error = Some(e),
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
    }
    match last_error {
        Some(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(Vec::new()),
    }
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

/// One DNS question over UDP; the A or AAAA records of the answer.
fn query(ns: IpAddr, name: &str, qtype: u16, timeout: Duration) -> io::Result<Vec<IpAddr>> {
    let id = (std::process::id() as u16) ^ (qtype << 8) ^ (name.len() as u16);
    let packet = question(id, name, qtype)?;
    let bind: SocketAddr = if ns.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect((ns, 53))?;
    socket.send(&packet)?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buf)?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return answers(&buf[..n], qtype);
        }
    }
}

fn question(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut p = Vec::with_capacity(32 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a host name"),
            ));
        }
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // class IN
    Ok(p)
}

/// The addresses of type `qtype` in a DNS response (CNAME chains come with them).
fn answers(msg: &[u8], qtype: u16) -> io::Result<Vec<IpAddr>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed DNS answer");
    let u16_at = |i: usize| -> io::Result<u16> {
        Ok(u16::from_be_bytes([
            *msg.get(i).ok_or_else(bad)?,
            *msg.get(i + 1).ok_or_else(bad)?,
        ]))
    };
    if msg.len() < 12 {
        return Err(bad());
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no such name"));
    }
    if rcode != 0 {
        return Err(io::Error::other(format!(
            "the nameserver answered rcode {rcode}"
        )));
    }
    let questions = u16_at(4)?;
    let records = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(bad)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..records {
        at = skip_name(msg, at).ok_or_else(bad)?;
        let rtype = u16_at(at)?;
        let len = u16_at(at + 8)? as usize;
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(bad)?;
        match (rtype, len) {
            (QTYPE_A, 4) if qtype == QTYPE_A => {
                out.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                )));
            }
            (QTYPE_AAAA, 16) if qtype == QTYPE_AAAA => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        at += 10 + len;
    }
    Ok(out)
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}

/// ureq's resolver hook, so `push` looks names up as above.
#[derive(Debug, Default)]
pub struct StaticResolver;

impl ureq::unversioned::resolver::Resolver for StaticResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let addrs = resolve(host, port, &Sources::default(), Duration::from_secs(5))
            .map_err(|_| ureq::Error::HostNotFound)?;
        let mut out = self.empty();
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_hosts_file_and_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "# site\n10.1.2.3  registry.site  reg  # the mirror\n::1 six\n",
        )
        .unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        let s = Sources {
            hosts: &hosts,
            resolv_conf: &resolv,
        };
        let t = Duration::from_millis(200);
        assert_eq!(
            resolve("reg", 5000, &s, t).unwrap(),
            vec!["10.1.2.3:5000".parse().unwrap()]
        );
        assert_eq!(
            resolve("REGISTRY.site.", 1, &s, t).unwrap(),
            vec!["10.1.2.3:1".parse().unwrap()]
        );
        assert_eq!(
            resolve("127.0.0.1", 5000, &s, t).unwrap(),
            vec!["127.0.0.1:5000".parse().unwrap()]
        );
        assert_eq!(resolve("[::1]", 5000, &s, t).unwrap()[0].port(), 5000);
        assert!(resolve("localhost", 80, &s, t).unwrap()[0]
            .ip()
            .is_loopback());
        assert!(resolve("six", 80, &s, t).unwrap()[0].is_ipv6());
    }

    #[test]
    fn dns_questions_and_answers_round_trip() {
        let q = question(0x1234, "a.example", QTYPE_A).unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        // An answer: the question, then a CNAME and an A record with name pointers.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 2;
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        assert_eq!(
            answers(&a, QTYPE_A).unwrap(),
            vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))]
        );
        assert!(answers(&a[..20], QTYPE_A).is_err());
        assert!(question(1, "bad..name", QTYPE_A).is_err());
    }
}
