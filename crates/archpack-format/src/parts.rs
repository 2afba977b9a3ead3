//! Shared parts (format 2.2, feature `parts`, SPEC §14), the writer's half: find the
//! runs of identical tar entries two layers of different platforms carry, so that each
//! run becomes one zstd frame stored once.
//!
//! A layer of the first platform (the hub) waits uncompressed until its counterpart of
//! the next platform arrives (the frames of both depend on what they share); both are
//! then cut into frames at the runs' edges, and later platforms' counterparts copy the
//! hub's frames they hold too. The bytes of each run are compared before they are
//! shared: the entry hashes only find candidates.

use std::fs::File;
use std::hash::Hasher;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// A run of identical entries shorter than this stays in both layers: a frame of its
/// own would cost its users more in lost compression context than it saves.
pub const MIN_SHARED_RUN: u64 = 64 << 10;

const BLOCK: u64 = 512;

/// One tar entry: its header block and padded data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub offset: u64,
    pub len: u64,
    pub hash: u64,
}

/// Reads a layer tar through, noting every entry (header and padded data) and a hash
/// of its bytes. A stream that stops being a tar simply has no entries after that.
pub(crate) struct EntryScanner<R> {
    inner: R,
    pos: u64,
    /// Where the entry being read ends (`None`: its header is being collected).
    entry_end: Option<u64>,
    entry_start: u64,
    header: Vec<u8>,
    hasher: std::hash::DefaultHasher,
    broken: bool,
    pub entries: Vec<Entry>,
}

impl<R: Read> EntryScanner<R> {
    pub fn new(inner: R) -> Self {
        EntryScanner {
            inner,
            pos: 0,
            entry_end: None,
            entry_start: 0,
            header: Vec::with_capacity(BLOCK as usize),
            hasher: std::hash::DefaultHasher::new(),
            broken: false,
            entries: Vec::new(),
        }
    }

    fn see(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.broken {
            match self.entry_end {
                None => {
                    let take = (BLOCK as usize - self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..take]);
                    self.hasher.write(&bytes[..take]);
                    self.pos += take as u64;
                    bytes = &bytes[take..];
                    if self.header.len() == BLOCK as usize {
                        match entry_size(&self.header) {
                            Some(size) => {
                                let end = self.entry_start + BLOCK + size.div_ceil(BLOCK) * BLOCK;
                                self.entry_end = Some(end);
                                self.header.clear();
                                self.close_if_done();
                            }
                            None => self.broken = true,
                        }
                    }
                }
                Some(end) => {
                    let take = ((end - self.pos) as usize).min(bytes.len());
                    self.hasher.write(&bytes[..take]);
                    self.pos += take as u64;
                    bytes = &bytes[take..];
                    self.close_if_done();
                }
            }
        }
    }

    fn close_if_done(&mut self) {
        if self.entry_end == Some(self.pos) {
            let hasher = std::mem::take(&mut self.hasher);
            self.entries.push(Entry {
                offset: self.entry_start,
                len: self.pos - self.entry_start,
                hash: hasher.finish(),
            });
            self.entry_start = self.pos;
            self.entry_end = None;
        }
    }

    pub fn into_parts(self) -> (R, Vec<Entry>) {
        (self.inner, self.entries)
    }
}

impl<R: Read> Read for EntryScanner<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.see(&buf[..n]);
        Ok(n)
    }
}

/// The data size a tar header gives (octal, or base-256 for large files); `None` when
/// the block is no tar header.
fn entry_size(header: &[u8]) -> Option<u64> {
    if header.iter().all(|&b| b == 0) {
        // An end-of-archive block: an entry of no data.
        return Some(0);
    }
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        let mut size = 0u64;
        for &b in &field[1..] {
            size = size.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(size);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// A run of bytes two layers both carry: at `a` in the first, at `b` in the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub a: u64,
    pub b: u64,
    pub len: u64,
}

/// Runs of consecutive entries with the same hashes, in the same order in both layers,
/// of at least `min` bytes; found in one pass over `b`.
pub(crate) fn find_runs(a: &[Entry], b: &[Entry], min: u64) -> Vec<Run> {
    let mut first: std::collections::HashMap<u64, usize> =
        std::collections::HashMap::with_capacity(a.len());
    for (i, e) in a.iter().enumerate().rev() {
        first.insert(e.hash, i);
    }
    let mut runs = Vec::new();
    let (mut i_min, mut j) = (0usize, 0usize);
    while j < b.len() {
        let Some(&i) = first.get(&b[j].hash).filter(|&&i| i >= i_min) else {
            j += 1;
            continue;
        };
        let mut k = 0;
        while i + k < a.len() && j + k < b.len() && a[i + k].hash == b[j + k].hash {
            k += 1;
        }
        let len = a[i + k - 1].offset + a[i + k - 1].len - a[i].offset;
        if len >= min {
            runs.push(Run {
                a: a[i].offset,
                b: b[j].offset,
                len,
            });
            i_min = i + k;
            j += k;
        } else {
            j += 1;
        }
    }
    runs
}

/// Whether `len` bytes at `a` in `fa` and at `b` in `fb` are the same.
pub(crate) fn same_bytes(fa: &File, a: u64, fb: &File, b: u64, len: u64) -> io::Result<bool> {
    let mut x = vec![0u8; 1 << 20];
    let mut y = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], a + done)?;
        fb.read_exact_at(&mut y[..n], b + done)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}

/// How a layer of `size` bytes is cut into frames around `shared` ranges (offset, len;
/// sorted, disjoint): (length, index into `shared` when the frame is that range).
pub(crate) fn frames(size: u64, shared: &[(u64, u64)]) -> Vec<(u64, Option<usize>)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for (i, &(offset, len)) in shared.iter().enumerate() {
        if offset > at {
            out.push((offset - at, None));
        }
        out.push((len, Some(i)));
        at = offset + len;
    }
    if at < size || out.is_empty() {
        out.push((size - at, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan(bytes: &[u8]) -> Vec<Entry> {
        let mut s = EntryScanner::new(bytes);
        // Small reads: entries straddle them.
        let mut buf = [0u8; 700];
        while s.read(&mut buf).unwrap() > 0 {}
        s.into_parts().1
    }

    #[test]
    fn entries_tile_the_tar_and_identical_ones_hash_alike() {
        let big = vec![7u8; 100_000];
        let a = tar_of(&[("bin/app", b"amd64"), ("lib/x", &big), ("etc/y", b"same")]);
        let b = tar_of(&[("bin/app", b"arm64"), ("lib/x", &big), ("etc/y", b"same")]);
        let (ea, eb) = (scan(&a), scan(&b));
        assert_eq!(ea.iter().map(|e| e.len).sum::<u64>(), a.len() as u64);
        assert_eq!(ea.len(), eb.len());
        assert_ne!(ea[0].hash, eb[0].hash);
        assert_eq!(ea[1].hash, eb[1].hash);
        let runs = find_runs(&ea, &eb, MIN_SHARED_RUN);
        // lib/x and etc/y together, and the end blocks after them.
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].a, 1024);
        assert_eq!(runs[0].b, 1024);
        assert_eq!(runs[0].len, a.len() as u64 - 1024);
        assert!(find_runs(&ea, &eb, a.len() as u64).is_empty());
    }

    #[test]
    fn a_stream_that_is_no_tar_has_no_entries_past_the_break() {
        let mut junk = tar_of(&[("a", b"x")]);
        junk.truncate(1024);
        junk.extend_from_slice(&[b'z'; 512]);
        let e = scan(&junk);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn frames_cover_the_layer() {
        assert_eq!(frames(10, &[]), vec![(10, None)]);
        assert_eq!(
            frames(10, &[(0, 4), (6, 2)]),
            vec![(4, Some(0)), (2, None), (2, Some(1)), (2, None)]
        );
        assert_eq!(frames(0, &[]), vec![(0, None)]);
    }
}
