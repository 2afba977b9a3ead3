//! OCI platforms (`os/architecture[/variant]`): parsing, normalisation and display.
//!
//! Every stage speaks this one type, so `linux/arm64`, `linux/arm64/v8` and the uname
//! spelling `aarch64` all compare as the same thing once normalised.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A normalised OCI platform. `variant` is `None` where the architecture has no
/// meaningful default variant (amd64 without a level, 386, ppc64le, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("platform {0:?} is not of the form os/architecture[/variant] (e.g. linux/arm64)")]
    Malformed(String),
}

impl Platform {
    /// Builds a platform from the three config fields, normalising spellings
    /// (`aarch64` → `arm64`, `x86_64` → `amd64`, arm64's implied `v8`, ...).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.trim().to_ascii_lowercase();
        let (architecture, implied_variant) = normalize_arch(architecture);
        let variant = variant
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .or(implied_variant.map(str::to_string));
        let variant = normalize_variant(&architecture, variant);
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Same os and architecture; variants are not compared.
    pub fn same_arch(&self, other: &Platform) -> bool {
        self.os == other.os && self.architecture == other.architecture
    }

    /// The variant's number for `vN` variants (arm/v7 → 7, amd64/v3 → 3).
    pub fn variant_level(&self) -> Option<u32> {
        self.variant
            .as_deref()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|n| n.parse().ok())
    }
}

/// Every spelling of an architecture archpack understands (uname, GOARCH, Debian, image
/// tag suffixes), with the OCI architecture and the variant the spelling implies. The one
/// alias table: platform parsing, the host probe and logical names all read it.
pub const ARCH_ALIASES: &[(&str, &str, Option<&str>)] = &[
    ("amd64", "amd64", None),
    ("x86_64", "amd64", None),
    ("x86-64", "amd64", None),
    ("x64", "amd64", None),
    ("386", "386", None),
    ("i386", "386", None),
    ("i486", "386", None),
    ("i586", "386", None),
    ("i686", "386", None),
    ("x86", "386", None),
    ("arm64", "arm64", None),
    ("aarch64", "arm64", None),
    ("armv8", "arm64", None),
    ("arm64v8", "arm64", None),
    ("armv8l", "arm", Some("v8")),
    ("arm", "arm", None),
    ("armv7l", "arm", Some("v7")),
    ("armv7", "arm", Some("v7")),
    ("armhf", "arm", Some("v7")),
    ("arm32v7", "arm", Some("v7")),
    ("armv6l", "arm", Some("v6")),
    ("armv6", "arm", Some("v6")),
    ("armel", "arm", Some("v6")),
    ("arm32v6", "arm", Some("v6")),
    ("armv5tel", "arm", Some("v5")),
    ("armv5tejl", "arm", Some("v5")),
    ("armv5l", "arm", Some("v5")),
    ("armv5", "arm", Some("v5")),
    ("ppc64le", "ppc64le", None),
    ("powerpc64le", "ppc64le", None),
    ("ppc64", "ppc64", None),
    ("powerpc64", "ppc64", None),
    ("s390x", "s390x", None),
    ("riscv64", "riscv64", None),
    ("loong64", "loong64", None),
    ("loongarch64", "loong64", None),
    ("mips64le", "mips64le", None),
    ("mips64el", "mips64le", None),
];

/// Maps any spelling in [`ARCH_ALIASES`] to its OCI architecture name, with the variant
/// the spelling implies (`armv7l` → `arm` + `v7`); unknown names pass through lowercased.
pub fn normalize_arch(arch: &str) -> (String, Option<&'static str>) {
    let a = arch.trim().to_ascii_lowercase();
    match ARCH_ALIASES.iter().find(|(spelling, _, _)| *spelling == a) {
        Some((_, name, variant)) => (name.to_string(), *variant),
        None => (a, None),
    }
}

/// Whether `word` names an architecture (any spelling in [`ARCH_ALIASES`]).
pub fn is_arch_name(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    ARCH_ALIASES.iter().any(|(spelling, _, _)| *spelling == w)
}

/// arm64's only variant in practice is v8 and images are published both with and
/// without it; store it explicitly so the two compare equal. amd64's `v1` is the
/// baseline and means the same as no variant.
fn normalize_variant(architecture: &str, variant: Option<String>) -> Option<String> {
    match (architecture, variant.as_deref()) {
        ("arm64", None) => Some("v8".to_string()),
        ("amd64", Some("v1")) => None,
        _ => variant,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Accepts `os/arch[/variant]`, and a bare architecture (`arm64`) meaning linux.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.iter().any(|p| p.trim().is_empty()) {
            return Err(PlatformError::Malformed(s.to_string()));
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(PlatformError::Malformed(s.to_string())),
        }
    }
}

/// Parses a comma-separated platform list (`linux/amd64,linux/arm64`).
pub fn parse_list(s: &str) -> Result<Vec<Platform>, PlatformError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Platform::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn normalises_uname_spellings() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/armv7l").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armv6l").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/armv5tel").to_string(), "linux/arm/v5");
        assert_eq!(p("linux/i686").to_string(), "linux/386");
        assert_eq!(p("linux/loongarch64").to_string(), "linux/loong64");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").to_string(), "linux/amd64/v3");
        assert_eq!(p("arm64"), p("linux/arm64/v8"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "linux/", "/amd64", "a/b/c/d", "linux//v7"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn list_parses() {
        let l = parse_list("linux/amd64, linux/arm64").unwrap();
        assert_eq!(l, vec![p("linux/amd64"), p("linux/arm64")]);
    }
}
