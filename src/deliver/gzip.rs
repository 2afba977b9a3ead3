//! The gzip encoding of bundle layers, for clients that cannot take zstd (Docker 20.10,
//! containerd before 1.5): a deterministic, block-parallel gzip, and the host's memory of
//! what each layer's encoding hashes to. `push` and `serve` both use it, so a layer pushed
//! and a layer served have the same gzip digest.

use crate::digest::{Digest, HashingWriter};
use crate::progress::Silent;
use archpack_format::codec::LayerFault;
use archpack_format::{BundleReader, Member};
use std::io::{self, Read, Write};

/// The gzip encoding's version: part of every cache key, so a change to
/// `gzip_parallel`'s output (level, member size) never reuses old digests.
const GZIP_SCHEME: &str = "gzip6-1MiB-members";

/// `$XDG_CACHE_HOME/archpack` (or `~/.cache/archpack`): archpack's per-user cache.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|c| c.join("archpack"))
}

/// `$XDG_CACHE_HOME/archpack/gzip-digests` (or `~/.cache/...`).
pub fn default_digest_cache() -> Option<std::path::PathBuf> {
    default_cache_dir().map(|d| d.join("gzip-digests"))
}

/// What a bundle layer's deterministic gzip encoding hashes to, remembered on this host
/// the way Docker remembers diff_id → registry digest: a re-push asks the registry
/// without compressing first, and `serve` answers manifests without a pass. Only a hit
/// whose blob the registry has is taken on trust by `push`; what is sent is always
/// hashed as it goes. Unreadable or unwritable: no cache, no error.
pub struct GzipDigestCache<'a> {
    pub dir: Option<&'a std::path::Path>,
}

impl GzipDigestCache<'_> {
    fn path(&self, blob: &Digest) -> Option<std::path::PathBuf> {
        self.dir
            .map(|d| d.join(format!("{}.{GZIP_SCHEME}", blob.hex())))
    }

    pub fn get(&self, blob: &Digest) -> Option<(Digest, u64)> {
        let text = std::fs::read_to_string(self.path(blob)?).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        Some((digest.parse().ok()?, size.parse().ok()?))
    }

    pub fn put(&self, blob: &Digest, digest: &Digest, size: u64) {
        let Some(path) = self.path(blob) else { return };
        if self.get(blob) == Some((digest.clone(), size)) {
            return;
        }
        let line = format!("{digest} {size}\n");
        // Best effort: a cache that cannot be written costs a compression pass next time.
        if path
            .parent()
            .is_some_and(|dir| std::fs::create_dir_all(dir).is_ok())
        {
            let _ = crate::fsutil::write_bytes(&path, line.as_bytes(), true, 0o644);
        }
    }
}

const GZIP_BLOCK: usize = 1 << 20;

/// pigz-style gzip: independent 1 MiB members compressed in parallel, written in order.
/// Deterministic (same input, same bytes) and read by every gzip decoder (multi-member).
pub fn gzip_parallel(input: &mut dyn Read, out: &mut dyn Write, threads: usize) -> io::Result<()> {
    let threads = threads.max(1);
    loop {
        let mut blocks = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut block = vec![0u8; GZIP_BLOCK];
            let n = crate::source::read_up_to(input, &mut block)?;
            if n == 0 {
                break;
            }
            block.truncate(n);
            blocks.push(block);
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = blocks
                .iter()
                .map(|b| {
                    s.spawn(move || {
                        let mut enc = flate2::write::GzEncoder::new(
                            Vec::with_capacity(b.len() / 2),
                            flate2::Compression::new(6),
                        );
                        enc.write_all(b)?;
                        enc.finish()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("gzip worker failed")))
                })
                .collect()
        });
        for c in compressed {
            out.write_all(&c?)?;
        }
    }
}

/// A layer's gzip digest and size, and whether they were remembered (no pass made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipDigest {
    pub digest: Digest,
    pub size: u64,
    pub remembered: bool,
}

/// The gzip encoding's digest of layer member `m`: remembered in `cache`, or learnt by
/// one compression pass (every check of the layer applied) and remembered.
pub fn gzip_digest(
    reader: &BundleReader,
    m: &Member,
    cache: &GzipDigestCache,
    threads: usize,
    on_bytes: &dyn Fn(u64),
) -> Result<GzipDigest, io::Error> {
    if let Some((digest, size)) = cache.get(&m.digest) {
        on_bytes(m.size);
        return Ok(GzipDigest {
            digest,
            size,
            remembered: true,
        });
    }
    let mut hasher = HashingWriter::new(io::sink());
    write_gzip(reader, m, &mut hasher, threads)?;
    on_bytes(m.size);
    let (_, digest, size) = hasher.finish();
    cache.put(&m.digest, &digest, size);
    Ok(GzipDigest {
        digest,
        size,
        remembered: false,
    })
}

/// Writes layer member `m` gzip-encoded to `out` (every check of the layer applied).
pub fn write_gzip(
    reader: &BundleReader,
    m: &Member,
    out: &mut dyn Write,
    threads: usize,
) -> io::Result<()> {
    let mut layer = reader
        .layer_reader(m, &Silent)
        .map_err(|fault: LayerFault| io::Error::new(io::ErrorKind::InvalidData, fault))?;
    gzip_parallel(&mut layer, out, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_is_deterministic_and_decodes() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut a = Vec::new();
        let mut b = Vec::new();
        gzip_parallel(&mut &data[..], &mut a, 2).unwrap();
        gzip_parallel(&mut &data[..], &mut b, 1).unwrap();
        assert_eq!(a, b);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
