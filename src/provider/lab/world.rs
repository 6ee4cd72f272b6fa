//! The lab world's model (`LabWorld`, as `world.json` and `lab show
//! --format json` hold it) and the names of the lab's files; `store.rs`
//! reads and saves it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::LabError;
use crate::plan::SyncMode;
use crate::provider::Lifecycle;
use crate::sync::FileStamp;

/// The world file, in the lab directory (continued by its journal: see
/// `store.rs`).
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
    /// The number of the journal that continues `world.json` (the lab's
    /// store, see `store.rs`); 0 and absent in `lab show`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

impl PrimarySite {
    pub fn host_mut(&mut self, name: &str) -> Result<&mut LabHost, LabError> {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::UnknownHost {
                host: name.to_owned(),
            })
    }
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

    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.primary.hosts.iter().find(|h| h.name == name)
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
