//! Atomic file replacement and the framing shared by the files the engine
//! writes (change maps, digests).
//!
//! Framing: an 8-byte magic, a little-endian `u32` format version, the body,
//! then the first 16 bytes of the BLAKE3 hash of everything before them. The
//! checksum catches a truncated or corrupted file; atomic replacement makes
//! a torn one impossible in the first place.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::os::{parent_dir, sync_dir};
use super::{DecodeError, SyncError};

pub(crate) const CHECKSUM_LEN: usize = 16;

/// Replaces `path` by a file holding `bytes`, atomically and durably: after a
/// crash at any point, `path` holds either its old content or `bytes`.
///
/// Writes a temporary file beside `path`, fsyncs it, renames it over `path`
/// and fsyncs the directory. A crash can leave the temporary file
/// (`.NAME.PID.N.tmp`) behind; it is never read.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    let dir = parent_dir(path);
    let tmp = temp_beside(path);
    let failed = |step: String| {
        move |source: std::io::Error| SyncError::Save {
            path: path.into(),
            step,
            source,
        }
    };

    let written = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(failed(format!("writing {}", tmp.display())));
    if let Err(e) = written {
        // Best effort: the write error is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(format!("renaming {} over it", tmp.display()))(
            source,
        ));
    }
    sync_dir(&dir).map_err(failed(format!("flushing directory {}", dir.display())))
}

/// A fresh temporary path beside `path` (`.NAME.PID.N.tmp`), for a file
/// that will be renamed over it: unique within the process (a counter) and
/// between processes (the process ID).
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Builds a framed file.
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(magic: &[u8; 8], version: u32, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity + 12 + CHECKSUM_LEN);
        bytes.extend_from_slice(magic);
        bytes.extend_from_slice(&version.to_le_bytes());
        Encoder { bytes }
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn raw(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let sum = checksum(&self.bytes);
        self.bytes.extend_from_slice(&sum);
        self.bytes
    }
}

/// Reads a framed file: checks magic, version and checksum up front, then
/// hands out the body field by field.
pub(crate) struct Decoder<'a> {
    body: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8], magic: &[u8; 8], version: u32) -> Result<Self, DecodeError> {
        let Some((content, sum)) = bytes.split_last_chunk::<CHECKSUM_LEN>() else {
            return Err(DecodeError::TooShort(bytes.len()));
        };
        let decoder = Decoder::unchecked(content, magic, version).map_err(|e| match e {
            DecodeError::TooShort(_) => DecodeError::TooShort(bytes.len()),
            other => other,
        })?;
        if checksum(content) != *sum {
            return Err(DecodeError::Checksum);
        }
        Ok(decoder)
    }

    /// A decoder over a header alone, whose checksum the caller verifies
    /// (over the header and the content read after it).
    pub(crate) fn unchecked(
        bytes: &'a [u8],
        magic: &[u8; 8],
        version: u32,
    ) -> Result<Self, DecodeError> {
        let Some((found_magic, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(DecodeError::TooShort(bytes.len()));
        };
        if found_magic != magic {
            return Err(DecodeError::BadMagic);
        }
        let Some((found_version, body)) = rest.split_first_chunk::<4>() else {
            return Err(DecodeError::TooShort(bytes.len()));
        };
        let found_version = u32::from_le_bytes(*found_version);
        if found_version != version {
            return Err(DecodeError::UnsupportedVersion(found_version));
        }
        Ok(Decoder { body })
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(*self.chunk::<4>()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(*self.chunk::<8>()?))
    }

    /// The rest of the body, which must be exactly `len` bytes.
    pub(crate) fn rest(self, len: u64) -> Result<&'a [u8], DecodeError> {
        if self.body.len() as u64 != len {
            return Err(DecodeError::Length {
                announced: len,
                found: self.body.len() as u64,
            });
        }
        Ok(self.body)
    }

    fn chunk<const N: usize>(&mut self) -> Result<&'a [u8; N], DecodeError> {
        let Some((chunk, rest)) = self.body.split_first_chunk::<N>() else {
            return Err(DecodeError::Length {
                announced: N as u64,
                found: self.body.len() as u64,
            });
        };
        self.body = rest;
        Ok(chunk)
    }
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    checksum_parts(&[bytes])
}

/// The checksum of the concatenation of `parts`.
pub(crate) fn checksum_parts(parts: &[&[u8]]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update_rayon(part);
    }
    let mut sum = [0u8; CHECKSUM_LEN];
    hasher.finalize_xof().fill(&mut sum);
    sum
}
