//! The loop every operation shares: cut the work into extents, process a
//! window of extents in parallel (one buffer per extent, reused), report
//! progress between windows on the calling thread, and stop at an injected
//! fault.

use std::path::Path;

use rayon::prelude::*;

use super::{BLOCK, CHUNK, FaultPlan, PROGRESS_STEP, ProgressFn, SyncError};

/// At most this many extents (and buffers of [`CHUNK`] bytes) are in flight.
const MAX_WINDOW: usize = 16;

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
/// Guarantees: progress goes from 0 to the total bytes of `extents`; the first
/// error (in extent order) of a window is returned once the window is done,
/// and no later window starts. With a fault plan, only the parts of extents
/// below the fault offset (rounded down to a block) are processed, then
/// [`SyncError::InjectedFault`] is returned.
pub(crate) fn run_extents<T, W>(extents: &[Extent], run: &Run, work: W) -> Result<Vec<T>, SyncError>
where
    T: Send,
    W: Fn(Extent, &mut [u8]) -> Result<T, SyncError> + Sync,
{
    let total: u64 = extents.iter().map(|e| e.len as u64).sum();
    let (extents, fault) = cut_at_fault(extents, run.fault);
    let width = rayon::current_num_threads()
        .clamp(1, MAX_WINDOW)
        .min(extents.len());
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); width];
    let mut results = Vec::with_capacity(extents.len());
    let (mut done, mut reported) = (0u64, 0u64);

    for window in extents.chunks(width.max(1)) {
        let outcomes: Vec<Result<T, SyncError>> = window
            .par_iter()
            .zip(buffers.par_iter_mut())
            .map(|(&extent, buffer)| {
                if buffer.len() < extent.len {
                    // Allocated zeroed (calloc), once per buffer.
                    *buffer = vec![0u8; CHUNK.max(extent.len)];
                }
                work(extent, &mut buffer[..extent.len])
            })
            .collect();
        for outcome in outcomes {
            results.push(outcome?);
        }
        done += window.iter().map(|e| e.len as u64).sum::<u64>();
        if let Some(progress) = run.progress
            && done - reported >= PROGRESS_STEP
        {
            progress(done, total);
            reported = done;
        }
    }
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
