//! Writing output files so that an interrupted or failed write leaves nothing at the
//! destination: a temporary file beside it (`.NAME.XXXXXX.partial`), synced, renamed into
//! place, directory synced.
//!
//! Nothing half-written is left behind either: a failed write removes its temporary
//! file; an interrupted one is removed by [`remove_partials`] (the CLI calls it on
//! SIGINT/SIGTERM); one left by a killed process (SIGKILL, power loss) is removed by the
//! next write to the same output. A live writer holds a lock on its temporary file, so
//! only abandoned ones are taken for stale.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written now, for [`remove_partials`].
static PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every temporary file this process is writing. For a signal handler about to
/// end the process: what was being written will never be renamed into place.
pub fn remove_partials() -> usize {
    let paths = match PARTIALS.lock() {
        Ok(p) => p.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    paths
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

fn register_partial(path: &Path) {
    if let Ok(mut p) = PARTIALS.lock() {
        p.push(path.to_path_buf());
    }
}

fn forget_partial(path: &Path) {
    if let Ok(mut p) = PARTIALS.lock() {
        p.retain(|x| x != path);
    }
}

/// Removes `.NAME.*.partial` files in `dir` that no live writer holds (left by a killed
/// create of the same output). Returns how many it removed.
pub fn remove_stale_partials(dir: &Path, name: &str) -> usize {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let ours = file_name.starts_with(&prefix)
            && file_name.ends_with(".partial")
            && file_name.len() > prefix.len() + ".partial".len();
        if !ours {
            continue;
        }
        let Ok(file) = File::options().write(true).open(entry.path()) else {
            continue;
        };
        // A writer that is alive holds the lock: leave its file alone.
        if file.try_lock().is_ok() && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

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
    remove_stale_partials(&dir, &name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(io_err)?;
    // Held until the file is renamed or removed: marks it as not stale.
    tmp.as_file().lock().map_err(io_err)?;
    register_partial(tmp.path());
    let partial = tmp.path().to_path_buf();
    let filled = (|| {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
        let value = fill(tmp.as_file()).map_err(AtomicError::Content)?;
        tmp.as_file().sync_all().map_err(io_err)?;
        Ok(value)
    })();
    let value = match filled {
        Ok(v) => v,
        Err(e) => {
            forget_partial(&partial);
            return Err(e);
        }
    };
    let persisted = if force {
        tmp.persist(path).map_err(|e| io_err(e.error))
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                AtomicError::Output(OutputError::Exists(path.to_path_buf()))
            } else {
                io_err(e.error)
            }
        })
    };
    forget_partial(&partial);
    persisted?;
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
