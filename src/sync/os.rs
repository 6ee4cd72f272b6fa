//! The few file operations the engine needs, with errors that name the file
//! and the offset. Positional I/O (`pread`/`pwrite`) lets several threads
//! work on one `File` at once.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::SyncError;

/// Opens a disk image to read; it must be a regular file.
pub(crate) fn open_source(path: &Path) -> Result<(File, Metadata), SyncError> {
    let file = File::open(path).map_err(|source| SyncError::Open {
        path: path.into(),
        source,
    })?;
    let meta = regular_file(&file, path)?;
    Ok((file, meta))
}

/// Opens a file the engine wrote (a digests file) to read, with its length.
pub(crate) fn open_with_len(path: &Path) -> Result<(File, u64), SyncError> {
    let file = File::open(path).map_err(|source| SyncError::Open {
        path: path.into(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| SyncError::Metadata {
            path: path.into(),
            source,
        })?
        .len();
    Ok((file, len))
}

/// Opens a disk image to read and write, creating it (empty) if missing.
/// Returns whether it was created, so that the caller fsyncs the directory.
pub(crate) fn open_target(path: &Path) -> Result<(File, Metadata, bool), SyncError> {
    let existed = fs::symlink_metadata(path).is_ok();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| SyncError::Open {
            path: path.into(),
            source,
        })?;
    let meta = regular_file(&file, path)?;
    Ok((file, meta, !existed))
}

fn regular_file(file: &File, path: &Path) -> Result<Metadata, SyncError> {
    let meta = file.metadata().map_err(|source| SyncError::Metadata {
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SyncError::NotAFile { path: path.into() });
    }
    Ok(meta)
}

/// Fails when `source` and `target` are one file (same inode, whatever the
/// paths): a full sync would truncate it before reading it.
pub(crate) fn refuse_same_file(
    source: &Path,
    source_meta: &Metadata,
    target: &Path,
    target_meta: &Metadata,
) -> Result<(), SyncError> {
    if same_file(source, source_meta, target, target_meta) {
        return Err(SyncError::SameFile {
            source_path: source.into(),
            target_path: target.into(),
        });
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(_: &Path, a: &Metadata, _: &Path, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Path, _: &Metadata, b: &Path, _: &Metadata) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Fills `buf` from `file` at `offset`; a file that ends first is an error.
pub(crate) fn read_exact_at(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), SyncError> {
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset + filled as u64;
        match read_at(file, &mut buf[filled..], at) {
            Ok(0) => {
                return Err(SyncError::ShortRead {
                    path: path.into(),
                    offset,
                    wanted: buf.len(),
                    got: filled,
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SyncError::Read {
                    path: path.into(),
                    offset: at,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` to `file` at `offset`.
pub(crate) fn write_all_at(
    file: &File,
    path: &Path,
    buf: &[u8],
    offset: u64,
) -> Result<(), SyncError> {
    let mut written = 0;
    while written < buf.len() {
        let at = offset + written as u64;
        match write_at(file, &buf[written..], at) {
            Ok(0) => {
                let source = io::Error::from(io::ErrorKind::WriteZero);
                return Err(SyncError::Write {
                    path: path.into(),
                    offset: at,
                    source,
                });
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SyncError::Write {
                    path: path.into(),
                    offset: at,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(windows)]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, offset)
}

/// Sets the length of `file`: truncates, or extends with a hole.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> Result<(), SyncError> {
    file.set_len(len).map_err(|source| SyncError::Resize {
        path: path.into(),
        len,
        source,
    })
}

/// Flushes the data and metadata of `file` to stable storage, and closes it.
/// It takes the file so that a failed fsync is never retried on the same
/// descriptor (after a failure the kernel may have dropped the dirty pages
/// and a second fsync would report success): the caller re-opens and
/// writes again.
pub(crate) fn sync_file(file: File, path: &Path) -> Result<(), SyncError> {
    file.sync_all().map_err(|source| SyncError::Flush {
        path: path.into(),
        source,
    })
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the directory entries of `dir` durable (a created or renamed file).
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directory entries cannot be fsynced through std on this platform; NTFS
/// journals them.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Makes a newly created `path` durable in its directory.
pub(crate) fn sync_parent(path: &Path) -> Result<(), SyncError> {
    let dir = parent_dir(path);
    sync_dir(&dir).map_err(|source| SyncError::Flush { path: dir, source })
}
