//! Loaders (format 1.1, SPEC §11): static archpack binaries a bundle carries for its own
//! platforms, gzip-compressed so busybox can unpack them, and `archpack-install`, a POSIX
//! sh script at the tar's root that picks the binary for the host it runs on, takes it
//! out of the bundle with `dd` (it knows the offsets), checks it against the sha256 the
//! signed index gives, and writes `./archpack`.

use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::index::{LoaderBinary, INSTALLER_MEMBER, LOADER_DIR};
use crate::platform::Platform;
use std::io::{self, Read, Write};

/// The targets archpack ships for, and the platform each runs on.
pub const TARGETS: &[(&str, &str)] = &[
    ("amd64", "linux/amd64"),
    ("arm64", "linux/arm64/v8"),
    ("arm-v7", "linux/arm/v7"),
    ("arm-v6", "linux/arm/v6"),
];

/// The loader target a host of `platform` runs (an arm/v8 32-bit userland runs arm-v7,
/// arm/v5 runs arm-v6's armv5te build).
pub fn target_for(platform: &Platform) -> Option<&'static str> {
    match (platform.architecture.as_str(), platform.variant_level()) {
        ("amd64", _) => Some("amd64"),
        ("arm64", _) => Some("arm64"),
        ("arm", Some(n)) if n >= 7 => Some("arm-v7"),
        ("arm", Some(_)) => Some("arm-v6"),
        ("arm", None) => Some("arm-v7"),
        _ => None,
    }
}

/// The platform a target's binary runs on.
pub fn platform_of(target: &str) -> Option<Platform> {
    TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .and_then(|(_, p)| p.parse().ok())
}

/// The member a target's binary is stored as.
pub fn member_name(target: &str) -> String {
    format!("{LOADER_DIR}/archpack-linux-{target}.gz")
}

/// One loader to store: its target and its bytes (the binary, uncompressed).
pub struct LoaderInput {
    pub target: String,
    pub binary: Box<dyn Read>,
}

/// Gzip (deterministic: no name, no mtime, level 9) of `binary` into `out`; returns the
/// digest and size of what was written and of the binary.
pub fn compress(
    binary: &mut dyn Read,
    out: &mut dyn Write,
) -> io::Result<(Digest, u64, Digest, u64)> {
    let mut input = HashingReader::new(binary);
    let sink = HashingWriter::new(out);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(sink, flate2::Compression::best());
    io::copy(&mut input, &mut gz)?;
    let sink = gz.finish()?;
    let (_, digest, size) = sink.finish();
    let (binary_digest, binary_size) = input.finish();
    Ok((digest, size, binary_digest, binary_size))
}

/// The installer for a bundle named `bundle_file` carrying `binaries`.
pub fn installer_script(bundle_file: &str, binaries: &[LoaderBinary]) -> String {
    let mut cases = String::new();
    for b in binaries {
        cases.push_str(&format!(
            "  {}) offset={} size={} sum={} binsum={} ;;\n",
            b.target,
            b.member.offset,
            b.member.size,
            b.member.digest.hex(),
            b.binary_digest.hex()
        ));
    }
    let has: Vec<&str> = binaries.iter().map(|b| b.target.as_str()).collect();
    INSTALLER_TEMPLATE
        .replace("@BUNDLE@", &shell_word(bundle_file))
        .replace("@CASES@", &cases)
        .replace("@HAS@", &has.join(", "))
        .replace("@MEMBER@", INSTALLER_MEMBER)
}

/// `s` as one single-quoted shell word.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// POSIX sh; what it runs is in busybox: uname, dd, od, tr, sed, grep, head, gunzip,
/// sha256sum (when present), chmod, mv.
const INSTALLER_TEMPLATE: &str = r#"#!/bin/sh
# @MEMBER@: writes ./archpack, the archpack for this host, out of the bundle it came in.
# Needs sh, dd and gunzip (busybox is enough). Checks the sha256 the bundle's signed index
# gives where sha256sum exists; to check by hand: README, "Checking a loader by hand".
#
#   tar -xf BUNDLE @MEMBER@ && sh @MEMBER@ [BUNDLE]
set -e
bundle=${1:-$(dirname "$0")/@BUNDLE@}
if [ -z "$1" ] && [ ! -f "$bundle" ]; then
  # Renamed on the way: the one bundle beside this script.
  set -- "$(dirname "$0")"/*.archpack
  [ $# -eq 1 ] && [ -f "$1" ] && bundle=$1
fi
if [ ! -f "$bundle" ]; then
  echo "@MEMBER@: $bundle not found; give the bundle's path: sh @MEMBER@ PATH/TO/BUNDLE" >&2
  exit 1
fi

# What this host runs. uname -m is the kernel's: a 32-bit userland on a 64-bit kernel
# (Raspberry Pi OS 32-bit on a Pi 3/4/5) says aarch64, so /bin/sh's ELF class decides
# (byte 5: 1 = 32-bit); a Pi Zero/1 says armv7l or armv6l and is ARMv6.
machine=$(uname -m)
class=$(dd if=/bin/sh bs=1 skip=4 count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
case $machine in
  x86_64 | amd64) target=amd64 ;;
  aarch64 | arm64 | armv8*) if [ "$class" = 1 ]; then target=arm-v7; else target=arm64; fi ;;
  armv7*) target=arm-v7 ;;
  armv6* | armv5*) target=arm-v6 ;;
  *) echo "@MEMBER@: no archpack for a $machine host" >&2; exit 1 ;;
esac
if [ "$target" = arm-v7 ] && grep -q 'ARMv6' /proc/cpuinfo 2>/dev/null; then
  target=arm-v6
fi

case $target in
@CASES@  *)
    echo "@MEMBER@: this bundle carries no archpack for linux/$target (it has: @HAS@)" >&2
    exit 1
    ;;
esac

tmp=./.archpack-install.$$
trap 'rm -f "$tmp.gz" "$tmp"' EXIT
dd if="$bundle" bs=512 skip=$((offset / 512)) count=$(((size + 511) / 512)) 2>/dev/null |
  head -c "$size" >"$tmp.gz"
if command -v sha256sum >/dev/null 2>&1; then
  got=$(sha256sum "$tmp.gz" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "@MEMBER@: the linux/$target archpack in $bundle is damaged (sha256 $got, the index says $sum)" >&2
    exit 3
  fi
fi
gunzip -c "$tmp.gz" >"$tmp"
if command -v sha256sum >/dev/null 2>&1; then
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$binsum" ]; then
    echo "@MEMBER@: the linux/$target archpack unpacks to sha256 $got, the index says $binsum" >&2
    exit 3
  fi
else
  echo "@MEMBER@: no sha256sum here: ./archpack was not checked against the bundle's index" >&2
fi
chmod 755 "$tmp"
mv "$tmp" ./archpack
rm -f "$tmp.gz"
echo "wrote ./archpack for linux/$(echo "$target" | tr - /)"
echo "next: ./archpack load $bundle --trust RELEASE.pub"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_for_platforms() {
        let t = |p: &str| target_for(&p.parse().unwrap());
        assert_eq!(t("linux/amd64/v3"), Some("amd64"));
        assert_eq!(t("linux/arm64"), Some("arm64"));
        assert_eq!(t("linux/arm/v8"), Some("arm-v7"));
        assert_eq!(t("linux/arm/v7"), Some("arm-v7"));
        assert_eq!(t("linux/arm/v6"), Some("arm-v6"));
        assert_eq!(t("linux/arm/v5"), Some("arm-v6"));
        assert_eq!(t("linux/s390x"), None);
        assert_eq!(platform_of("arm-v6").unwrap().to_string(), "linux/arm/v6");
    }

    #[test]
    fn compression_is_deterministic_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let x = compress(&mut &data[..], &mut a).unwrap();
        let y = compress(&mut &data[..], &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(x, y);
        assert_eq!(x.3, data.len() as u64);
        assert_eq!(x.2, Digest::of(&data));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
