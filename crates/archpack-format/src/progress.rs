//! Progress reporting: readers and writers call these; whoever drives them draws (the
//! CLI's bars). Nothing here prints.

pub trait Progress: Sync {
    /// A phase with a byte total, when known.
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    /// A one-line status the user may want to see (which image is being read, ...).
    fn note(&self, _message: &str) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// Counts bytes read through it into a [`Progress`].
pub struct ProgressReader<'a, R> {
    pub inner: R,
    pub progress: &'a dyn Progress,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
