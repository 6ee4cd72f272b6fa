//! The lab world on disk: `world.json` (its model, reading, atomic and
//! durable replacement), the `world.lock` that serialises read-modify-write
//! cycles between processes, `events.jsonl`, and where disk images live.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::LabError;
use crate::plan::SyncMode;
use crate::provider::Lifecycle;
use crate::sync::FileStamp;

/// The world file, in the lab directory.
pub const WORLD_FILE: &str = "world.json";
/// Locked exclusively for each read-modify-write of the world.
pub const LOCK_FILE: &str = "world.lock";
/// Append-only log of shutdowns, verifications, power-ons and commits.
pub const EVENTS_FILE: &str = "events.jsonl";
/// Disk images, one directory per VM.
pub const DISKS_DIR: &str = "disks";
/// The format version of `world.json` (and of `lab show --format json`).
pub const WORLD_VERSION: u32 = 1;

/// The whole lab world, as stored in `world.json` and printed by
/// `lab show --format json` (lab.md gives the fields that must exist).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabWorld {
    pub version: u32,
    pub primary: PrimarySite,
    pub recovery: RecoverySite,
    pub vms: Vec<LabVm>,
    /// Delay added to every simulated site operation.
    #[serde(default)]
    pub latency_ms: u64,
    /// The `--seed` the world was made with.
    #[serde(default)]
    pub seed: u64,
    /// `lab write` calls without `--seed` so far: each draws fresh blocks.
    #[serde(default)]
    pub guest_writes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrimarySite {
    pub site: String,
    pub connected: bool,
    pub hosts: Vec<LabHost>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySite {
    pub site: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabHost {
    pub name: String,
    pub connected: bool,
    pub vswitches: Vec<String>,
    /// vSwitches removed by `lab fault remove-vswitch`, restored by `clear`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_vswitches: Vec<String>,
}

/// Which site runs the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Site {
    Recovery,
    Primary,
}

/// The replication direction of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    None,
    PrimaryToRecovery,
}

impl Site {
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Recovery => "recovery",
            Site::Primary => "primary",
        }
    }
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::None => "none",
            Protection::PrimaryToRecovery => "primary-to-recovery",
        }
    }
}

/// One VM of the lab, both sides of it, and the bookkeeping of its failback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabVm {
    pub name: String,
    /// The VM's directory under `disks/` (a file-system-safe form of its name).
    pub dir: String,
    pub state: Lifecycle,
    pub active: Site,
    pub recovery: RecoveryVm,
    pub primary: PrimaryVm,
    pub protection: Protection,
    pub days_in_recovery: u32,
    /// From recovery VM off to primary VM running, for the last failback.
    pub downtime_ms: Option<u64>,
    /// The VM's network adapters: given to its primary-side VM when a
    /// failback creates one.
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// The earlier failover to the recovery site was committed.
    #[serde(default)]
    pub failover_committed: bool,
    /// The VM has replicated data (a recovery point).
    #[serde(default)]
    pub has_recovery_point: bool,
    /// The sync mode of the failback in progress (until commit).
    #[serde(default)]
    pub sync_mode: Option<SyncMode>,
    /// Guest writes to the recovery disks are recorded in their change maps.
    #[serde(default)]
    pub change_tracking: bool,
    /// When the recovery VM was confirmed off (Unix ms).
    #[serde(default)]
    pub shutdown_at_ms: Option<u64>,
    /// Image digest of each recovery disk as it was at shutdown, by disk name.
    #[serde(default)]
    pub shutdown_digests: BTreeMap<String, String>,
    /// The last verification of each primary disk, by disk name.
    #[serde(default)]
    pub verifications: BTreeMap<String, VerificationRecord>,
    /// What delta phase 1 of the failback in progress left on each primary
    /// disk, by disk name: the evidence that lets phase 2 verify by reading
    /// only the changed blocks. Cleared when a failback begins.
    #[serde(default)]
    pub phase_one: BTreeMap<String, PhaseOneRecord>,
    /// Commit started deleting the recovery copy.
    #[serde(default)]
    pub commit_started: bool,
    /// The recovery-side replica made by reverse replication.
    #[serde(default)]
    pub replica: Option<Replica>,
    #[serde(default)]
    pub faults: VmFaults,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryVm {
    pub exists: bool,
    pub running: bool,
    pub disks: Vec<LabDisk>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryVm {
    pub exists: bool,
    pub host: Option<String>,
    pub running: bool,
    pub networks: Vec<NetworkAttachment>,
    pub disks: Vec<LabDisk>,
}

/// A disk image: a raw, sparse file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabDisk {
    pub name: String,
    /// Absolute path of the image.
    pub path: PathBuf,
    pub size: u64,
}

impl LabDisk {
    /// The change map recorded for this disk (beside the image).
    pub fn change_map_path(&self) -> PathBuf {
        self.path.with_extension("changes")
    }

    /// The block digests phase 1 left on this (primary) disk, beside it.
    pub fn digests_path(&self) -> PathBuf {
        self.path.with_extension("digests")
    }
}

/// What one delta phase 1 left on a primary disk: its block digests are in
/// [`LabDisk::digests_path`], with this image digest, and the disk had this
/// stamp when the sync returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseOneRecord {
    pub digest: String,
    pub stamp: FileStamp,
    /// The stamp of the digests file once written: a file with another
    /// stamp (each save is a new file) is not this phase 1's.
    pub digests_stamp: FileStamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachment {
    pub adapter: String,
    pub vswitch: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRecord {
    /// Image digest of the recovery disk recorded at shutdown.
    pub shutdown_digest: String,
    /// Image digest read from the primary disk.
    pub primary_digest: String,
    pub equal: bool,
    pub at_ms: u64,
    /// The primary disk's stamp when the digest above was read from it:
    /// while the disk keeps it, nothing wrote it since.
    #[serde(default)]
    pub primary_stamp: Option<FileStamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    pub disks: Vec<LabDisk>,
    /// The initial copy finished.
    pub synced: bool,
}

/// Faults injected into one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFaults {
    /// The recovery VM never confirms it is off.
    #[serde(default)]
    pub stuck_shutdown: bool,
}

impl LabWorld {
    pub fn vm(&self, name: &str) -> Result<&LabVm, LabError> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::UnknownVm {
                vm: name.to_owned(),
            })
    }

    pub fn vm_mut(&mut self, name: &str) -> Result<&mut LabVm, LabError> {
        self.vms
            .iter_mut()
            .find(|v| v.name == name)
            .ok_or_else(|| LabError::UnknownVm {
                vm: name.to_owned(),
            })
    }

    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.primary.hosts.iter().find(|h| h.name == name)
    }

    pub fn host_mut(&mut self, name: &str) -> Result<&mut LabHost, LabError> {
        self.primary
            .hosts
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost {
                host: name.to_owned(),
            })
    }

    /// Fails unless the primary site and `host` are connected.
    pub fn require_reachable(&self, host: &str) -> Result<(), LabError> {
        if !self.primary.connected {
            return Err(LabError::Disconnected {
                what: format!("the primary site '{}'", self.primary.site),
            });
        }
        match self.host(host) {
            None => Err(LabError::UnknownHost {
                host: host.to_owned(),
            }),
            Some(h) if !h.connected => Err(LabError::Disconnected {
                what: format!("host '{host}'"),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// A lab directory (absolute). Cheap to share between threads.
#[derive(Clone, Debug)]
pub(crate) struct Lab {
    dir: PathBuf,
}

impl Lab {
    /// The lab in `dir`, which must hold a world.
    pub(crate) fn open(dir: &Path) -> Result<Lab, LabError> {
        if !dir.join(WORLD_FILE).is_file() {
            return Err(LabError::NoWorld {
                dir: dir.to_path_buf(),
            });
        }
        let dir = fs::canonicalize(dir).map_err(LabError::io("resolving", dir))?;
        let lab = Lab { dir };
        lab.read()?;
        Ok(lab)
    }

    /// A lab in `dir` (absolute), which may not hold a world yet.
    pub(crate) fn at(dir: PathBuf) -> Lab {
        Lab { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn world_path(&self) -> PathBuf {
        self.dir.join(WORLD_FILE)
    }

    pub(crate) fn events_path(&self) -> PathBuf {
        self.dir.join(EVENTS_FILE)
    }

    pub(crate) fn disks_dir(&self) -> PathBuf {
        self.dir.join(DISKS_DIR)
    }

    /// Where disk `disk` of the VM stored in `vm_dir` lives on `side`
    /// (`recovery`, `primary` or `replica`).
    pub(crate) fn disk_path(&self, vm_dir: &str, side: &str, disk: &str) -> PathBuf {
        self.disks_dir()
            .join(vm_dir)
            .join(side)
            .join(format!("{disk}.img"))
    }

    /// Reads the world without the lock: writers replace `world.json` by an
    /// atomic rename, so a reader sees a whole world, old or new.
    pub(crate) fn read(&self) -> Result<LabWorld, LabError> {
        let path = self.world_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NoWorld {
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(LabError::io("reading", &path)(e)),
        };
        let world: LabWorld =
            serde_json::from_slice(&bytes).map_err(|source| LabError::Corrupt {
                path: path.clone(),
                source,
            })?;
        self.check(&path, &world)?;
        Ok(world)
    }

    /// Refuses a world this build cannot use, or one whose disk paths lie
    /// outside the lab's `disks/` directory (the lab writes and deletes them).
    fn check(&self, path: &Path, world: &LabWorld) -> Result<(), LabError> {
        let invalid = |reason: String| LabError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if world.version != WORLD_VERSION {
            return Err(invalid(format!(
                "its version is {}, this build reads version {WORLD_VERSION}",
                world.version
            )));
        }
        let disks_dir = self.disks_dir();
        for vm in &world.vms {
            let replica = vm.replica.iter().flat_map(|r| &r.disks);
            for disk in vm
                .recovery
                .disks
                .iter()
                .chain(&vm.primary.disks)
                .chain(replica)
            {
                let inside = disk.path.starts_with(&disks_dir)
                    && !disk
                        .path
                        .components()
                        .any(|c| matches!(c, Component::ParentDir));
                if !inside {
                    return Err(invalid(format!(
                        "disk '{}' of VM '{}' is at {}, outside {}",
                        disk.name,
                        vm.name,
                        disk.path.display(),
                        disks_dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Takes the world lock (blocking until other processes release it).
    pub(crate) fn lock_file(&self) -> Result<File, LabError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LabError::io("opening the lock", &path))?;
        file.lock().map_err(LabError::io("locking", &path))?;
        Ok(file)
    }

    /// Takes the world lock and reads the world: the start of every
    /// read-modify-write. The lock is released when the result is dropped.
    pub(crate) fn lock(&self) -> Result<Locked<'_>, LabError> {
        let lock = self.lock_file()?;
        let world = self.read()?;
        Ok(Locked {
            lab: self,
            _lock: lock,
            world,
        })
    }
}

/// The world, read under the lock; [`Locked::save`] persists changes.
pub(crate) struct Locked<'a> {
    lab: &'a Lab,
    _lock: File,
    pub(crate) world: LabWorld,
}

impl Locked<'_> {
    /// Replaces `world.json` atomically and durably.
    pub(crate) fn save(&self) -> Result<(), LabError> {
        save_world(self.lab, &self.world)
    }

    /// Appends one record to `events.jsonl` (under the lock, so records of
    /// concurrent processes never interleave), durably.
    pub(crate) fn append_event(&self, record: &serde_json::Value) -> Result<(), LabError> {
        append_event(self.lab, record)
    }
}

/// Writes `world` to `world.json`: temporary file, fsync, rename, fsync of
/// the directory. A crash leaves the old world or the new one.
pub(crate) fn save_world(lab: &Lab, world: &LabWorld) -> Result<(), LabError> {
    let path = lab.world_path();
    let mut bytes = serde_json::to_vec_pretty(world).map_err(|source| LabError::Corrupt {
        path: path.clone(),
        source,
    })?;
    bytes.push(b'\n');
    atomic_write(&path, &bytes)
}

/// Test-only fault point (debug builds only; release builds ignore it):
/// `FAILBACK_TEST_FAIL_WORLD_WRITE=N` makes the N-th world write of the
/// process fail as a full disk would (ENOSPC while writing the temporary
/// file). Never set it otherwise.
pub const TEST_FAIL_WORLD_WRITE_ENV: &str = "FAILBACK_TEST_FAIL_WORLD_WRITE";
/// Test-only fault point (debug builds only): `FAILBACK_TEST_FAIL_WORLD_FSYNC=N`
/// makes the fsync of the N-th world write's temporary file fail with EIO.
pub const TEST_FAIL_WORLD_FSYNC_ENV: &str = "FAILBACK_TEST_FAIL_WORLD_FSYNC";
/// Test-only crash point (debug builds only): `FAILBACK_TEST_ABORT_AT_WORLD_WRITE=N`
/// aborts the process (as `kill -9` would) at the N-th world write, after
/// its temporary file is written and fsynced and before the rename;
/// `N:after-rename` aborts once the new world is in place instead.
pub const TEST_ABORT_AT_WORLD_WRITE_ENV: &str = "FAILBACK_TEST_ABORT_AT_WORLD_WRITE";

/// What a test fault point does to one world write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFault {
    None,
    Enospc,
    FsyncEio,
    AbortBeforeRename,
    AbortAfterRename,
}

/// The fault, if any, the test hooks put on the `n`-th (1-based) world
/// write of this process. Always `None` in release builds.
fn write_fault(n: u64) -> WriteFault {
    if !cfg!(debug_assertions) {
        return WriteFault::None;
    }
    let at = |var: &str| -> Option<(u64, String)> {
        let text = std::env::var(var).ok()?;
        let (count, suffix) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
        Some((count.parse().ok()?, suffix.to_owned()))
    };
    if at(TEST_FAIL_WORLD_WRITE_ENV).is_some_and(|(at, _)| at == n) {
        return WriteFault::Enospc;
    }
    if at(TEST_FAIL_WORLD_FSYNC_ENV).is_some_and(|(at, _)| at == n) {
        return WriteFault::FsyncEio;
    }
    match at(TEST_ABORT_AT_WORLD_WRITE_ENV) {
        Some((at, suffix)) if at == n && suffix == "after-rename" => WriteFault::AbortAfterRename,
        Some((at, _)) if at == n => WriteFault::AbortBeforeRename,
        _ => WriteFault::None,
    }
}

fn injected(kind: std::io::ErrorKind, what: &str, var: &str) -> std::io::Error {
    std::io::Error::new(kind, format!("{what} (injected by {var})"))
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let fault = write_fault(n + 1);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let written = File::create(&tmp).and_then(|mut file| {
        if fault == WriteFault::Enospc {
            return Err(injected(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
                TEST_FAIL_WORLD_WRITE_ENV,
            ));
        }
        file.write_all(bytes)?;
        if fault == WriteFault::FsyncEio {
            return Err(injected(
                std::io::ErrorKind::Other,
                "input/output error on fsync",
                TEST_FAIL_WORLD_FSYNC_ENV,
            ));
        }
        file.sync_all()
    });
    if let Err(e) = written {
        // Best effort: the write error is the one worth reporting. After a
        // failed fsync the temporary file is abandoned, never fsynced again
        // (its pages may already be lost); the old world stays in place.
        let _ = fs::remove_file(&tmp);
        return Err(LabError::WorldWrite {
            path: path.to_path_buf(),
            tmp,
            source: e,
        });
    }
    if fault == WriteFault::AbortBeforeRename {
        std::process::abort();
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(LabError::io("replacing", path)(e));
    }
    sync_dir(dir)?;
    if fault == WriteFault::AbortAfterRename {
        std::process::abort();
    }
    Ok(())
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LabError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(LabError::io("flushing the directory", dir))
    }
    #[cfg(not(unix))]
    {
        // std cannot fsync a directory here; NTFS journals its entries.
        let _ = dir;
        Ok(())
    }
}

fn append_event(lab: &Lab, record: &serde_json::Value) -> Result<(), LabError> {
    let path = lab.events_path();
    let mut line = record.to_string();
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(line.as_bytes())?;
            file.sync_data()
        })
        .map_err(LabError::io("appending to", &path))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A file-system-safe directory name for a VM: its name with every
/// character outside `[A-Za-z0-9._-]` replaced, cut to 40 characters, and a
/// short hash of the full name (so that names differing only in replaced
/// characters do not collide).
pub(crate) fn vm_dir_name(vm: &str) -> String {
    let safe: String = vm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let safe = safe.trim_start_matches('.');
    let hash = blake3::hash(vm.as_bytes()).to_hex();
    let short = hash.as_str().get(..8).unwrap_or_default();
    if safe.is_empty() {
        format!("vm-{short}")
    } else {
        format!("{safe}-{short}")
    }
}
