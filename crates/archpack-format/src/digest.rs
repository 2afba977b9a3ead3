//! SHA-256 digests and the hashing/counting adapters every stage streams through.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// A `sha256:<64 lowercase hex>` content digest. archpack bundles are sha256-only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a sha256 digest (expected sha256:<64 lowercase hex digits>)")]
pub struct DigestError(pub String);

/// A running SHA-256. On 32-bit ARM, ring's (its assembly: 24 instructions per byte
/// where the sha2 crate's portable code takes 34, armv7 under qemu, counted; no ARMv7
/// board has SHA instructions, nor does the Pi 4); elsewhere sha2's, which uses the
/// SHA extensions of amd64 and arm64 (ring measured no faster there).
#[derive(Clone)]
pub struct Sha256(
    #[cfg(target_arch = "arm")] ring::digest::Context,
    #[cfg(not(target_arch = "arm"))] sha2::Sha256,
);

impl Sha256 {
    #[cfg(target_arch = "arm")]
    pub fn new() -> Sha256 {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    #[cfg(not(target_arch = "arm"))]
    pub fn new() -> Sha256 {
        Sha256(<sha2::Sha256 as sha2::Digest>::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(target_arch = "arm")]
        self.0.update(bytes);
        #[cfg(not(target_arch = "arm"))]
        sha2::Digest::update(&mut self.0, bytes);
    }

    fn finalize(self) -> [u8; 32] {
        #[cfg(target_arch = "arm")]
        {
            let mut out = [0u8; 32];
            out.copy_from_slice(self.0.finish().as_ref());
            out
        }
        #[cfg(not(target_arch = "arm"))]
        {
            sha2::Digest::finalize(self.0).into()
        }
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        Digest::finish(hasher)
    }

    /// The digest of everything fed to `hasher`.
    pub fn finish(hasher: Sha256) -> Digest {
        Digest(hasher.finalize())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The blob's path inside an OCI layout (`blobs/sha256/<hex>`).
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }

    /// A short form for tables (`sha256:0123456789ab`).
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }

    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // A formatted sha256 digest always satisfies oci-spec's grammar.
        oci_spec::image::Digest::try_from(self.to_string())
            .unwrap_or_else(|_| unreachable!("sha256 digest rejected by oci-spec"))
    }

    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest, DigestError> {
        d.as_ref().parse()
    }

    /// Parses a bare 64-hex string (as in Docker image IDs without the prefix).
    pub fn from_hex(s: &str) -> Result<Digest, DigestError> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError(s.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestError(s.to_string()))?;
        Ok(Digest(out))
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError(s.to_string()))?;
        Digest::from_hex(hex).map_err(|_| DigestError(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest::finish(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::finish(self.hasher), self.count)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.count
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("sha256:E3B0".parse::<Digest>().is_err());
        assert!("sha512:00".parse::<Digest>().is_err());
        assert!(s.to_uppercase().parse::<Digest>().is_err());
    }

    #[test]
    fn hashing_reader_counts() {
        let mut r = HashingReader::new(&b"abc"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (d, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(d, Digest::of(b"abc"));
    }
}
