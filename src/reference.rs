//! Image references (`svc:v1.0`, `team/svc`, `reg:5000/svc:2`, `svc@sha256:…`): the one
//! parser every stage uses, on the distribution reference grammar
//! (`distribution/reference`'s `reference.go`, the one Docker uses), with Docker's
//! normalisation (`docker.io/library/` is implied) and its messages.
//!
//! Written out by hand rather than taken from oci-spec's `distribution::Reference`:
//! that one compiles the grammar into a Unicode regex whose automata keep about 10 MiB
//! resident for the life of the process (measured with massif: 5.4 MiB NFA plus its
//! reverse and caches), a sixth of the 64 MiB a whole create or load may use on a Pi.

use archpack_format::platform::is_arch_name;
use std::fmt;

/// Docker Hub, as normalised names spell it.
pub const DOCKER_HUB: &str = "docker.io";
/// The most characters a repository name (domain and path) may have.
const NAME_MAX: usize = 255;

/// A reference that failed the grammar, and why, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid image reference: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

const INVALID_FORMAT: &str = "invalid reference format (NAME[:TAG] with a lowercase NAME and a TAG of up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-')";

impl ImageRef {
    /// Parses `s` the way `docker tag` and `docker pull` do.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let fail = |reason: &str| ReferenceError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() || s.trim() != s {
            return Err(fail(
                "invalid reference format (empty, or spaces around it)",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            check_digest(d).map_err(fail)?;
        }
        // A tag follows the last ':' that is not part of a domain's port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(fail(INVALID_FORMAT));
            }
        }
        let (registry, path) = split_domain(name);
        if let Some(domain) = registry {
            if !valid_domain(domain) {
                return Err(fail(INVALID_FORMAT));
            }
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            let lower = path.to_ascii_lowercase();
            if lower != path && lower.split('/').all(valid_path_component) {
                return Err(fail("repository name must be lowercase"));
            }
            return Err(fail(INVALID_FORMAT));
        }
        if name.len() > NAME_MAX {
            return Err(fail("repository name must not be more than 255 characters"));
        }
        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(d) => d.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(ImageRef {
            registry,
            repository,
            tag: tag
                .map(String::from)
                .or_else(|| digest.is_none().then(|| "latest".to_string())),
            digest: digest.map(String::from),
        })
    }

    /// A reference that names an image by tag (not by digest only).
    pub fn parse_tagged(s: &str) -> Result<ImageRef, ReferenceError> {
        let r = ImageRef::parse(s)?;
        if r.digest.is_some() {
            return Err(ReferenceError {
                input: s.to_string(),
                reason: "a digest reference cannot be a tag; name the image with NAME:TAG".into(),
            });
        }
        Ok(r)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository within its registry (`library/svc`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The repository in Docker's familiar form: `svc`, `team/svc`, `reg:5000/svc`.
    pub fn familiar_repository(&self) -> String {
        if self.registry == DOCKER_HUB {
            let r = &self.repository;
            r.strip_prefix("library/").unwrap_or(r).to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// `svc:v1.0` / `team/svc:latest` / `reg:5000/svc:2`: how `docker images` lists it.
    pub fn familiar(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), None) => format!("{}@{d}", self.familiar_repository()),
            _ => format!("{}:{}", self.familiar_repository(), self.tag()),
        }
    }

    /// The full name containerd uses (`docker.io/library/svc:v1.0`).
    pub fn full(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag())
    }

    /// The logical name of a per-architecture tag: `svc:v1.0-arm64` → `svc:v1.0`,
    /// `svc:arm64` → `svc:latest`.
    pub fn without_arch_suffix(&self) -> ImageRef {
        let tag = self.tag();
        let stripped = if is_arch_name(tag) {
            Some("latest".to_string())
        } else {
            tag.char_indices()
                .filter(|&(i, c)| i > 0 && matches!(c, '-' | '_' | '.'))
                .map(|(i, _)| i)
                .find(|&i| is_arch_name(&tag[i + 1..]))
                .map(|i| tag[..i].to_string())
        };
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(stripped.unwrap_or_else(|| tag.to_string())),
            digest: None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

/// distribution's `splitDomain`: the first component is a domain when it has a `.` or
/// a `:` or is `localhost` (or has an uppercase letter, which a path cannot).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `domain-name [":" port]`, each label `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`; an
/// IPv6 literal in brackets.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                return rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            }
            _ => return false,
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+ (([_.]|__|-+) [a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}` (`\w` being ASCII letters, digits and `_`).
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm ":" hex`, the hex at least 128 bits; sha256/384/512 of their exact length.
fn check_digest(d: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(INVALID_FORMAT);
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '-', '_']).all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(INVALID_FORMAT);
    }
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != want {
        return Err("invalid checksum digest length");
    }
    Ok(())
}

/// The familiar form of `s` if it parses, else `s` as given (for display only).
pub fn familiar(s: &str) -> String {
    ImageRef::parse(s)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(s: &str) -> String {
        ImageRef::parse(s).unwrap().familiar()
    }

    #[test]
    fn familiar_forms_match_docker_images() {
        assert_eq!(fam("svc"), "svc:latest");
        assert_eq!(fam("svc:v1.0"), "svc:v1.0");
        assert_eq!(fam("docker.io/library/svc:v1"), "svc:v1");
        assert_eq!(fam("index.docker.io/team/svc"), "team/svc:latest");
        assert_eq!(fam("reg:5000/svc:2"), "reg:5000/svc:2");
        assert_eq!(fam("localhost/svc:1"), "localhost/svc:1");
        assert_eq!(
            ImageRef::parse("svc:v1").unwrap().full(),
            "docker.io/library/svc:v1"
        );
        assert_eq!(
            ImageRef::parse("reg:5000/a/b:c").unwrap().repository(),
            "a/b"
        );
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for (bad, why) in [
            ("MyApp:1", "lowercase"),
            ("app:1:2", "invalid reference format"),
            ("app:bad tag", "invalid reference format"),
            ("app:", "invalid reference format"),
            ("", "invalid reference format"),
            (" app:1", "invalid reference format"),
            ("app@sha256:abc", "invalid reference format"),
        ] {
            let e = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let digest = format!("app@sha256:{}", "a".repeat(64));
        assert!(ImageRef::parse(&digest).is_ok());
        for good in [
            "a",
            "a/b/c",
            "a.b-c_d__e---f",
            "localhost:5000/x",
            "[::1]:5000/x:1",
            "reg.example.com/team/app:V1.0_rc-2",
            "a:_",
        ] {
            assert!(ImageRef::parse(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "a_",
            "-a",
            "a..b",
            "a/",
            "/a",
            "a:-1",
            "a:.",
            "reg:port/x",
            "a@sha256:xyz",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ImageRef::parse_tagged(&digest)
            .unwrap_err()
            .to_string()
            .contains("NAME:TAG"));
    }

    #[test]
    fn logical_names_drop_the_architecture() {
        let logical = |s: &str| ImageRef::parse(s).unwrap().without_arch_suffix().familiar();
        assert_eq!(logical("svc:v1.0-arm64"), "svc:v1.0");
        assert_eq!(logical("svc:v1.0_amd64"), "svc:v1.0");
        assert_eq!(logical("svc:1.2.armv7"), "svc:1.2");
        assert_eq!(logical("svc:arm64"), "svc:latest");
        assert_eq!(logical("svc"), "svc:latest");
        assert_eq!(logical("reg:5000/team/svc:2-x86_64"), "reg:5000/team/svc:2");
        assert_eq!(logical("svc:v1-beta"), "svc:v1-beta");
        assert_eq!(logical("svc:v1-x86-64"), "svc:v1");
    }
}
