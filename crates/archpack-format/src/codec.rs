//! The layer codec: how layers are compressed into a bundle ([`compressor`]) and read back
//! with every check ([`VerifiedLayer`]): stored bytes against the blob digest and size,
//! decompressed bytes against the diff_id and declared size. Decompression stops at the
//! declared size, so a lying layer cannot expand past it.
//!
//! A consumer that computes the diff_id itself and refuses a mismatch (the Docker engine
//! does, on every load) may leave that one hash to it: the blob digest, checked here
//! against the signed index, already fixes every decompressed byte.

use crate::digest::{Digest, HashingReader, Sha256};
use crate::index::Member;
use crate::limits::MAX_WINDOW_LOG;
use crate::progress::Progress;
use std::io::{self, Read, Write};

/// log2 of the window archpack's writer uses (16 MiB, with long-distance matching):
/// what a decoder needs in memory for it.
pub const WRITE_WINDOW_LOG: u32 = 24;

/// Bytes per zstd worker job: bounds the compressor's memory.
const JOB_SIZE: u32 = 2 << 20;

/// A zstd compressor as bundles are written: level `level`, long-distance matching over
/// a 16 MiB window, `threads` workers (0 means one). Always in zstd's multi-threaded
/// mode, whose output does not depend on the worker count: the same input gives the
/// same bytes with `--threads 1`, `2` or `0`. One compressor makes many frames (reset
/// with `Operation::reinit` between them): its workers and buffers are made once.
pub fn compressor(level: i32, threads: u32) -> io::Result<zstd::stream::raw::Encoder<'static>> {
    use zstd::stream::raw::CParameter;
    let mut c = zstd::stream::raw::Encoder::new(level)?;
    // Long-distance matching finds what repeats beyond level 3's 2 MiB window (bench
    // corpus: 4.5% smaller, +18% CPU); loads then need the 16 MiB window.
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
    c.set_parameter(CParameter::WindowLog(WRITE_WINDOW_LOG))?;
    c.set_parameter(CParameter::NbWorkers(threads.max(1)))?;
    // zstd's default job (4 × window) keeps ~4 jobs in flight: 68 MiB peak on a 470 MB
    // layer, 116 MiB on incompressible data. 2 MiB jobs: 27 / 35 MiB, output 1.5% larger.
    c.set_parameter(CParameter::JobSize(JOB_SIZE))?;
    Ok(c)
}

/// A zstd decoder that accepts every window the format allows (2^27), and no more: a
/// 32-bit reader can decode it (zstd's 32-bit limit is 2^30).
pub fn decoder<'a, R: Read>(
    inner: R,
) -> io::Result<zstd::stream::read::Decoder<'a, io::BufReader<R>>> {
    let mut decoder = zstd::stream::read::Decoder::new(inner)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    Ok(decoder)
}

/// Why a layer stream failed verification.
#[derive(Debug, thiserror::Error)]
pub enum LayerFault {
    #[error("{member}: {detail}")]
    Corrupt { member: String, detail: String },
    #[error("{member}: truncated")]
    Truncated { member: String },
}

impl LayerFault {
    /// The fault an `io::Error` from a [`VerifiedLayer`] carries, if it is one.
    pub fn in_io(e: &io::Error) -> Option<&LayerFault> {
        e.get_ref().and_then(|x| x.downcast_ref::<LayerFault>())
    }

    pub fn member(&self) -> &str {
        match self {
            LayerFault::Corrupt { member, .. } | LayerFault::Truncated { member } => member,
        }
    }
}

type ZstdRead<R> = zstd::stream::read::Decoder<'static, io::BufReader<HashingReader<R>>>;

/// A layer's decompressed bytes, checked against the index as they are read: exactly
/// `size` bytes come out; at the end the compressed digest and the diff_id must match.
pub struct VerifiedLayer<'a, R: Read> {
    decoder: Option<ZstdRead<R>>,
    member: &'a Member,
    diff_id: Digest,
    /// `None` when the consumer checks the diff_id itself.
    hasher: Option<Sha256>,
    remaining: u64,
    progress: &'a dyn Progress,
}

impl<'a, R: Read> VerifiedLayer<'a, R> {
    /// The layer `member` whose stored bytes `stored` yields, decompressed and checked.
    pub fn new(
        stored: R,
        member: &'a Member,
        diff_id: Digest,
        size: u64,
        progress: &'a dyn Progress,
    ) -> Result<VerifiedLayer<'a, R>, LayerFault> {
        let decoder = decoder(HashingReader::new(stored)).map_err(|e| LayerFault::Corrupt {
            member: member.name.clone(),
            detail: format!("zstd: {e}"),
        })?;
        Ok(VerifiedLayer {
            decoder: Some(decoder),
            member,
            diff_id,
            hasher: Some(Sha256::new()),
            remaining: size,
            progress,
        })
    }

    /// Leaves the diff_id to a consumer that checks it itself (see the module docs).
    pub fn diff_id_checked_by_consumer(mut self) -> Self {
        self.hasher = None;
        self
    }

    fn fault(&self, detail: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            LayerFault::Corrupt {
                member: self.member.name.clone(),
                detail,
            },
        )
    }

    fn truncated(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            LayerFault::Truncated {
                member: self.member.name.clone(),
            },
        )
    }

    /// After the declared size: nothing more may decompress, and both digests must match.
    fn finish(&mut self) -> io::Result<()> {
        let Some(mut decoder) = self.decoder.take() else {
            return Ok(());
        };
        let mut extra = [0u8; 1];
        match decoder.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => {
                return Err(self.fault(format!(
                    "decompresses to more than its declared {} bytes",
                    self.member.uncompressed_size.unwrap_or(0)
                )))
            }
            Err(e) => return Err(self.map_read_error(e)),
        }
        let mut compressed = decoder.finish().into_inner();
        io::copy(&mut compressed, &mut io::sink()).map_err(|e| self.map_read_error(e))?;
        let (digest, n) = compressed.finish();
        if n != self.member.size {
            return Err(self.truncated());
        }
        if digest != self.member.digest {
            return Err(self.fault(format!(
                "digest {digest}, the index says {}",
                self.member.digest
            )));
        }
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        let diff = Digest::finish(hasher);
        if diff != self.diff_id {
            return Err(self.fault(format!(
                "decompresses to diff_id {diff}, the index says {}",
                self.diff_id
            )));
        }
        Ok(())
    }

    fn map_read_error(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.truncated()
        } else {
            self.fault(format!("zstd: {e}"))
        }
    }
}

impl<R: Read> Read for VerifiedLayer<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            self.finish()?;
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(0);
        };
        let n = match decoder.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => return Err(self.map_read_error(e)),
        };
        if n == 0 {
            return Err(self.fault(format!(
                "decompresses to {} bytes fewer than declared",
                self.remaining
            )));
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.remaining -= n as u64;
        self.progress.advance(n as u64);
        if self.remaining == 0 {
            self.finish()?;
        }
        Ok(n)
    }
}

/// Bytes checked against a digest and a size as they pass: exactly `size` bytes come
/// out, and the digest is judged when the last one arrives, before it is handed on (a
/// consumer that stops at the declared size still gets the error).
pub struct CheckedReader<R: Read> {
    inner: Option<HashingReader<R>>,
    what: String,
    digest: Digest,
    remaining: u64,
    size: u64,
}

impl<R: Read> CheckedReader<R> {
    /// `what` names the bytes in errors (a member, "layer sha256:… rebuilt from its patch").
    pub fn new(inner: R, what: String, digest: Digest, size: u64) -> Self {
        CheckedReader {
            inner: Some(HashingReader::new(inner)),
            what,
            digest,
            remaining: size,
            size,
        }
    }

    fn fault(&self, detail: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            LayerFault::Corrupt {
                member: self.what.clone(),
                detail,
            },
        )
    }
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let want = buf.len().min(self.remaining as usize);
        let n = if want == 0 {
            0
        } else {
            inner.read(&mut buf[..want])?
        };
        if n == 0 && self.remaining > 0 {
            let detail = format!(
                "{} bytes where {} were expected",
                self.size - self.remaining,
                self.size
            );
            return Err(self.fault(detail));
        }
        self.remaining -= n as u64;
        if self.remaining == 0 {
            if let Some(done) = self.inner.take() {
                let (digest, _) = done.finish();
                if digest != self.digest {
                    return Err(self.fault(format!("digest {digest}, expected {}", self.digest)));
                }
            }
        }
        Ok(n)
    }
}

/// A layer's uncompressed tar compressed as the writer does ([`compressor`]): the same
/// input and level give the same blob, on any host and with any number of workers.
pub struct CompressingReader<R: Read> {
    input: R,
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    out: Vec<u8>,
    at: usize,
    buf: Vec<u8>,
}

impl<R: Read> CompressingReader<R> {
    pub fn new(input: R, level: i32, threads: u32) -> io::Result<Self> {
        Ok(CompressingReader {
            input,
            encoder: Some(zstd::stream::write::Encoder::with_encoder(
                Vec::new(),
                compressor(level, threads)?,
            )),
            out: Vec::new(),
            at: 0,
            buf: vec![0u8; 1 << 20],
        })
    }
}

impl<R: Read> Read for CompressingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(0);
            };
            self.out.clear();
            self.at = 0;
            let n = match self.input.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if let Some(done) = self.encoder.take() {
                    self.out = done.finish()?;
                }
            } else {
                encoder.write_all(&self.buf[..n])?;
                std::mem::swap(&mut self.out, encoder.get_mut());
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
