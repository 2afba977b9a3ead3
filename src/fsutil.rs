//! Writing output files so that an interrupted or failed write leaves nothing at the
//! destination: a temporary file beside it, synced, renamed into place, directory synced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why an output file could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0}: already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("writing {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// Either the output could not be put in place, or what fills it failed.
#[derive(Debug)]
pub enum AtomicError<E> {
    Output(OutputError),
    Content(E),
}

impl<E> AtomicError<E> {
    /// One error type for both, when the content's error converts from [`OutputError`].
    pub fn flatten(self) -> E
    where
        E: From<OutputError>,
    {
        match self {
            AtomicError::Output(o) => o.into(),
            AtomicError::Content(e) => e,
        }
    }
}

/// Refuses an existing `path` unless `force`.
pub fn check_absent(path: &Path, force: bool) -> Result<(), OutputError> {
    if path.exists() && !force {
        return Err(OutputError::Exists(path.to_path_buf()));
    }
    Ok(())
}

/// The directory an output file is written in (its temporary file goes there too).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `path` from what `fill` writes into a temporary file beside it. Without
/// `force` an existing file is kept (checked first, and again atomically at the end).
pub fn write_atomically<T, E>(
    path: &Path,
    force: bool,
    mode: u32,
    fill: impl FnOnce(&File) -> Result<T, E>,
) -> Result<T, AtomicError<E>> {
    use std::os::unix::fs::PermissionsExt;
    check_absent(path, force).map_err(AtomicError::Output)?;
    let io_err = |error: io::Error| {
        AtomicError::Output(OutputError::Io {
            path: path.to_path_buf(),
            error,
        })
    };
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dir.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the directory {} does not exist", dir.display()),
        )));
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io_err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    let value = fill(tmp.as_file()).map_err(AtomicError::Content)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    if force {
        tmp.persist(path).map_err(|e| io_err(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                AtomicError::Output(OutputError::Exists(path.to_path_buf()))
            } else {
                io_err(e.error)
            }
        })?;
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// `write_atomically` for bytes already in memory.
pub fn write_bytes(path: &Path, bytes: &[u8], force: bool, mode: u32) -> Result<(), OutputError> {
    use std::io::Write;
    write_atomically(path, force, mode, |mut f| f.write_all(bytes)).map_err(|e| match e {
        AtomicError::Output(o) => o,
        AtomicError::Content(error) => OutputError::Io {
            path: path.to_path_buf(),
            error,
        },
    })
}
