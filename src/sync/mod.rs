//! The block-level disk synchronisation engine: the data path of a failback.
//!
//! This module owns moving the bytes of one disk image to another and proving
//! that they arrived. It works on plain files (raw, sparse disk images) through
//! paths and [`std::fs::File`]s only, and knows nothing about sites, VMs or
//! providers: the lab provider uses it today, other providers later.
//!
//! | operation | failback step | reads | writes |
//! |---|---|---|---|
//! | [`delta_sync`] | `delta` phase 1, recovery VM running | source, target (unless its digests are known) | blocks that differ |
//! | [`copy_blocks`] | `delta` phase 2, recovery VM off | the blocks of a [`ChangeMap`] | those blocks |
//! | [`full_sync`] | `full` mode, recovery VM off | source | every non-zero block |
//! | [`verify_equal`], [`verify_against`] | gate before starting the primary VM | both sides / the target | nothing |
//! | [`verify_changes`], [`PhaseTwo`] | the same gate after phase 2 | the blocks of a [`ChangeMap`] on the target | nothing |
//!
//! Every disk is cut into [`BLOCK`]-byte blocks (the last one may be shorter);
//! each block has a 16-byte [`BlockDigest`] (see [`block_digest`] for the hash
//! and why), and a whole image has an [`ImageDigest`], the root of a
//! two-level hash tree: block digests in segments of [`SEGMENT_BLOCKS`], each
//! segment hashed, and the root over the length and the segment digests in
//! order ([`Digests::root`]).
//!
//! All functions block the calling thread (call them from
//! `tokio::task::spawn_blocking` in async code); hashing and I/O run in
//! parallel on the rayon pool, sized to the machine. They fsync what they
//! wrote before returning `Ok`, and they are idempotent: after a crash or an
//! error at any point, running the same call again completes the work.
//!
//! # Reads are copies (`pread`), never memory maps
//!
//! Every byte is read with positional reads into a buffer of the worker
//! thread, then hashed and compared there; writes are positional writes.
//! Files are not memory-mapped, not even the target, although that would
//! save the copy out of the page cache (docs/decisions/0004-no-memory-maps.md
//! has the figures):
//!
//! - the source is a running VM's disk, and a hypervisor may shrink it while
//!   phase 1 reads it (Hyper-V resizes a VHDX online, both ways). Reading a
//!   mapped page past the new end raises `SIGBUS`, which kills the whole
//!   process, every VM's sync with it, instead of failing this one with an
//!   error that names the file ([`SyncError::ShortRead`]). An I/O error on a
//!   mapped page does the same, on either side;
//! - a mapping of the source would also let the bytes change between the
//!   hash, the comparison and the write of one block (the guest writes
//!   meanwhile); with a private copy, the digest returned for a block always
//!   describes the bytes written for it;
//! - mapping only the target (which only we write) gained about 5 % on a
//!   2 GiB delta, and nothing when its digests are known, for `unsafe` code
//!   in a crate that forbids it and a crash instead of an error on a bad
//!   sector of the primary disk.
//!
//! What made the delta fast instead: workers that take the next extent as
//! soon as they finish one (no wait between batches of extents), the
//! source's blocks hashed 16 at a time in SIMD lanes (the same BLAKE3-128
//! digest; see `hash_blocks` in `digest.rs`), and, when the target is read,
//! both sides compared in pieces small enough to stay in the core's cache.
//!
//! # Why a verified delta failback loses no data
//!
//! Write `S(t)` for the source (recovery) disk at time `t`, `T` for the target
//! (primary) disk, `t0` for the moment the lab starts recording the change map
//! `C` of the disk, and `ts` for the moment the recovery VM is confirmed off.
//! Nothing writes the source after `ts`, so the disk the primary VM must start
//! from is `S(ts)`. The protocol is:
//!
//! 1. at `t0`, start recording: every guest write that lands after `t0`
//!    marks its blocks in `C`, and the mark is saved before the write lands
//!    (so a crash between the two loses no mark). A write already in flight
//!    at `t0` must be marked too, or be finished first: the lab starts
//!    recording under the same lock its writes take;
//! 2. phase 1 ([`delta_sync`]), after `t0`, reads the source while the VM
//!    runs. It returns `D`, the digests of the bytes it read, and leaves the
//!    target holding exactly those bytes: block `b` of `T` has digest `D[b]`;
//! 3. at `ts` the VM is off; phase 2 ([`copy_blocks`]) copies every block of
//!    `C` from `S(ts)` to `T`, and [`refresh_digests`] replaces `D[b]` by the
//!    digest of `S(ts)` block `b` for every `b` in `C` (and for blocks added
//!    if the disk was resized);
//! 4. [`verify_against`]`(T, D)` reads the whole target and compares; or,
//!    in time that grows with `C` rather than with the disk,
//!    [`verify_changes`]`(T, D1, C, D)`, where `D1` is phase 1's `D` before
//!    step 3 (what phase 1 left in `T`): it hashes again from `T` only the
//!    blocks of `C` and takes `D1[b]` for the others.
//!
//! Claim: after step 3, `D[b]` is the digest of block `b` of `S(ts)` for every
//! `b`. If `b` is in `C`, step 3 hashed it from `S(ts)` itself. If `b` is not
//! in `C`, no write touched `b` after `t0`; phase 1 read `b` after `t0`, so it
//! read the same bytes `S(ts)` holds. Step 4 then checks every block of `T`
//! against `D`, that is against `S(ts)`: when it reports `equal`, `T` equals
//! `S(ts)` block by block (up to a BLAKE3-128 collision), whatever happened in
//! between: torn reads, crashes, re-runs, a phase 2 interrupted and resumed.
//! Verification is what carries the proof; the copy steps only make it pass.
//!
//! [`verify_changes`] needs one more fact: outside `C`, `T` still holds what
//! phase 1 left, `D1`. Phase 1 leaves `T` with digests `D1` when it returns
//! (it writes every block whose digest differs, then fsyncs); a
//! [`FileStamp`] of `T` taken then, and found unchanged just before step 3
//! writes, shows that nothing wrote `T` in between (see [`FileStamp`] for
//! what the kernel promises); step 3 writes only blocks of `C`, and those
//! are the blocks `verify_changes` reads back from `T` itself. So its
//! digests of `T` are those a full read would give, and its verdict is the
//! full verification's: every block of the target, changed or not, equals
//! `S(ts)`. When the evidence is missing (no stamp, a different stamp, a
//! phase 2 interrupted by a crash and resumed by another process), callers
//! fall back to [`verify_against`]; speed is never bought with the proof.
//!
//! The argument needs `t0` to come **before** phase 1 reads the source. A
//! write racing with the phase-1 read of its block (the read sees half of it,
//! or the old bytes) is then in `C` and re-sent in phase 2. If recording
//! started after the read began, such a write could be missing from both
//! phase 1 and `C`, and `D` would still describe the old bytes, so
//! verification against `D` would pass on a target that lacks the write. For
//! the same reason, a [`ChangeMap`] file that is missing means "recording never
//! started", never "nothing changed": [`ChangeMap::load`] fails on it.
//!
//! `D1` can be read back in part. [`PhaseTwo::from_file`] reads from the file
//! [`Digests::save`] wrote only the segment digests, and accepts them only if
//! they hash, with the length, to the image digest of `D1` recorded when
//! phase 1 returned; it then reads the block digests of the segments that
//! `C` touches, each accepted only if it hashes to its segment digest. Every
//! digest it uses is thus `D1`'s (up to a BLAKE3 collision), and the root of
//! `D` follows from the segments `C` touches and the others' digests
//! unchanged: the argument above holds as if the whole of `D1` were read.
//!
//! `D` can outlive the process: [`Digests::save`] writes it atomically. A lab
//! that does not keep `D` can verify with [`verify_equal`] (or compare
//! [`image_digest`] of both sides) once the recovery VM is off: that reads
//! the source again but relies on nothing above.

mod change_map;
mod copy;
mod digest;
mod error;
mod os;
mod persist;
mod pipeline;
mod segment;
mod stamp;
mod verify;

#[cfg(test)]
mod tests;

pub use change_map::ChangeMap;
pub use copy::{DeltaOutcome, copy_blocks, delta_sync, full_sync};
pub use digest::{
    BlockDigest, Digests, ImageDigest, ParseImageDigestError, block_digest, digest_blocks,
    image_digest, refresh_digests,
};
pub use error::{DecodeError, SyncError};
pub(crate) use persist::temp_beside;
pub use segment::{SEGMENT_BLOCKS, SegmentDigest};
pub use stamp::{FileStamp, settle_time};
pub use verify::{PhaseTwo, Verification, verify_against, verify_changes, verify_equal};

/// Size of a block, the unit of comparison and copy: 4 KiB.
pub const BLOCK: usize = 4096;

/// Size of one read: files are processed in extents of at most this many bytes.
pub const CHUNK: usize = 1024 * 1024;

/// Progress is reported at most once per this many bytes (plus a final call).
pub const PROGRESS_STEP: u64 = 4 * 1024 * 1024;

/// What a sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Blocks of the source (the last one may be partial).
    pub blocks_total: u64,
    /// Blocks written to the target.
    pub blocks_copied: u64,
    /// Bytes written to the target.
    pub bytes_copied: u64,
    /// Bytes read, from the source and (for a delta without known digests)
    /// from the target.
    pub bytes_read: u64,
}

/// A fault to inject into a sync, for tests and reliability drills. Inert by
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Stop the sync at this source offset, rounded down to a block boundary:
    /// every block that ends at or below it is processed, no block after it,
    /// nothing is fsynced, and the call returns [`SyncError::InjectedFault`],
    /// as if the process had crashed there. A sync whose work ends before the
    /// offset completes normally.
    pub fail_at_offset: Option<u64>,
    /// A full disk at this target offset: the first write to the target
    /// that reaches it (its range ends past the offset) fails with ENOSPC,
    /// and the call returns [`SyncError::Write`] naming the target and the
    /// offset. Blocks written before stay written; nothing is fsynced.
    pub enospc_at_offset: Option<u64>,
    /// The fsync of the target fails with EIO: the call returns
    /// [`SyncError::Flush`] naming the target. The file is closed and never
    /// fsynced again (its dirty pages may be lost): a later sync re-opens it
    /// and writes again, which every sync here does.
    pub eio_on_fsync: bool,
}

impl FaultPlan {
    /// A plan that stops the sync at `offset`.
    pub fn fail_at(offset: u64) -> Self {
        FaultPlan {
            fail_at_offset: Some(offset),
            ..FaultPlan::default()
        }
    }

    /// A plan whose first target write reaching `offset` fails with ENOSPC.
    pub fn enospc_at(offset: u64) -> Self {
        FaultPlan {
            enospc_at_offset: Some(offset),
            ..FaultPlan::default()
        }
    }

    /// A plan whose target fsync fails with EIO.
    pub fn eio_on_fsync() -> Self {
        FaultPlan {
            eio_on_fsync: true,
            ..FaultPlan::default()
        }
    }
}

/// The progress callback: `(bytes done, bytes total)`.
pub type ProgressFn<'a> = &'a dyn Fn(u64, u64);

/// Options of a sync; `SyncOptions::default()` is a plain sync.
#[derive(Clone, Copy, Default)]
pub struct SyncOptions<'a> {
    /// [`delta_sync`] only: digests of the target as it is now, so that only
    /// the source is read (a re-run). Ignored, and the target read instead,
    /// when their length is not the target's.
    pub known_target: Option<&'a Digests>,
    /// Called on the calling thread with non-decreasing `done`, at most once
    /// per [`PROGRESS_STEP`] bytes, and once with `done == total` at the end.
    pub progress: Option<ProgressFn<'a>>,
    /// A fault to inject; none by default.
    pub fault: FaultPlan,
}

impl<'a> SyncOptions<'a> {
    /// Plain options: no known digests, no progress, no fault.
    pub fn new() -> Self {
        SyncOptions::default()
    }

    /// Uses `digests` as the digests of the target (see [`SyncOptions::known_target`]).
    pub fn with_known_target(mut self, digests: &'a Digests) -> Self {
        self.known_target = Some(digests);
        self
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: ProgressFn<'a>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Injects `fault`.
    pub fn with_fault(mut self, fault: FaultPlan) -> Self {
        self.fault = fault;
        self
    }
}

impl std::fmt::Debug for SyncOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("known_target", &self.known_target.map(Digests::file_len))
            .field("progress", &self.progress.is_some())
            .field("fault", &self.fault)
            .finish()
    }
}
