//! The lab provider (lab.md): both sites of a failback in one directory, with
//! simulated power state and connectivity and **real** disks, so that a
//! failback can be rehearsed and tested with no Azure and no Hyper-V.
//!
//! # On disk
//!
//! ```text
//! LAB/world.json     the world (LabWorld): sites, hosts, VMs, bookkeeping
//! LAB/world.journal.G  the saves since world.json was written: one line each
//! LAB/world.lock     exclusive for every read-modify-write, shared for reads
//! LAB/events.jsonl   append-only: recovery-off, verified, power-on, commit
//! LAB/disks/<vm-dir>/recovery/disk0.img      raw sparse images (+ disk0.changes, the change map)
//! LAB/disks/<vm-dir>/primary/disk0.img
//! LAB/disks/<vm-dir>/replica/disk0.img       after reverse replication
//! ```
//!
//! `<vm-dir>` is the VM name made file-system-safe plus a short hash of it.
//!
//! # Guarantees
//!
//! - World updates are atomic and durable and serialised between processes
//!   by an exclusive lock on `world.lock`, held for one read-modify-write and
//!   never during a long copy: `lab write` runs while `apply` does. A save
//!   appends the VMs it changed to the world's journal (one checksummed
//!   line, fsynced); a whole new `world.json` (temporary file, fsync,
//!   rename, fsync of the directory) replaces world and journal once the
//!   journal has grown to the world's size. A step costs the same whatever
//!   the number of VMs (see `store.rs`).
//! - Every action re-reads the world under the lock, records its intent
//!   before its effect, and is idempotent (see [`crate::provider`]).
//! - A primary VM is started only by the lab's power-on step, which refuses
//!   unless every primary disk hashes, at that moment, to the image digest
//!   the recovery disk had when the recovery VM was confirmed off, and a
//!   verification record says so. `events.jsonl` logs each verification and
//!   each power-on, so that tests can check this from outside.
//! - Recovery disks are deleted only by commit, from `commit-pending` with
//!   the primary VM running.
//!
//! # Assumptions
//!
//! Only the lab writes the disks (guests through `lab write`); one runner
//! acts on a VM at a time (the plan's run lock).
//!
//! # Test-only hooks
//!
//! Read in debug builds only (release builds ignore them); never set them
//! otherwise. docs/reliability.md shows how the tests use them.
//!
//! - [`TEST_ABORT_ENV`] (`FAILBACK_TEST_ABORT_AT_SYNC_BYTES=N`) aborts the
//!   process inside the first sync that reaches source offset `N`.
//! - [`TEST_ABORT_AT_WORLD_WRITE_ENV`] (`FAILBACK_TEST_ABORT_AT_WORLD_WRITE=N`,
//!   or `N:after-rename`) aborts the process at the N-th world write (a
//!   journal line or a whole new `world.json`) before it takes effect (or
//!   once it is durable).
//! - [`TEST_FAIL_WORLD_WRITE_ENV`] (`FAILBACK_TEST_FAIL_WORLD_WRITE=N`) and
//!   [`TEST_FAIL_WORLD_FSYNC_ENV`] (`FAILBACK_TEST_FAIL_WORLD_FSYNC=N`) make
//!   the N-th world write fail with ENOSPC, or its fsync with EIO.
//! - [`TEST_COMPACT_AT_ENV`] (`FAILBACK_TEST_COMPACT_AT=BYTES`) writes a
//!   whole new world once the journal would pass `BYTES`.
//! - [`TEST_FAIL_DISK_WRITE_ENV`] (`FAILBACK_TEST_FAIL_DISK_WRITE=N`) makes
//!   every disk sync fail with ENOSPC at target offset `N`;
//!   [`TEST_FAIL_DISK_FSYNC_ENV`] (`FAILBACK_TEST_FAIL_DISK_FSYNC=N`) makes
//!   the target fsync of the N-th disk sync fail with EIO.
//! - [`TEST_LOSE_REPLY_ENV`] (`FAILBACK_TEST_LOSE_REPLY=ACTION[:N]`) lets
//!   the N-th successful call of an action take effect, then return a
//!   timeout (a lost reply).

mod actions;
mod error;
mod faults;
mod guest;
mod init;
mod store;
mod world;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use actions::{TEST_ABORT_ENV, TEST_FAIL_DISK_FSYNC_ENV, TEST_FAIL_DISK_WRITE_ENV};
pub use error::LabError;
pub use faults::{Fault, TEST_LOSE_REPLY_ENV, inject_fault};
pub use guest::{DiskWrite, GuestWrite, write_guest_blocks};
pub use init::{InitOptions, MAX_DISKS, init, parse_size};
pub use store::{
    COMPACT_AT, JOURNAL_PREFIX, TEST_ABORT_AT_WORLD_WRITE_ENV, TEST_COMPACT_AT_ENV,
    TEST_FAIL_WORLD_FSYNC_ENV, TEST_FAIL_WORLD_WRITE_ENV,
};
pub use world::{
    DISKS_DIR, EVENTS_FILE, LOCK_FILE, LabDisk, LabHost, LabVm, LabWorld, NetworkAttachment,
    PrimarySite, PrimaryVm, Protection, RecoverySite, RecoveryVm, Replica, Site,
    VerificationRecord, VmFaults, WORLD_FILE, WORLD_VERSION,
};

use store::Lab;

use super::{
    BoxFuture, FailbackRequest, ObservedHost, ObservedVm, ProgressFn, Provider, ProviderError,
    ProviderResult, World,
};
use crate::plan::FailbackPlan;
use crate::provider::Lifecycle;

/// Whether `dir` holds a lab world.
pub fn exists(dir: &Path) -> bool {
    dir.join(WORLD_FILE).is_file()
}

/// The lab world in `dir`, read as it is now (for `lab show`).
///
/// Errors: no world, or a world file that cannot be read or is invalid.
pub fn show(dir: &Path) -> Result<LabWorld, LabError> {
    Lab::open(dir)?.read()
}

/// The lab as a [`Provider`].
#[derive(Clone, Debug)]
pub struct LabProvider {
    lab: Arc<Lab>,
}

impl LabProvider {
    /// Opens the lab world in `dir`.
    ///
    /// Errors: no world there, or one that cannot be read.
    pub fn open(dir: &Path) -> Result<Self, LabError> {
        Ok(LabProvider {
            lab: Arc::new(Lab::open(dir)?),
        })
    }

    /// The lab directory (absolute).
    pub fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// Runs `work` on a blocking thread after the world's simulated latency.
    async fn run<T, F>(&self, work: F) -> ProviderResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Lab) -> Result<T, LabError> + Send + 'static,
    {
        let lab = Arc::clone(&self.lab);
        let latency = blocking(Arc::clone(&lab), |lab| lab.with_world(|w| w.latency_ms)).await?;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        blocking(lab, work).await
    }
}

async fn blocking<T, F>(lab: Arc<Lab>, work: F) -> ProviderResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Lab) -> Result<T, LabError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || work(&lab)).await {
        Ok(result) => result.map_err(ProviderError::from),
        Err(e) => Err(ProviderError::from(LabError::Task(e.to_string()))),
    }
}

impl Provider for LabProvider {
    fn observe<'a>(&'a self, plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>> {
        let names: Vec<String> = plan.vms().map(|(_, vm)| vm.name.to_string()).collect();
        Box::pin(self.run(move |lab| lab.with_vms(&names, observe_world)))
    }

    fn observe_vm<'a>(
        &'a self,
        _plan: &'a FailbackPlan,
        vm: &'a str,
    ) -> BoxFuture<'a, ProviderResult<World>> {
        let names = vec![vm.to_owned()];
        Box::pin(self.run(move |lab| lab.with_vms(&names, observe_world)))
    }

    fn start_failback<'a>(
        &'a self,
        req: &'a FailbackRequest,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        let req = req.clone();
        Box::pin(async move {
            let vm = req.vm.clone();
            let result = self
                .run(move |lab| actions::start_failback(lab, &req, &progress))
                .await;
            faults::lose_reply("start-failback", &vm, result)
        })
    }

    fn complete<'a>(
        &'a self,
        vm: &'a str,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            let name = vm.to_owned();
            let result = self
                .run(move |lab| actions::complete(lab, &name, &progress))
                .await;
            faults::lose_reply("complete", vm, result)
        })
    }

    fn commit<'a>(&'a self, vm: &'a str) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            let name = vm.to_owned();
            let result = self.run(move |lab| actions::commit(lab, &name)).await;
            faults::lose_reply("commit", vm, result)
        })
    }

    fn reverse_replicate<'a>(
        &'a self,
        vm: &'a str,
        progress: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            let name = vm.to_owned();
            let result = self
                .run(move |lab| actions::reverse_replicate(lab, &name, &progress))
                .await;
            faults::lose_reply("reverse-replicate", vm, result)
        })
    }
}

/// The provider's view of `world` for `vms`. vSwitches are unknown (`None`)
/// on a host that cannot be reached.
fn observe_world(world: &LabWorld, vms: Vec<&LabVm>) -> World {
    let hosts = world
        .primary
        .hosts
        .iter()
        .map(|h| {
            let connected = world.primary.connected && h.connected;
            ObservedHost {
                name: h.name.clone(),
                connected,
                vswitches: connected.then(|| h.vswitches.clone()),
            }
        })
        .collect();
    let vms = vms
        .into_iter()
        .map(|vm| ObservedVm {
            name: vm.name.clone(),
            state: vm.state,
            failover_committed: vm.failover_committed,
            has_recovery_point: vm.has_recovery_point,
            recovery_exists: vm.recovery.exists,
            recovery_running: vm.recovery.running,
            primary_exists: vm.primary.exists,
            primary_host: vm.primary.host.clone().filter(|_| vm.primary.exists),
            primary_running: vm.primary.running,
            sync_mode: vm.sync_mode.filter(|_| {
                !matches!(
                    vm.state,
                    Lifecycle::RunningInRecovery | Lifecycle::Committed | Lifecycle::Protected
                )
            }),
            days_in_recovery: vm.days_in_recovery,
            downtime_ms: vm.downtime_ms,
        })
        .collect();
    World {
        primary_connected: world.primary.connected,
        hosts,
        vms,
    }
    .sort()
}

/// Writes all of `buf` at `offset` of `file` (`path` names it in errors).
pub(crate) fn write_at(file: &File, path: &Path, buf: &[u8], offset: u64) -> Result<(), LabError> {
    let failed = |e| LabError::Io {
        what: "writing",
        path: PathBuf::from(path),
        source: e,
    };
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset).map_err(failed)
    }
    #[cfg(windows)]
    {
        let mut written = 0;
        while written < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_write(
                file,
                &buf[written..],
                offset + written as u64,
            )
            .map_err(failed)?;
            if n == 0 {
                return Err(failed(std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
            written += n;
        }
        Ok(())
    }
}
