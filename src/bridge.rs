//! The one bridge between blocking code (tar, zstd, hashing) and async I/O (the engine's
//! HTTP API): a bounded channel of byte chunks. A blocking [`ChunkWriter`] feeds either
//! a blocking [`ChunkReader`] (thread to thread) or an async request body
//! ([`ChunkReceiver::into_stream`]); an async byte stream is read from blocking code
//! through the same channel ([`stream_reader`]: a task forwards its chunks).
//!
//! A writer can fail the stream ([`ChunkWriter::fail`]): the reader or request body then
//! ends with that error rather than a clean end, so an engine aborts a load instead of
//! taking a truncated archive.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::io::{self, Read, Write};

/// Chunk size sent across: large enough that per-chunk overhead vanishes.
pub const CHUNK: usize = 256 << 10;

/// A bounded channel of `depth` chunks. A write after the receiving end has gone fails
/// with `gone` (what that means to the user: "the engine closed the load request").
pub fn chunk_channel(depth: usize, gone: &'static str) -> (ChunkWriter, ChunkReceiver) {
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    (
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            gone,
        },
        ChunkReceiver { rx },
    )
}

/// The sending side: a blocking `Write` that sends full chunks.
pub struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    gone: &'static str,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let gone = self.gone;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, gone))
    }

    /// Ends the stream with `error` instead of a clean end.
    pub fn fail(self, error: io::Error) {
        let _ = self.tx.blocking_send(Err(error));
    }

    /// Sends what is buffered; the stream ends cleanly when the writer is dropped.
    pub fn close(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The receiving side, before it is given a shape.
pub struct ChunkReceiver {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
}

impl ChunkReceiver {
    /// As an async stream (an HTTP request body).
    pub fn into_stream(mut self) -> impl Stream<Item = io::Result<Bytes>> {
        futures_util::stream::poll_fn(move |cx| self.rx.poll_recv(cx))
    }

    /// As a blocking `Read` on another thread. `on_bytes` sees every byte count read.
    pub fn into_reader<'p>(self, on_bytes: &'p (dyn Fn(u64) + Sync)) -> ChunkReader<'p> {
        ChunkReader {
            rx: self.rx,
            current: Bytes::new(),
            on_bytes,
        }
    }
}

/// A blocking `Read` over the chunks a [`ChunkWriter`] sends.
pub struct ChunkReader<'p> {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    on_bytes: &'p (dyn Fn(u64) + Sync),
}

impl ChunkReader<'_> {
    /// Waits until the first bytes are in (or the stream has ended).
    pub fn wait_for_data(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(())
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// A blocking `Read` over an async byte stream that a task on `runtime` drives from now
/// on: the request goes out at once, and up to `depth` of its chunks wait for the
/// reader. An engine export that prepares everything before its first byte (Docker's
/// `docker save` does) then prepares while the reader is still busy with an earlier one.
/// Reads copy out of the chunks: no trip through the runtime per read (a tar reader's
/// 512-byte headers made that cost half the export's speed).
pub fn stream_reader<S, E>(
    stream: S,
    runtime: &tokio::runtime::Handle,
    depth: usize,
) -> ChunkReader<'static>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
    runtime.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| io::Error::other(e.to_string()));
            let failed = item.is_err();
            // A reader that has gone ends the request (the stream is dropped).
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    ChunkReceiver { rx }.into_reader(&uncounted)
}

fn uncounted(_: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_arrive_in_order_and_a_failure_is_seen() {
        let (mut w, r) = chunk_channel(2, "gone");
        let producer = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes()).unwrap();
            }
            w.flush().unwrap();
            w.fail(io::Error::other("boom"));
        });
        let mut got = Vec::new();
        let counted = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let e = r.into_reader(&count).read_to_end(&mut got).unwrap_err();
        producer.join().unwrap();
        assert_eq!(e.to_string(), "boom");
        assert_eq!(got.len(), 4000);
        assert_eq!(counted.into_inner(), 4000);
        assert_eq!(&got[4..8], &1u32.to_le_bytes());
    }
}
