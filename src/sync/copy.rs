//! Making a target file byte-equal to a source file: delta, change map, full.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::path::Path;

use super::digest::{
    BlockDigest, Digests, block_len, blocks_for, hash_blocks, is_zero, zero_digest,
};
use super::os::{
    open_source, open_target, read_exact_at, refuse_same_file, set_len, sync_file, sync_parent,
    write_all_at,
};
use super::pipeline::{Extent, Run, block_runs, run_extents, whole_file};
use super::{BLOCK, CHUNK, ChangeMap, FaultPlan, SyncError, SyncOptions, SyncStats};

/// What [`delta_sync`] did, and what it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaOutcome {
    pub stats: SyncStats,
    /// The digests of the source bytes as this sync read them, which are
    /// also the digests of the target after it. Phase 2 brings them up to
    /// date with [`refresh_digests`](super::refresh_digests) and verifies the
    /// target against them; a later delta can pass them as
    /// [`SyncOptions::known_target`].
    pub source_digests: Digests,
}

/// Makes `target` byte-equal to `source` by writing only the blocks whose
/// digests differ (delta phase 1).
///
/// Guarantees:
/// - the target is created if missing and resized to the source's length
///   (extended with a hole, or truncated) before any block is written;
/// - a block is written only when it differs from the target's: compared
///   byte for byte with the target read beside the source (after the
///   resize), or by digest when `options.known_target` matches the target's
///   length (then the target is not read, and the one block that straddles
///   its old end is always written). A zero block of the source over a hole
///   (or zeros) of the target is left alone, so sparse images stay sparse;
///   zeros over data are written as zeros;
/// - source and target are read in [`CHUNK`]-sized extents, in
///   parallel (in reads of 256 KiB when the target is read), and only the source is hashed (its
///   digests are returned);
/// - on `Ok`, the target and (if it was created) its directory are fsynced;
/// - idempotent: after an error or a crash at any point, running it again
///   completes the sync.
///
/// Assumptions: nothing else writes the target. The source may be written
/// meanwhile (the recovery VM keeps running): then each block of the target
/// holds whatever bytes its read of the source returned, and the returned
/// digests describe those bytes; phase 2 fixes the blocks written since (see
/// the [module docs](super)). `options.known_target`, when given, describes
/// the target as it is (a previous sync's [`DeltaOutcome::source_digests`]).
///
/// Errors: either file cannot be opened, read or written; they are the same
/// file; the source shrinks meanwhile; the fault plan fires.
pub fn delta_sync(
    source: &Path,
    target: &Path,
    options: &SyncOptions,
) -> Result<DeltaOutcome, SyncError> {
    let (src, src_meta) = open_source(source)?;
    let (dst, dst_meta, created) = open_target(target)?;
    refuse_same_file(source, &src_meta, target, &dst_meta)?;
    let (src_len, dst_len) = (src_meta.len(), dst_meta.len());

    let known = match options.known_target {
        Some(known) if known.file_len() == dst_len => Some(known),
        Some(known) => {
            tracing::warn!(
                target = %target.display(),
                known_len = known.file_len(),
                actual_len = dst_len,
                "known target digests are stale; reading the target instead"
            );
            None
        }
        None => None,
    };
    // With known digests, a block is compared by digest; otherwise the
    // target is read beside the source and each block compared byte for
    // byte (exact, and cheaper than hashing it), after the resize, so that
    // a grown target reads as its hole and a straddling block as it is.
    let expected = known.map(|known| expected_after_resize(known, src_len));
    if dst_len != src_len {
        set_len(&dst, target, src_len)?;
    }
    let bytes_read = if known.is_some() { 0 } else { src_len };

    let fault = options.fault;
    let run = Run {
        path: target,
        progress: options.progress,
        fault,
    };
    // Only the source is read when the digests are known: nothing to keep
    // in cache beside it.
    let piece_len = if expected.is_some() { CHUNK } else { PIECE };
    let chunks = run_extents(&whole_file(src_len), &run, |extent, buf| {
        let mut digests = Vec::with_capacity(extent.len.div_ceil(BLOCK));
        let mut written = Written::default();
        for (index, piece) in buf.chunks_mut(piece_len).enumerate() {
            let at = Extent {
                offset: extent.offset + (index * piece_len) as u64,
                len: piece.len(),
            };
            read_exact_at(&src, source, piece, at.offset)?;
            let hashed = hash_blocks(piece);
            let first = at.first_block() as usize;
            written += match &expected {
                Some(expected) => {
                    let differs =
                        |i: usize| expected.get(first + i).copied().flatten() != Some(hashed[i]);
                    write_selected(&dst, target, at, piece, fault, differs)?
                }
                None => TARGET_BUF.with_borrow_mut(|old| {
                    old.resize(piece.len(), 0);
                    read_exact_at(&dst, target, old, at.offset)?;
                    let differs = |i: usize| block_at(piece, i) != block_at(old, i);
                    write_selected(&dst, target, at, piece, fault, differs)
                })?,
            };
            digests.extend(hashed);
        }
        Ok((digests, written))
    })?;
    finish(dst, target, created, options.fault)?;

    let mut stats = SyncStats {
        blocks_total: blocks_for(src_len),
        bytes_read: bytes_read + src_len,
        ..SyncStats::default()
    };
    let mut blocks = Vec::with_capacity(stats.blocks_total as usize);
    for (digests, written) in chunks {
        blocks.extend(digests);
        stats.add(written);
    }
    Ok(DeltaOutcome {
        stats,
        source_digests: Digests::from_parts(src_len, blocks),
    })
}

/// [`delta_sync`] reads, hashes and compares an extent in pieces of this
/// many bytes when it reads the target, so that the source's and the target's sides of a piece stay
/// in the core's own (L2) cache from the read to the comparison: ≈ 6 %
/// faster than whole [`CHUNK`]s on the benchmark machine
/// (docs/decisions/0004-no-memory-maps.md).
const PIECE: usize = 256 * 1024;

thread_local! {
    /// Each worker thread's buffer for the target's side of a piece.
    static TARGET_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What each block of the target will hold once it is resized to `new_len`,
/// as far as its digests tell: `None` when unknown (the block straddling the
/// old end, or the new one).
fn expected_after_resize(old: &Digests, new_len: u64) -> Vec<Option<BlockDigest>> {
    (0..blocks_for(new_len))
        .map(|block| {
            let len = block_len(new_len, block);
            if block.saturating_mul(BLOCK as u64) >= old.file_len() {
                Some(zero_digest(len))
            } else if block_len(old.file_len(), block) == len {
                old.get(block).copied()
            } else {
                None
            }
        })
        .collect()
}

/// Copies the blocks of `changes` from `source` to `target` (delta phase 2,
/// after the source stopped changing).
///
/// Guarantees:
/// - the target is created if missing and resized to the source's length
///   (a hole past its old end, or truncated);
/// - every block of `changes` inside the source is copied, zeros included,
///   and nothing else; blocks past the source's end are ignored;
/// - reads only those blocks; on `Ok`, the target is fsynced;
/// - idempotent: after an error or a crash, running it again completes it.
///
/// Assumptions: the target already equals the source outside `changes`
/// (phase 1 ran). A source that grew since phase 1 has its new blocks in
/// `changes` (a resize is a write). [`verify_against`](super::verify_against)
/// checks both.
///
/// Errors: either file cannot be opened, read or written; they are the same
/// file; the fault plan fires.
pub fn copy_blocks(
    source: &Path,
    target: &Path,
    changes: &ChangeMap,
    options: &SyncOptions,
) -> Result<SyncStats, SyncError> {
    let (src, src_meta) = open_source(source)?;
    let (dst, dst_meta, created) = open_target(target)?;
    refuse_same_file(source, &src_meta, target, &dst_meta)?;
    let src_len = src_meta.len();
    if dst_meta.len() != src_len {
        set_len(&dst, target, src_len)?;
    }
    let count = blocks_for(src_len);
    let extents = block_runs(changes.iter().take_while(|&b| b < count), src_len);

    let fault = options.fault;
    let run = Run {
        path: target,
        progress: options.progress,
        fault,
    };
    let chunks = run_extents(&extents, &run, |extent, buf| {
        read_exact_at(&src, source, buf, extent.offset)?;
        write_selected(&dst, target, extent, buf, fault, |_| true)
    })?;
    finish(dst, target, created, options.fault)?;

    let mut stats = SyncStats {
        blocks_total: count,
        bytes_read: extents.iter().map(|e| e.len as u64).sum(),
        ..SyncStats::default()
    };
    chunks.into_iter().for_each(|written| stats.add(written));
    Ok(stats)
}

/// Copies all of `source` to `target` (the `full` mode, source stopped).
///
/// Guarantees:
/// - the target is created if missing, emptied, then sized to the source:
///   it is entirely a hole, and only the source's non-zero blocks are
///   written, so sparse images stay sparse and no stale byte survives;
/// - the source is read once, in [`CHUNK`]-sized reads, in
///   parallel; no digest is computed;
/// - on `Ok`, the target (and its directory if created) is fsynced;
/// - idempotent: after an error or a crash, running it again completes it
///   (starting over).
///
/// Why not `std::io::copy` (which uses `copy_file_range` on Linux): outside
/// reflink-capable filesystems it writes the source's holes as zeros, and it
/// offers no progress or fault point.
///
/// Assumptions: nothing writes either file meanwhile.
///
/// Errors: either file cannot be opened, read or written; they are the same
/// file (refused before anything is truncated); the fault plan fires.
pub fn full_sync(
    source: &Path,
    target: &Path,
    options: &SyncOptions,
) -> Result<SyncStats, SyncError> {
    let (src, src_meta) = open_source(source)?;
    let (dst, dst_meta, created) = open_target(target)?;
    refuse_same_file(source, &src_meta, target, &dst_meta)?;
    let src_len = src_meta.len();
    set_len(&dst, target, 0)?;
    set_len(&dst, target, src_len)?;

    let fault = options.fault;
    let run = Run {
        path: target,
        progress: options.progress,
        fault,
    };
    let chunks = run_extents(&whole_file(src_len), &run, |extent, buf| {
        read_exact_at(&src, source, buf, extent.offset)?;
        write_selected(&dst, target, extent, buf, fault, |i| {
            !is_zero(block_at(buf, i))
        })
    })?;
    finish(dst, target, created, options.fault)?;

    let mut stats = SyncStats {
        blocks_total: blocks_for(src_len),
        bytes_read: src_len,
        ..SyncStats::default()
    };
    chunks.into_iter().for_each(|written| stats.add(written));
    Ok(stats)
}

/// Blocks and bytes written.
#[derive(Clone, Copy, Default)]
struct Written {
    blocks: u64,
    bytes: u64,
}

impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Written) {
        self.blocks += other.blocks;
        self.bytes += other.bytes;
    }
}

impl SyncStats {
    fn add(&mut self, written: Written) {
        self.blocks_copied += written.blocks;
        self.bytes_copied += written.bytes;
    }
}

/// Block `i` of a buffer read at a block boundary.
fn block_at(buf: &[u8], i: usize) -> &[u8] {
    let start = (i * BLOCK).min(buf.len());
    &buf[start..(start + BLOCK).min(buf.len())]
}

/// Writes the blocks `i` of `buf` (read at `extent`) for which `select(i)`
/// holds, one write per run of consecutive selected blocks. A write that
/// reaches `fault.enospc_at_offset` fails with ENOSPC instead.
fn write_selected(
    dst: &File,
    path: &Path,
    extent: Extent,
    buf: &[u8],
    fault: FaultPlan,
    select: impl Fn(usize) -> bool,
) -> Result<Written, SyncError> {
    let blocks = buf.len().div_ceil(BLOCK);
    let mut written = Written::default();
    let mut i = 0;
    while i < blocks {
        if !select(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < blocks && select(i) {
            i += 1;
        }
        let (lo, hi) = (start * BLOCK, (i * BLOCK).min(buf.len()));
        let (from, to) = (extent.offset + lo as u64, extent.offset + hi as u64);
        if let Some(at) = fault.enospc_at_offset
            && to > at
        {
            return Err(SyncError::Write {
                path: path.into(),
                offset: from.max(at),
                source: injected(io::ErrorKind::StorageFull, "no space left on device"),
            });
        }
        write_all_at(dst, path, &buf[lo..hi], extent.offset + lo as u64)?;
        written.blocks += (i - start) as u64;
        written.bytes += (hi - lo) as u64;
    }
    Ok(written)
}

/// Makes the target durable: its data, and its directory entry if new.
/// Takes the file: after a failed fsync it is closed, never fsynced again.
fn finish(dst: File, target: &Path, created: bool, fault: FaultPlan) -> Result<(), SyncError> {
    if fault.eio_on_fsync {
        drop(dst);
        return Err(SyncError::Flush {
            path: target.into(),
            source: injected(io::ErrorKind::Other, "input/output error on fsync"),
        });
    }
    sync_file(dst, target)?;
    if created { sync_parent(target) } else { Ok(()) }
}

/// An error of an injected fault ([`FaultPlan`]), saying so.
fn injected(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("{what} (injected fault)"))
}
