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
    check_absent(path, force).map_err(AtomicError::Output)?;
    let io_err = |error: io::Error| {
        AtomicError::Output(OutputError::Io {
            path: path.to_path_buf(),
            error,
        })
    };
    let dir = parent_dir(path);
    let tmp = new_partial(path, mode).map_err(io_err)?;
    let partial = tmp.path().to_path_buf();
    let filled = (|| {
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
    let persisted = persist(tmp, path, force).map_err(AtomicError::Output);
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

/// [`write_atomically`] for several files that only make sense together (the volumes of
/// one bundle): all are filled, synced, and only then renamed into place; if any fails,
/// none is left, not even the ones already renamed.
pub fn write_set_atomically<T, E>(
    paths: &[PathBuf],
    force: bool,
    mode: u32,
    fill: impl FnOnce(&[&File]) -> Result<T, E>,
) -> Result<T, AtomicError<E>> {
    for p in paths {
        check_absent(p, force).map_err(AtomicError::Output)?;
    }
    let io_err = |path: &Path, error: io::Error| {
        AtomicError::Output(OutputError::Io {
            path: path.to_path_buf(),
            error,
        })
    };
    let mut temps = Vec::with_capacity(paths.len());
    let forget_all = |temps: &[tempfile::NamedTempFile]| {
        for t in temps {
            forget_partial(t.path());
        }
    };
    for path in paths {
        match new_partial(path, mode) {
            Ok(t) => temps.push(t),
            Err(e) => {
                forget_all(&temps);
                return Err(io_err(path, e));
            }
        }
    }
    let files: Vec<&File> = temps.iter().map(|t| t.as_file()).collect();
    let value = match fill(&files) {
        Ok(v) => v,
        Err(e) => {
            forget_all(&temps);
            return Err(AtomicError::Content(e));
        }
    };
    for (t, path) in temps.iter().zip(paths) {
        if let Err(e) = t.as_file().sync_all() {
            forget_all(&temps);
            return Err(io_err(path, e));
        }
    }
    forget_all(&temps);
    let mut placed: Vec<&PathBuf> = Vec::new();
    for (t, path) in temps.into_iter().zip(paths) {
        let persisted = persist(t, path, force).map_err(AtomicError::Output);
        if let Err(e) = persisted {
            for p in placed {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        placed.push(path);
    }
    for dir in paths.iter().map(|p| parent_dir(p)) {
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    Ok(value)
}

/// The temporary file `path` is written in (`.NAME.XXXXXX.partial` beside it), locked,
/// with its mode, and registered for [`remove_partials`]; stale ones are removed first.
fn new_partial(path: &Path, mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the directory {} does not exist", dir.display()),
        ));
    }
    remove_stale_partials(&dir, &name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)?;
    // Held until the file is renamed or removed: marks it as not stale.
    tmp.as_file().lock()?;
    set_mode(tmp.as_file(), mode)?;
    register_partial(tmp.path());
    Ok(tmp)
}

/// Renames a filled temporary file into place; without `force`, never over an existing
/// file. Filesystems with neither RENAME_NOREPLACE nor hard links (FAT behind FUSE) get
/// a check then a plain rename.
fn persist(tmp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<(), OutputError> {
    let io_err = |error| OutputError::Io {
        path: path.to_path_buf(),
        error,
    };
    if force {
        return tmp.persist(path).map(|_| ()).map_err(|e| io_err(e.error));
    }
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
            Err(OutputError::Exists(path.to_path_buf()))
        }
        Err(e)
            if matches!(
                e.error.kind(),
                io::ErrorKind::InvalidInput
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::Unsupported
            ) =>
        {
            if path.exists() {
                return Err(OutputError::Exists(path.to_path_buf()));
            }
            e.file
                .persist(path)
                .map(|_| ())
                .map_err(|e| io_err(e.error))
        }
        Err(e) => Err(io_err(e.error)),
    }
}

/// Gives a new file its mode. FAT (and fusefat) have no modes and refuse: a public
/// file (a bundle, a volume) is written there anyway; a private one (a secret key) is not.
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match file.set_permissions(std::fs::Permissions::from_mode(mode)) {
        Err(e)
            if mode & 0o044 == 0o044
                && (e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error())
                    || e.kind() == io::ErrorKind::PermissionDenied
                    || e.kind() == io::ErrorKind::Unsupported) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Whether `dir` is on FAT or behind FUSE (fusefat, exfat-fuse, ntfs-3g: the drivers
/// of removable media, whose underlying filesystem cannot be told): a bundle's
/// temporary single file may not fit there (FAT holds no file of 4 GiB or more).
pub fn may_be_fat(dir: &Path) -> bool {
    const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    // f_type is i64 here, i32 on 32-bit ARM.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(dir)
        .is_ok_and(|s| matches!(s.f_type as i64, MSDOS_SUPER_MAGIC | FUSE_SUPER_MAGIC))
}
