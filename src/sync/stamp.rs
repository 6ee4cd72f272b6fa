//! A file's identity and modification stamp: the evidence that a file was
//! not written between two moments, so that digests taken at the first still
//! describe it at the second without reading it again.

use std::fs::Metadata;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::SyncError;

/// What the file system says about a file that any write would change: its
/// identity (device, inode), length, modification and status-change times.
///
/// Guarantees: two stamps of one path are equal only if the path names the
/// same file, of the same length, whose times did not move in between.
///
/// Assumptions: every write to the file goes through the kernel, which
/// updates its modification time, and the clock does not go backwards. Linux
/// 6.13 and later make a write after a stamp always move the time
/// ("multigrain" timestamps on ext4, xfs, btrfs, tmpfs); older kernels update
/// it at clock-tick granularity, so a foreign write in the same tick as the
/// stamp could go unseen, which [`FileStamp::settled`] rules out by waiting
/// for the tick to pass. Callers take a stamp only of files nothing but
/// themselves writes (a primary disk while its VM is off) and treat a
/// different stamp as "read the file again", never as an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// Status-change time, nanoseconds since the Unix epoch (0 where the
    /// platform has none).
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of the file at `path` now (symbolic links followed).
    ///
    /// Errors: the file's metadata cannot be read.
    pub fn of(path: &Path) -> Result<Self, SyncError> {
        let meta = std::fs::metadata(path).map_err(|source| SyncError::Metadata {
            path: path.into(),
            source,
        })?;
        Ok(Self::from_metadata(&meta))
    }

    /// The stamp described by `meta`.
    pub fn from_metadata(meta: &Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        let (dev, ino, ctime_ns) = identity(meta);
        FileStamp {
            dev,
            ino,
            len: meta.len(),
            mtime_ns,
            ctime_ns,
        }
    }

    /// The stamp of the file at `path`, taken once its modification time is
    /// at least [`settle_time`] in the past, so that any later write falls in a
    /// later clock tick and moves it even where the kernel's timestamps are
    /// coarse: waits at most that long after the last write. Use it for
    /// stamps that will vouch for digests later.
    ///
    /// Errors: the file's metadata cannot be read.
    pub fn settled(path: &Path) -> Result<Self, SyncError> {
        loop {
            let stamp = FileStamp::of(path)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
            let age = now.saturating_sub(stamp.mtime_ns.max(stamp.ctime_ns));
            let settle = i128::try_from(settle_time().as_nanos()).unwrap_or(i128::MAX);
            if age >= settle {
                return Ok(stamp);
            }
            let wait = u64::try_from(settle - age.max(0)).unwrap_or(0);
            std::thread::sleep(Duration::from_nanos(wait));
        }
    }

    /// Whether the file at `path` still has this stamp; a file that cannot
    /// be examined has not.
    pub fn is_current(&self, path: &Path) -> bool {
        FileStamp::of(path).is_ok_and(|now| now == *self)
    }
}

/// How long a file's modification time can lag behind a write: one tick of
/// the kernel's coarse clock (what file timestamps are read from), plus a
/// millisecond. On Linux it is asked of the kernel once (4 ms ticks give
/// 5 ms); elsewhere it assumes the slowest common tick, 10 ms.
pub fn settle_time() -> Duration {
    static SETTLE: OnceLock<Duration> = OnceLock::new();
    *SETTLE.get_or_init(|| {
        let tick = coarse_tick().unwrap_or(Duration::from_millis(10));
        (tick + Duration::from_millis(1)).clamp(Duration::from_millis(1), Duration::from_millis(20))
    })
}

#[cfg(target_os = "linux")]
fn coarse_tick() -> Option<Duration> {
    use rustix::time::{ClockId, clock_getres};
    let res = clock_getres(ClockId::RealtimeCoarse);
    let secs = u64::try_from(res.tv_sec).ok()?;
    let nanos = u32::try_from(res.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(not(target_os = "linux"))]
fn coarse_tick() -> Option<Duration> {
    None
}

#[cfg(unix)]
fn identity(meta: &Metadata) -> (u64, u64, i128) {
    use std::os::unix::fs::MetadataExt;
    let ctime = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    (meta.dev(), meta.ino(), ctime)
}

#[cfg(not(unix))]
fn identity(_: &Metadata) -> (u64, u64, i128) {
    (0, 0, 0)
}
