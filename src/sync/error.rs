//! Errors of the sync engine. Every message names the file and the cause.

use std::io;
use std::path::PathBuf;

/// Why a sync, a digest or a verification failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SyncError {
    #[error("opening {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("reading the metadata of {}: {source}", path.display())]
    Metadata { path: PathBuf, source: io::Error },

    #[error("{} is not a regular file", path.display())]
    #[diagnostic(help("disks are raw image files; block devices are not supported yet"))]
    NotAFile { path: PathBuf },

    #[error("{} and {} are the same file", source_path.display(), target_path.display())]
    #[diagnostic(help(
        "a sync needs two distinct files; syncing a file onto itself could erase it"
    ))]
    SameFile {
        source_path: PathBuf,
        target_path: PathBuf,
    },

    #[error("reading {} at offset {offset}: {source}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },

    #[error(
        "reading {} at offset {offset}: the file ended after {got} of {wanted} bytes",
        path.display()
    )]
    #[diagnostic(help("the file shrank while it was read; run the sync again"))]
    ShortRead {
        path: PathBuf,
        offset: u64,
        wanted: usize,
        got: usize,
    },

    #[error("writing {} at offset {offset}: {source}", path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },

    #[error("resizing {} to {len} bytes: {source}", path.display())]
    Resize {
        path: PathBuf,
        len: u64,
        source: io::Error,
    },

    #[error("flushing {} to stable storage: {source}", path.display())]
    Flush { path: PathBuf, source: io::Error },

    #[error("saving {}: {step}: {source}", path.display())]
    Save {
        path: PathBuf,
        step: String,
        source: io::Error,
    },

    #[error("{} is not a valid {what} file: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        source: DecodeError,
    },

    #[error("injected fault: the sync of {} stopped at offset {offset}", path.display())]
    #[diagnostic(help("a fault plan was set; run the sync again without it to complete it"))]
    InjectedFault { path: PathBuf, offset: u64 },
}

/// Why bytes are not a valid serialised [`ChangeMap`](super::ChangeMap) or
/// [`Digests`](super::Digests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum DecodeError {
    #[error("it is {0} bytes long, shorter than any valid file")]
    TooShort(usize),
    #[error("it does not start with the expected magic bytes")]
    BadMagic,
    #[error("its format version {0} is not supported")]
    UnsupportedVersion(u32),
    #[error("it uses {found}-byte blocks, not {expected}")]
    BlockSize { found: u32, expected: u32 },
    #[error("its digests use hash algorithm {found}, not {expected}")]
    Algorithm { found: u32, expected: u32 },
    #[error("its header announces {announced} bytes of content but it holds {found}")]
    Length { announced: u64, found: u64 },
    #[error("its checksum does not match its content (truncated or corrupted)")]
    Checksum,
    #[error("its digests do not match the image digest recorded for them (stale or corrupted)")]
    Digest,
}
