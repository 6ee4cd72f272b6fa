//! The loop every operation shares: cut the work into extents, let a few
//! workers take the next extent as soon as they finish one (one buffer per
//! worker, reused), report progress on the calling thread, and stop at an
//! injected fault.
//!
//! Why workers that take the next extent, not windows of extents in
//! parallel with a wait between windows: on 2 cores, the wait after each
//! window left a core idle whenever its extent finished first: 12 % of a
//! 2 GiB delta's time, 15 % with known target digests
//! (docs/decisions/0004-no-memory-maps.md has the figures).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{BLOCK, CHUNK, FaultPlan, PROGRESS_STEP, ProgressFn, SyncError};

/// At most this many workers (each with a buffer of [`CHUNK`] bytes).
const MAX_WORKERS: usize = 16;

/// A block-aligned byte range of a file, processed as one unit: one read of
/// at most [`CHUNK`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

impl Extent {
    /// Index of the block the extent starts at.
    pub(crate) fn first_block(self) -> u64 {
        self.offset / BLOCK as u64
    }

    fn end(self) -> u64 {
        self.offset + self.len as u64
    }
}

/// Extents covering `[0, len)`.
pub(crate) fn whole_file(len: u64) -> Vec<Extent> {
    (0..len)
        .step_by(CHUNK)
        .map(|offset| Extent {
            offset,
            len: (len - offset).min(CHUNK as u64) as usize,
        })
        .collect()
}

/// Extents covering the given blocks of a file of `file_len` bytes:
/// consecutive blocks are merged, up to [`CHUNK`] bytes per extent; blocks
/// past the end of the file are dropped. `blocks` must be increasing.
pub(crate) fn block_runs(blocks: impl IntoIterator<Item = u64>, file_len: u64) -> Vec<Extent> {
    let mut runs: Vec<Extent> = Vec::new();
    for block in blocks {
        let offset = block.saturating_mul(BLOCK as u64);
        if offset >= file_len {
            break;
        }
        let len = (file_len - offset).min(BLOCK as u64) as usize;
        match runs.last_mut() {
            Some(run) if run.end() == offset && run.len + len <= CHUNK => run.len += len,
            _ => runs.push(Extent { offset, len }),
        }
    }
    runs
}

/// How to run: the file named in a fault, where to report progress, the fault.
pub(crate) struct Run<'a> {
    pub(crate) path: &'a Path,
    pub(crate) progress: Option<ProgressFn<'a>>,
    pub(crate) fault: FaultPlan,
}

impl<'a> Run<'a> {
    /// No progress, no fault.
    pub(crate) fn quiet(path: &'a Path) -> Self {
        Run {
            path,
            progress: None,
            fault: FaultPlan::default(),
        }
    }
}

/// Runs `work` on every extent, in parallel, and returns its results in the
/// order of `extents`. `work` gets the extent and a buffer of exactly its
/// length (content unspecified).
///
/// Guarantees:
/// - as many workers as the rayon pool has threads (at most
///   [`MAX_WORKERS`]), the calling thread being one of them: each takes the
///   next extent not yet taken, in order, as soon as it is done with its
///   last one, so the cores stay busy until the last extent;
/// - progress is reported on the calling thread only, with non-decreasing
///   `done` (the bytes of the extents finished so far, by any worker), at
///   most once per [`PROGRESS_STEP`], and once at the end with the total
///   done (unless an error is returned);
/// - after an extent fails, no worker takes another one; the extents taken
///   before finish, so every extent before the failed one is processed. The
///   first error in extent order is returned;
/// - with a fault plan, only the parts of extents below the fault offset
///   (rounded down to a block) are processed, then
///   [`SyncError::InjectedFault`] is returned.
///
/// Assumptions: `work` does not wait for other rayon jobs to make progress
/// (it reads, hashes, compares and writes), so calling this from a rayon
/// worker, even in a one-thread pool, cannot deadlock: the calling thread
/// works through the extents itself if no other thread helps.
pub(crate) fn run_extents<T, W>(extents: &[Extent], run: &Run, work: W) -> Result<Vec<T>, SyncError>
where
    T: Send,
    W: Fn(Extent, &mut [u8]) -> Result<T, SyncError> + Sync,
{
    let total: u64 = extents.iter().map(|e| e.len as u64).sum();
    let (extents, fault) = cut_at_fault(extents, run.fault);
    let workers = rayon::current_num_threads()
        .clamp(1, MAX_WORKERS)
        .min(extents.len());
    let queue = Queue {
        extents: &extents,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        done: AtomicU64::new(0),
        outcomes: Mutex::new(Vec::with_capacity(extents.len())),
    };
    let mut reported = 0u64;
    if workers > 0 {
        rayon::in_place_scope(|scope| {
            for _ in 1..workers {
                scope.spawn(|_| queue.work_through(&work, |_| {}));
            }
            queue.work_through(&work, |done| {
                if let Some(progress) = run.progress
                    && done - reported >= PROGRESS_STEP
                {
                    progress(done, total);
                    reported = done;
                }
            });
        });
    }
    let mut outcomes = queue
        .outcomes
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    outcomes.sort_unstable_by_key(|(index, _)| *index);
    let mut results = Vec::with_capacity(outcomes.len());
    for (_, outcome) in outcomes {
        results.push(outcome?);
    }
    let done = queue.done.into_inner();
    if let Some(progress) = run.progress
        && (done > reported || total == 0)
    {
        progress(done, total);
    }
    match fault {
        Some(offset) => Err(SyncError::InjectedFault {
            path: run.path.into(),
            offset,
        }),
        None => Ok(results),
    }
}

/// The extents of one [`run_extents`] call, shared by its workers.
struct Queue<'a, T> {
    extents: &'a [Extent],
    /// Index of the next extent to take.
    next: AtomicUsize,
    /// An extent failed: take no more.
    failed: AtomicBool,
    /// Bytes of the extents finished.
    done: AtomicU64,
    /// Each finished extent's index and outcome, in no particular order.
    outcomes: Mutex<Vec<(usize, Result<T, SyncError>)>>,
}

impl<T> Queue<'_, T> {
    /// Takes and processes extents until none is left or one failed, calling
    /// `finished` with the bytes done so far after each of its own.
    fn work_through<W>(&self, work: &W, mut finished: impl FnMut(u64))
    where
        W: Fn(Extent, &mut [u8]) -> Result<T, SyncError>,
    {
        let mut buffer = Vec::new();
        let mut mine = Vec::new();
        // Relaxed: the counter only hands out distinct indices, and the flag
        // only stops work early; results travel through the mutex, and the
        // scope's end orders everything before the caller reads them.
        while !self.failed.load(Ordering::Relaxed) {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&extent) = self.extents.get(index) else {
                break;
            };
            if buffer.len() < extent.len {
                // Allocated zeroed (calloc), once per worker.
                buffer = vec![0u8; CHUNK.max(extent.len)];
            }
            let outcome = work(extent, &mut buffer[..extent.len]);
            if outcome.is_err() {
                self.failed.store(true, Ordering::Relaxed);
            }
            mine.push((index, outcome));
            let len = extent.len as u64;
            finished(self.done.fetch_add(len, Ordering::Relaxed) + len);
        }
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(mine);
    }
}

/// The extents below the fault offset, and the offset when the fault fires
/// (some work lies at or past it).
fn cut_at_fault(extents: &[Extent], fault: FaultPlan) -> (Vec<Extent>, Option<u64>) {
    let Some(at) = fault.fail_at_offset else {
        return (extents.to_vec(), None);
    };
    let limit = at / BLOCK as u64 * BLOCK as u64;
    let mut kept = Vec::with_capacity(extents.len());
    let mut fires = false;
    for &extent in extents {
        if extent.end() <= limit {
            kept.push(extent);
        } else {
            fires = true;
            if extent.offset < limit {
                kept.push(Extent {
                    offset: extent.offset,
                    len: (limit - extent.offset) as usize,
                });
            }
        }
    }
    (kept, fires.then_some(limit))
}
