//! `lab init`: a world in which every VM of a plan failed over, was
//! committed, and runs in the recovery site, with a stale copy of each disk
//! on the primary side.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::store::{Lab, create_world, sync_dir};
use super::world::{
    LabDisk, LabHost, LabVm, LabWorld, NetworkAttachment, PrimarySite, PrimaryVm, Protection,
    RecoverySite, RecoveryVm, Site, VmFaults, WORLD_FILE, WORLD_VERSION, now_ms, rfc3339,
    vm_dir_name,
};
use super::{LabError, write_at};
use crate::plan::FailbackPlan;
use crate::provider::Lifecycle;
use crate::sync::BLOCK;

/// The options of `failback lab init` (lab.md); `Default` gives the
/// documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct InitOptions {
    /// Bytes per disk.
    pub disk_size: u64,
    /// Disks per VM.
    pub disks: u32,
    /// Share (0 to 100) of the 4 KiB blocks of each primary disk that differ
    /// from the recovery disk.
    pub drift_percent: f64,
    /// VMs without a primary-side VM (deleted on-premises).
    pub missing: Vec<String>,
    pub days_in_recovery: u32,
    /// Delay added to every simulated site operation.
    pub latency_ms: u64,
    /// Everything random in the world follows it.
    pub seed: u64,
    /// Replace an existing world.
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            disk_size: 64 * 1024 * 1024,
            disks: 1,
            drift_percent: 5.0,
            missing: Vec::new(),
            days_in_recovery: 3,
            latency_ms: 0,
            seed: 0,
            force: false,
        }
    }
}

/// At most this many disks per VM.
pub const MAX_DISKS: u32 = 64;

/// Share of each recovery disk that holds data; the rest stays a hole.
const DATA_SHARE: u64 = 4; // one region in four
/// Data is laid out in regions of this many bytes, written in one call each.
const REGION: u64 = 256 * 1024;

/// Parses a disk size: a number of bytes with an optional binary unit
/// (`KiB`, `MiB`, `GiB`, `TiB`; `K`, `M`, `G`, `T` alike; `B`), such as `64MiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 64MiB, 512KiB or 1GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            return Err(format!(
                "unknown unit '{}' in '{text}': use KiB, MiB, GiB or TiB",
                unit.trim()
            ));
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Creates the lab world in `dir` for every VM of `plan` (see lab.md):
/// failed over, committed, running in the recovery site; its primary-side
/// VM powered off on the plan's host with a stale copy of each disk, unless
/// listed in `opts.missing`.
///
/// Guarantees: `world.json` is written last, atomically, so an interrupted
/// init leaves no world (and the next init starts over). With `opts.force`
/// an existing world is removed first (its world file, then its disks; its
/// journals just before the new world is written).
///
/// Errors: a world exists and `opts.force` is not set; an option is out of
/// range or names a VM the plan lacks; the directory cannot be written.
pub fn init(dir: &Path, plan: &FailbackPlan, opts: &InitOptions) -> Result<(), LabError> {
    check_options(plan, opts)?;
    fs::create_dir_all(dir).map_err(LabError::io("creating the directory", dir))?;
    let dir = fs::canonicalize(dir).map_err(LabError::io("resolving", dir))?;
    let lab = Lab::at(dir.clone());
    let _lock = lab.lock_file(true)?;

    let world_path = lab.world_path();
    if world_path.exists() {
        if !opts.force {
            return Err(LabError::AlreadyExists { dir });
        }
        fs::remove_file(&world_path).map_err(LabError::io("removing", &world_path))?;
        sync_dir(&dir)?;
    }
    let disks_dir = lab.disks_dir();
    if disks_dir.exists() {
        fs::remove_dir_all(&disks_dir).map_err(LabError::io("removing", &disks_dir))?;
    }

    let (world, jobs) = build(&lab, plan, opts);
    jobs.par_iter()
        .map(make_disk)
        .collect::<Result<Vec<()>, LabError>>()?;
    for dir in jobs
        .iter()
        .flat_map(|j| {
            [
                j.recovery.parent(),
                j.primary.as_deref().and_then(Path::parent),
            ]
        })
        .flatten()
    {
        sync_dir(dir)?;
    }

    let events = lab.events_path();
    let first = serde_json::json!({
        "version": 1,
        "event": "lab-init",
        "time": rfc3339(now_ms()),
        "plan": plan.metadata.name.to_string(),
        "vms": world.vms.len(),
    });
    fs::write(&events, format!("{first}\n")).map_err(LabError::io("writing", &events))?;
    create_world(&lab, &world)?;
    tracing::info!(lab = %dir.display(), file = WORLD_FILE, vms = world.vms.len(), "lab world created");
    Ok(())
}

fn check_options(plan: &FailbackPlan, opts: &InitOptions) -> Result<(), LabError> {
    if opts.disk_size == 0 {
        return Err(LabError::InvalidOption(
            "--disk-size must be more than 0 bytes".into(),
        ));
    }
    if opts.disks == 0 || opts.disks > MAX_DISKS {
        return Err(LabError::InvalidOption(format!(
            "--disks must be between 1 and {MAX_DISKS}, not {}",
            opts.disks
        )));
    }
    if !(0.0..=100.0).contains(&opts.drift_percent) {
        return Err(LabError::InvalidOption(format!(
            "--drift must be a percentage between 0 and 100, not {}",
            opts.drift_percent
        )));
    }
    for name in &opts.missing {
        if !plan.vms().any(|(_, vm)| vm.name.as_str() == name) {
            let known: Vec<&str> = plan.vms().map(|(_, vm)| vm.name.as_str()).collect();
            return Err(LabError::InvalidOption(format!(
                "--missing '{name}' is not a VM of plan '{}' (its VMs: {})",
                plan.metadata.name,
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// One disk to create: the recovery image and, unless the VM is missing,
/// its stale primary copy.
struct DiskJob {
    recovery: PathBuf,
    primary: Option<PathBuf>,
    size: u64,
    drift_percent: f64,
    seed: [u8; 32],
}

fn build(lab: &Lab, plan: &FailbackPlan, opts: &InitOptions) -> (LabWorld, Vec<DiskJob>) {
    let hosts = plan
        .spec
        .primary
        .hosts
        .iter()
        .map(|h| LabHost {
            name: h.name.to_string(),
            connected: true,
            vswitches: h.vswitches.iter().map(|v| v.to_string()).collect(),
            removed_vswitches: Vec::new(),
        })
        .collect();
    let mut vms = Vec::new();
    let mut jobs = Vec::new();
    for (_, vm) in plan.vms() {
        let name = vm.name.to_string();
        let dir = vm_dir_name(&name);
        let missing = opts.missing.contains(&name);
        let networks: Vec<NetworkAttachment> = vm
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| NetworkAttachment {
                adapter: n.adapter.clone().unwrap_or_else(|| format!("nic{i}")),
                vswitch: n.vswitch.to_string(),
            })
            .collect();
        let disk = |side: &str, i: u32| LabDisk {
            name: format!("disk{i}"),
            path: lab.disk_path(&dir, side, &format!("disk{i}")),
            size: opts.disk_size,
        };
        let recovery_disks: Vec<LabDisk> = (0..opts.disks).map(|i| disk("recovery", i)).collect();
        let primary_disks: Vec<LabDisk> = if missing {
            Vec::new()
        } else {
            (0..opts.disks).map(|i| disk("primary", i)).collect()
        };
        for (i, recovery) in recovery_disks.iter().enumerate() {
            jobs.push(DiskJob {
                recovery: recovery.path.clone(),
                primary: primary_disks.get(i).map(|d| d.path.clone()),
                size: opts.disk_size,
                drift_percent: opts.drift_percent,
                seed: disk_seed(opts.seed, &name, &recovery.name),
            });
        }
        vms.push(LabVm {
            name,
            dir,
            state: Lifecycle::RunningInRecovery,
            active: Site::Recovery,
            recovery: RecoveryVm {
                exists: true,
                running: true,
                disks: recovery_disks,
            },
            primary: PrimaryVm {
                exists: !missing,
                host: (!missing).then(|| vm.host.to_string()),
                running: false,
                networks: if missing {
                    Vec::new()
                } else {
                    networks.clone()
                },
                disks: primary_disks,
            },
            protection: Protection::None,
            days_in_recovery: opts.days_in_recovery,
            downtime_ms: None,
            networks,
            failover_committed: true,
            has_recovery_point: true,
            sync_mode: None,
            change_tracking: false,
            shutdown_at_ms: None,
            shutdown_digests: BTreeMap::new(),
            verifications: BTreeMap::new(),
            phase_one: BTreeMap::new(),
            commit_started: false,
            replica: None,
            faults: VmFaults::default(),
        });
    }
    let world = LabWorld {
        version: WORLD_VERSION,
        primary: PrimarySite {
            site: plan.spec.primary.site.to_string(),
            connected: true,
            hosts,
        },
        recovery: RecoverySite {
            site: plan.spec.recovery.site.to_string(),
        },
        vms,
        latency_ms: opts.latency_ms,
        seed: opts.seed,
        journal: 0,
        guest_writes: 0,
    };
    (world, jobs)
}

/// The seed of one disk's content: a function of the world seed, the VM and
/// the disk only, so that disks can be made in parallel, in any order.
fn disk_seed(seed: u64, vm: &str, disk: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("failback lab disk content v1");
    hasher.update(&seed.to_le_bytes());
    hasher.update(vm.as_bytes());
    hasher.update(&[0]);
    hasher.update(disk.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Creates an empty (all-hole) image of `size` bytes, replacing any file.
pub(crate) fn create_sparse(path: &Path, size: u64) -> Result<File, LabError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(LabError::io("creating the directory", parent))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(LabError::io("creating", path))?;
    file.set_len(size).map_err(LabError::io("sizing", path))?;
    Ok(file)
}

/// Writes one disk pair: random data over a quarter of the recovery image
/// (in [`REGION`]-sized writes, the rest a hole), the same on the primary
/// copy, then `drift_percent` of the primary's blocks overwritten with other
/// random bytes.
///
/// The bytes come from a BLAKE3 output stream (fast even in debug builds,
/// where a generic RNG would be compiled unoptimised), positions from a
/// seeded ChaCha RNG. The images' data is not fsynced: the lab never trusts
/// an image's bytes without hashing them, so a power cut that loses some of
/// them only changes the arbitrary content of a fresh lab. Their directory
/// entries are fsynced by the caller, and `world.json` is written last.
fn make_disk(job: &DiskJob) -> Result<(), LabError> {
    let mut rng = ChaCha8Rng::from_seed(job.seed);
    let mut bytes = blake3::Hasher::new_derive_key("failback lab disk bytes v1")
        .update(&job.seed)
        .finalize_xof();
    let recovery = create_sparse(&job.recovery, job.size)?;
    let primary = match &job.primary {
        Some(path) => Some((create_sparse(path, job.size)?, path)),
        None => None,
    };

    let regions = job.size.div_ceil(REGION);
    let with_data = regions.div_ceil(DATA_SHARE);
    let mut chosen = sample(&mut rng, regions, with_data);
    chosen.sort_unstable();
    let mut buf = vec![0u8; REGION as usize];
    for region in chosen {
        let offset = region * REGION;
        let len = (job.size - offset).min(REGION) as usize;
        let data = &mut buf[..len];
        bytes.fill(data);
        write_at(&recovery, &job.recovery, data, offset)?;
        if let Some((file, path)) = &primary {
            write_at(file, path, data, offset)?;
        }
    }

    if let Some((file, path)) = &primary {
        let blocks = job.size.div_ceil(BLOCK as u64);
        let drifted = ((blocks as f64) * job.drift_percent / 100.0).round() as u64;
        let mut drift = sample(&mut rng, blocks, drifted.min(blocks));
        drift.sort_unstable();
        let mut block = [0u8; BLOCK];
        for b in drift {
            let offset = b * BLOCK as u64;
            let len = (job.size - offset).min(BLOCK as u64) as usize;
            bytes.fill(&mut block[..len]);
            write_at(file, path, &block[..len], offset)?;
        }
    }
    Ok(())
}

/// `amount` distinct indices below `length` (clamped: never panics).
fn sample(rng: &mut ChaCha8Rng, length: u64, amount: u64) -> Vec<u64> {
    let (Ok(length), Ok(amount)) = (usize::try_from(length), usize::try_from(amount)) else {
        return Vec::new();
    };
    index::sample(rng, length, amount.min(length))
        .into_iter()
        .map(|i| i as u64)
        .collect()
}
