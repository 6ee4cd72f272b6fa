//! The failback actions of the lab, as blocking functions over a [`Lab`]:
//! each re-reads the world under the lock, records its intent durably before
//! its effect, releases the lock during long copies, and is idempotent.
//!
//! The data path follows `crate::sync`'s protocol, with one simplification
//! that carries the whole proof: the image digest of each recovery disk is
//! recorded once the recovery VM is confirmed off, and the primary VM is
//! started only when each primary disk's image digest equals it (checked
//! again by [`power_on`] itself, under the lock). Change maps only make the
//! final copy short; a missing or damaged one costs a full delta, never data.
//!
//! A delta failback keeps its downtime proportional to the changed bytes:
//! phase 1 leaves each primary disk's block digests beside it, with the
//! disk's [`FileStamp`] ([`PhaseOneRecord`]); at shutdown the recovery
//! disk's digests are phase 1's with the change map's blocks hashed again,
//! and verification reads back only those blocks ([`PhaseTwo`]) while the
//! stamp shows that nothing else wrote the primary disk. Without that evidence (a full sync, a damaged
//! file, a resumed phase 2) every step hashes whole disks, as the proof in
//! `crate::sync` allows either way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::{Lab, Locked, sync_dir};
use super::world::{
    LabDisk, LabVm, PhaseOneRecord, Protection, Replica, Site, VerificationRecord, now_ms, rfc3339,
};
use super::{LabError, init::create_sparse};
use crate::plan::SyncMode;
use crate::provider::{FailbackRequest, Lifecycle, Progress, ProgressFn};
use crate::sync::{
    self, BLOCK, ChangeMap, Digests, FaultPlan, FileStamp, ImageDigest, PhaseTwo, SyncError,
    SyncOptions,
};

/// Test-only crash hook (debug builds only; release builds ignore it): when
/// this environment variable holds a number `N`, every sync the lab runs
/// stops at source offset `N` (rounded down to a block; the blocks below it
/// are written, nothing is fsynced) and the process aborts there, as a crash
/// would. Tests use it to prove that running the failback again completes
/// it. Never set it otherwise.
pub const TEST_ABORT_ENV: &str = "FAILBACK_TEST_ABORT_AT_SYNC_BYTES";

/// Test-only fault point (debug builds only; release builds ignore it):
/// `FAILBACK_TEST_FAIL_DISK_WRITE=N` makes every sync the process runs fail
/// as a disk full at target offset `N` would: the first write reaching it
/// fails with ENOSPC (the blocks before it are written, nothing is fsynced).
/// Never set it otherwise.
pub const TEST_FAIL_DISK_WRITE_ENV: &str = "FAILBACK_TEST_FAIL_DISK_WRITE";

/// Test-only fault point (debug builds only): `FAILBACK_TEST_FAIL_DISK_FSYNC=N`
/// makes the fsync of the target of the N-th sync the process runs (counted
/// from 1) fail with EIO. The target is closed, never fsynced again.
pub const TEST_FAIL_DISK_FSYNC_ENV: &str = "FAILBACK_TEST_FAIL_DISK_FSYNC";

/// `start_failback`: see `Provider::start_failback`.
pub(crate) fn start_failback(
    lab: &Lab,
    req: &FailbackRequest,
    progress: &ProgressFn,
) -> Result<(), LabError> {
    let mode = {
        let mut locked = lab.lock()?;
        let vm = locked.vm(&req.vm)?;
        match vm.state {
            Lifecycle::RunningInRecovery => begin(lab, &mut locked, req)?,
            Lifecycle::Syncing => {
                let mode = vm.sync_mode.unwrap_or(req.sync);
                if mode != req.sync {
                    tracing::warn!(
                        vm = %req.vm,
                        "a {} failback is in progress; continuing it (the request asked for {})",
                        mode_name(mode),
                        mode_name(req.sync)
                    );
                }
                let host = primary_host(vm)?;
                locked.require_reachable(&host)?;
                mode
            }
            // Phase 1 or the whole failback already happened.
            _ => return Ok(()),
        }
    };
    match mode {
        SyncMode::Delta => {
            let records = phase_one(lab, &req.vm, progress)?;
            let mut locked = lab.lock()?;
            let vm = locked.vm_mut(&req.vm)?;
            if vm.state == Lifecycle::Syncing {
                vm.state = Lifecycle::AwaitingCompletion;
                vm.phase_one = records;
                locked.save()?;
            }
            Ok(())
        }
        SyncMode::Full => {
            shut_down(lab, &req.vm, &[Lifecycle::Syncing], Lifecycle::Syncing)?;
            record_shutdown_digests(lab, &req.vm)?;
            full_copy(lab, &req.vm, progress)?;
            verify_disks(lab, &req.vm, progress, &Evidence::new())?;
            power_on(lab, &req.vm)
        }
    }
}

/// Checks the dangerous preconditions again, creates the primary VM if it
/// is missing and allowed, and records the failback (state `syncing`; for
/// delta, change tracking on with empty change maps) before any data moves.
fn begin(lab: &Lab, locked: &mut Locked, req: &FailbackRequest) -> Result<SyncMode, LabError> {
    locked.require_reachable(&req.target_host)?;
    let vm = locked.vm(&req.vm)?;
    let refuse = |reason: String| LabError::Precondition {
        vm: req.vm.clone(),
        reason,
    };
    if !vm.failover_committed {
        return Err(refuse(
            "the failover to the recovery site was not committed".into(),
        ));
    }
    if !vm.has_recovery_point || !vm.recovery.exists || vm.recovery.disks.is_empty() {
        return Err(refuse(
            "it has no recovery point (no replicated disks in the recovery site)".into(),
        ));
    }
    if vm.primary.exists {
        if vm.primary.running {
            return Err(refuse(format!(
                "the primary-side VM is running on host '{}'; turn it off first",
                vm.primary.host.as_deref().unwrap_or("?")
            )));
        }
        if vm.primary.host.as_deref() != Some(req.target_host.as_str()) {
            return Err(refuse(format!(
                "the primary-side VM is on host '{}', not on the target host '{}'; set the VM's host in the plan to '{}'",
                vm.primary.host.as_deref().unwrap_or("?"),
                req.target_host,
                vm.primary.host.as_deref().unwrap_or("?")
            )));
        }
    } else if !req.create_if_missing {
        return Err(refuse(format!(
            "it does not exist on the primary site; set `createIfMissing: true` to create it on host '{}'",
            req.target_host
        )));
    }
    if req.sync == SyncMode::Full && vm.faults.stuck_shutdown {
        return Err(LabError::StuckShutdown { vm: req.vm.clone() });
    }

    // Every recovery disk gets a primary disk of the same name.
    let creating = !vm.primary.exists;
    let mut primary_disks = if creating {
        Vec::new()
    } else {
        vm.primary.disks.clone()
    };
    let mut created = Vec::new();
    for disk in &vm.recovery.disks {
        if !primary_disks.iter().any(|d| d.name == disk.name) {
            let path = lab.disk_path(&vm.dir, "primary", &disk.name);
            created.push((path.clone(), disk.size));
            primary_disks.push(LabDisk {
                name: disk.name.clone(),
                path,
                size: disk.size,
            });
        }
    }
    for (path, size) in &created {
        create_sparse(path, *size)?
            .sync_all()
            .map_err(LabError::io("flushing", path.as_path()))?;
    }
    // The new files' entries, and the `primary/` directory's own entry.
    if let Some(dir) = created.first().and_then(|(p, _)| p.parent()) {
        sync_dir(dir)?;
        if let Some(vm_dir) = dir.parent() {
            sync_dir(vm_dir)?;
        }
    }
    // Recording starts before phase 1 reads a block (crate::sync, module docs).
    if req.sync == SyncMode::Delta && !vm.change_tracking {
        for disk in &vm.recovery.disks {
            ChangeMap::new().save(&disk.change_map_path())?;
        }
    }

    let vm = locked.vm_mut(&req.vm)?;
    if creating {
        vm.primary.exists = true;
        vm.primary.host = Some(req.target_host.clone());
        vm.primary.running = false;
        vm.primary.networks = vm.networks.clone();
    }
    vm.primary.disks = primary_disks;
    vm.state = Lifecycle::Syncing;
    vm.sync_mode = Some(req.sync);
    vm.shutdown_at_ms = None;
    vm.shutdown_digests.clear();
    vm.verifications.clear();
    vm.phase_one.clear();
    match req.sync {
        SyncMode::Delta => vm.change_tracking = true,
        // Full shuts the recovery VM down at once (the fault was checked above).
        SyncMode::Full => {
            vm.recovery.running = false;
            vm.shutdown_at_ms = Some(now_ms());
        }
    }
    // The shutdown is logged before the world records it: a crash between
    // the two leaves a logged shutdown that the next run repeats, never an
    // unlogged one (tests read the log to check the safety rules).
    if req.sync == SyncMode::Full {
        recovery_off_event(locked, &req.vm)?;
    }
    locked.save()?;
    Ok(req.sync)
}

/// Delta phase 1: every recovery disk to its primary disk, while the
/// recovery VM keeps running. Returns, for each disk, what it left on the
/// primary disk (its digests are saved beside it); the caller records them
/// with the end of phase 1. A primary disk that still has the record of an
/// earlier attempt of this failback (a crash after its sync) is not read
/// again: only the recovery disk is.
fn phase_one(
    lab: &Lab,
    name: &str,
    progress: &ProgressFn,
) -> Result<BTreeMap<String, PhaseOneRecord>, LabError> {
    let vm = &lab.vm(name)?;
    expect_state(
        vm,
        "continue phase 1 of",
        &[Lifecycle::Syncing],
        "expected syncing",
    )?;
    if !vm.change_tracking {
        // Reading the source before recording started would void the proof.
        return Err(LabError::Precondition {
            vm: name.to_owned(),
            reason: "change tracking is off during a delta sync; run the failback again".into(),
        });
    }
    let disks = pairs(vm)?;
    let jobs = disks
        .iter()
        .map(|(src, dst)| Job {
            bytes: src.size,
            source: src.path.clone(),
            target: dst.path.clone(),
            transfer: Transfer::Delta(known_digests(vm, &src.name, dst)),
        })
        .collect();
    let outcomes = transfer_all(name, jobs, progress)?;
    // Each sync fsynced its target before returning and nothing else writes
    // a primary disk, so a stamp taken now describes the digests it returned.
    let mut records = BTreeMap::new();
    for ((src, dst), digests) in disks.iter().zip(outcomes) {
        let Some(digests) = digests else { continue };
        let stamp = FileStamp::settled(&dst.path)?;
        digests.save(&dst.digests_path())?;
        records.insert(
            src.name.clone(),
            PhaseOneRecord {
                digest: digests.root().to_string(),
                stamp,
                digests_stamp: FileStamp::settled(&dst.digests_path())?,
            },
        );
    }
    Ok(records)
}

/// The digests phase 1 of this failback left on primary disk `dst`, if its
/// record is intact and the disk still has the stamp it had then.
fn known_digests(vm: &LabVm, disk: &str, dst: &LabDisk) -> Option<Digests> {
    let record = vm.phase_one.get(disk)?;
    if !record.stamp.is_current(&dst.path) {
        return None;
    }
    load_phase_one(record, dst)
}

/// The digests file of `record`, if it is the one phase 1 wrote (same
/// stamp; its own checksum guards its bytes).
fn load_phase_one(record: &PhaseOneRecord, dst: &LabDisk) -> Option<Digests> {
    let path = dst.digests_path();
    if !record.digests_stamp.is_current(&path) {
        return None;
    }
    Digests::load(&path).ok()
}

/// "Complete Failover": see `Provider::complete`.
pub(crate) fn complete(lab: &Lab, name: &str, progress: &ProgressFn) -> Result<(), LabError> {
    {
        let vm = &lab.vm(name)?;
        match vm.state {
            Lifecycle::AwaitingCompletion | Lifecycle::FinalSync => {}
            Lifecycle::CommitPending | Lifecycle::Committed | Lifecycle::Protected => return Ok(()),
            Lifecycle::RunningInRecovery | Lifecycle::Syncing => {
                return Err(LabError::WrongState {
                    vm: name.to_owned(),
                    action: "complete the failback of",
                    state: vm.state,
                    expected: "expected awaiting-completion (phase 1 of a delta failback done)",
                });
            }
        }
    }
    shut_down(
        lab,
        name,
        &[Lifecycle::AwaitingCompletion, Lifecycle::FinalSync],
        Lifecycle::FinalSync,
    )?;
    let ms = |since: std::time::Instant| since.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    let mut evidence = record_shutdown_digests(lab, name)?;
    let digests_ms = ms(t);
    let t = std::time::Instant::now();
    final_copy(lab, name, progress, &mut evidence)?;
    let copy_ms = ms(t);
    let t = std::time::Instant::now();
    verify_disks(lab, name, progress, &evidence)?;
    let verify_ms = ms(t);
    let t = std::time::Instant::now();
    power_on(lab, name)?;
    tracing::debug!(
        vm = name,
        digests_ms,
        copy_ms,
        verify_ms,
        power_on_ms = ms(t),
        "phase 2 done"
    );
    Ok(())
}

/// Shuts the recovery VM down and moves the VM to `to`, in one durable
/// update; with the stuck-shutdown fault, fails and changes nothing.
/// Already off: only the state moves.
pub(super) fn shut_down(
    lab: &Lab,
    name: &str,
    from: &[Lifecycle],
    to: Lifecycle,
) -> Result<(), LabError> {
    let mut locked = lab.lock()?;
    let vm = locked.vm(name)?;
    expect_state(
        vm,
        "shut down the recovery VM of",
        from,
        "expected a failback in progress",
    )?;
    let host = primary_host(vm)?;
    locked.require_reachable(&host)?;
    let vm = locked.vm_mut(name)?;
    let was_running = vm.recovery.running;
    if was_running {
        if vm.faults.stuck_shutdown {
            return Err(LabError::StuckShutdown {
                vm: name.to_owned(),
            });
        }
        vm.recovery.running = false;
        vm.shutdown_at_ms = Some(now_ms());
    }
    if vm.state != to || was_running {
        vm.state = to;
        // Logged before it is recorded, as in `begin`.
        if was_running {
            recovery_off_event(&locked, name)?;
        }
        locked.save()?;
    }
    Ok(())
}

fn recovery_off_event(locked: &Locked, name: &str) -> Result<(), LabError> {
    let vm = locked.vm(name)?;
    locked.append_event(&serde_json::json!({
        "version": 1,
        "event": "recovery-off",
        "time": rfc3339(vm.shutdown_at_ms.unwrap_or_else(now_ms)),
        "vm": name,
    }))
}

/// What lets phase 2 verify primary disks by their changed blocks, by disk
/// name: phase 1's digests and the change map ([`PhaseTwo`]); a disk without
/// any is verified by hashing it whole.
pub(super) type Evidence = BTreeMap<String, PhaseTwo>;

/// Records the image digest of every recovery disk, once the recovery VM is
/// off (nothing writes it after that). Digests already recorded are kept.
///
/// A disk with an intact phase-1 record and change map is not read whole:
/// its digests are phase 1's with the changed blocks hashed again (see the
/// proof in `crate::sync`), and they are returned as [`Evidence`] for the
/// final copy and the verification. Any other disk is hashed whole.
pub(super) fn record_shutdown_digests(lab: &Lab, name: &str) -> Result<Evidence, LabError> {
    let (disks, recorded, records) = {
        let vm = &lab.vm(name)?;
        require_recovery_off(vm)?;
        (
            pairs(vm)?,
            vm.shutdown_digests.clone(),
            vm.phase_one.clone(),
        )
    };
    let mut evidence = Evidence::new();
    let mut digests = BTreeMap::new();
    for (src, dst) in &disks {
        let derived = records
            .get(&src.name)
            .and_then(|record| shutdown_evidence(record, src, dst));
        let digest = match &derived {
            Some(found) => found.source_digest(),
            None if recorded.contains_key(&src.name) => continue,
            None => sync::image_digest(&src.path)?,
        };
        if let Some(found) = derived {
            evidence.insert(src.name.clone(), found);
        }
        digests.insert(src.name.clone(), digest.to_string());
    }
    let mut locked = lab.lock()?;
    let vm = locked.vm_mut(name)?;
    require_recovery_off(vm)?;
    let mut changed = false;
    for (disk, digest) in digests {
        match vm.shutdown_digests.get(&disk) {
            // Recorded by an earlier run: evidence that disagrees with it is
            // not used (it cannot, the recovery disk being off; kept safe).
            Some(old) if *old != digest => {
                evidence.remove(&disk);
            }
            Some(_) => {}
            None => {
                vm.shutdown_digests.insert(disk, digest);
                changed = true;
            }
        }
    }
    if changed {
        locked.save()?;
    }
    Ok(evidence)
}

/// The recovery disk's digests at shutdown from phase 1's and the change
/// map; `None` when either file is missing or damaged. Reads from phase 1's
/// digests file only what the changed blocks need, checked against the
/// image digest phase 1 recorded.
fn shutdown_evidence(record: &PhaseOneRecord, src: &LabDisk, dst: &LabDisk) -> Option<PhaseTwo> {
    let path = dst.digests_path();
    if !record.digests_stamp.is_current(&path) {
        return None;
    }
    let recorded: ImageDigest = record.digest.parse().ok()?;
    let changes = ChangeMap::load(&src.change_map_path()).ok()?;
    match PhaseTwo::from_file(&src.path, &path, recorded, changes) {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(disk = %src.name, "cannot update the phase-1 digests ({e}); hashing the whole disk");
            None
        }
    }
}

/// Delta phase 2: the blocks of each change map (a full delta where a map
/// cannot be read; verification decides either way). A disk of `evidence`
/// keeps it only if the primary disk still has its phase-1 stamp right
/// before the copy writes it.
pub(super) fn final_copy(
    lab: &Lab,
    name: &str,
    progress: &ProgressFn,
    evidence: &mut Evidence,
) -> Result<(), LabError> {
    let vm = &lab.vm(name)?;
    expect_state(
        vm,
        "send the final changes of",
        &[Lifecycle::FinalSync],
        "expected final-sync",
    )?;
    require_recovery_off(vm)?;
    let mut jobs = Vec::new();
    for (src, dst) in pairs(vm)? {
        let untouched = vm
            .phase_one
            .get(&src.name)
            .is_some_and(|record| record.stamp.is_current(&dst.path));
        if !untouched && evidence.remove(&src.name).is_some() {
            tracing::info!(vm = name, disk = %src.name, "the primary disk changed since phase 1; it will be verified whole");
        }
        let loaded = match evidence.get(&src.name) {
            Some(found) => Ok(found.changes().clone()),
            None => ChangeMap::load(&src.change_map_path()),
        };
        let job = match loaded {
            Ok(map) => Job {
                bytes: map.count().saturating_mul(BLOCK as u64).min(src.size),
                source: src.path,
                target: dst.path,
                transfer: Transfer::Changes(map),
            },
            Err(e) => {
                tracing::warn!(
                    vm = name,
                    "cannot use the change map ({e}); comparing every block instead"
                );
                Job {
                    bytes: src.size,
                    source: src.path,
                    target: dst.path,
                    transfer: Transfer::Delta(None),
                }
            }
        };
        jobs.push(job);
    }
    transfer_all(name, jobs, progress).map(drop)
}

/// `full`: every block of each recovery disk, the recovery VM off.
fn full_copy(lab: &Lab, name: &str, progress: &ProgressFn) -> Result<(), LabError> {
    let vm = &lab.vm(name)?;
    expect_state(
        vm,
        "copy the disks of",
        &[Lifecycle::Syncing],
        "expected syncing",
    )?;
    require_recovery_off(vm)?;
    let jobs = pairs(vm)?
        .into_iter()
        .map(|(src, dst)| Job {
            bytes: src.size,
            source: src.path,
            target: dst.path,
            transfer: Transfer::Full,
        })
        .collect();
    transfer_all(name, jobs, progress).map(drop)
}

/// Compares the image digest of every primary disk with the recovery
/// disk's digest recorded at shutdown; a disk that differs is re-synced with
/// a full delta and compared again. Every comparison is recorded in
/// `events.jsonl`, the last one per disk in the world, with the primary
/// disk's stamp when the digest was read.
///
/// A disk of `evidence` is compared by reading back only its changed blocks
/// ([`sync::verify_changes`]); any other disk, or one that does not compare
/// equal that way, is hashed whole.
///
/// Errors: a disk still differs after the re-sync.
pub(super) fn verify_disks(
    lab: &Lab,
    name: &str,
    progress: &ProgressFn,
    evidence: &Evidence,
) -> Result<(), LabError> {
    let (checks, failed) = {
        let vm = &lab.vm(name)?;
        expect_verifiable(vm)?;
        let mut checks = Vec::new();
        let mut failed = None;
        for (src, dst) in pairs(vm)? {
            let recorded = recorded_digest(vm, &src.name)?;
            let mut check = match evidence.get(&src.name) {
                Some(found) => {
                    let stamp = FileStamp::of(&dst.path)?;
                    let v = found.verify(&dst.path)?;
                    // The stamp vouches for what was read only once it has
                    // settled; usually the reads took that long already.
                    let settled = FileStamp::settled(&dst.path)?;
                    let mut check = Check::new(&src.name, recorded, v.target_digest);
                    check.method = "changed-blocks";
                    check.blocks_read = found.changes().count();
                    check.stamp = (settled == stamp).then_some(stamp);
                    check
                }
                None => hash_whole(&src.name, recorded, &dst)?,
            };
            if check.found != recorded && check.method == "changed-blocks" {
                // Not equal by the changed blocks: decide by the whole disk.
                checks.push(check);
                check = hash_whole(&src.name, recorded, &dst)?;
            }
            if check.found != recorded {
                checks.push(check);
                tracing::warn!(vm = name, disk = %src.name, "primary disk differs from the recovery disk at shutdown; re-syncing it");
                let job = Job {
                    bytes: src.size,
                    source: src.path.clone(),
                    target: dst.path.clone(),
                    transfer: Transfer::Delta(None),
                };
                transfer_all(name, vec![job], progress)?;
                check = hash_whole(&src.name, recorded, &dst)?;
            }
            if check.found != recorded && failed.is_none() {
                failed = Some(LabError::VerificationFailed {
                    vm: name.to_owned(),
                    disk: src.name.clone(),
                    expected: recorded.to_string(),
                    found: check.found.to_string(),
                });
            }
            checks.push(check);
        }
        (checks, failed)
    };

    let mut locked = lab.lock()?;
    for check in &checks {
        // `verified` means verified equal; a difference (before a repair,
        // or a failure) is logged under another name.
        let equal = check.recorded == check.found;
        locked.append_event(&serde_json::json!({
            "version": 1,
            "event": if equal { "verified" } else { "verification-mismatch" },
            "time": rfc3339(check.at_ms),
            "vm": name,
            "disk": check.disk,
            "shutdownDigest": check.recorded.to_string(),
            "primaryDigest": check.found.to_string(),
            "equal": equal,
            "method": check.method,
            "blocksRead": check.blocks_read,
        }))?;
    }
    let vm = locked.vm_mut(name)?;
    for check in checks {
        vm.verifications.insert(
            check.disk.clone(),
            VerificationRecord {
                shutdown_digest: check.recorded.to_string(),
                primary_digest: check.found.to_string(),
                equal: check.recorded == check.found,
                at_ms: check.at_ms,
                primary_stamp: check.stamp,
            },
        );
    }
    locked.save()?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Hashes the whole primary disk `dst`; the stamp is kept only if the disk
/// had it both before and after the read (nothing wrote it meanwhile).
fn hash_whole(disk: &str, recorded: ImageDigest, dst: &LabDisk) -> Result<Check, LabError> {
    let before = FileStamp::of(&dst.path)?;
    let found = sync::image_digest(&dst.path)?;
    let mut check = Check::new(disk, recorded, found);
    check.blocks_read = dst.size.div_ceil(BLOCK as u64);
    let settled = FileStamp::settled(&dst.path)?;
    check.stamp = (settled == before).then_some(before);
    Ok(check)
}

struct Check {
    disk: String,
    recorded: ImageDigest,
    found: ImageDigest,
    at_ms: u64,
    /// How the primary disk's digest was found: "whole-disk" or
    /// "changed-blocks".
    method: &'static str,
    blocks_read: u64,
    stamp: Option<FileStamp>,
}

impl Check {
    fn new(disk: &str, recorded: ImageDigest, found: ImageDigest) -> Self {
        Check {
            disk: disk.to_owned(),
            recorded,
            found,
            at_ms: now_ms(),
            method: "whole-disk",
            blocks_read: 0,
            stamp: None,
        }
    }
}

/// Starts the primary VM: the one place that does, and the gate of the
/// first safety rule. Under the lock, it requires for every recovery disk a
/// digest recorded at shutdown and a verification record equal to it, and
/// that each primary disk still has the stamp it had when it was verified
/// (or, failing that, hashes it again and finds the same digest); any
/// difference refuses the start and changes nothing. Then it logs the power-on and records `commit-pending`,
/// the primary VM running and the downtime.
pub(super) fn power_on(lab: &Lab, name: &str) -> Result<(), LabError> {
    let mut locked = lab.lock()?;
    let vm = locked.vm(name)?;
    if matches!(
        vm.state,
        Lifecycle::CommitPending | Lifecycle::Committed | Lifecycle::Protected
    ) && vm.primary.running
    {
        return Ok(());
    }
    expect_verifiable(vm)?;
    let host = primary_host(vm)?;
    locked.require_reachable(&host)?;

    let unverified = |disk: &str, reason: String| LabError::Unverified {
        vm: name.to_owned(),
        disk: disk.to_owned(),
        reason,
    };
    let mut digests = Vec::new();
    let mut rehashed = Vec::new();
    for (src, dst) in pairs(vm)? {
        let recorded = recorded_digest(vm, &src.name).map_err(|_| {
            unverified(
                &src.name,
                "no digest was recorded when the recovery VM was shut down".into(),
            )
        })?;
        let verification = vm.verifications.get(&src.name).filter(|v| {
            v.equal
                && parses_to(&v.shutdown_digest, recorded)
                && parses_to(&v.primary_digest, recorded)
        });
        let Some(verification) = verification else {
            return Err(unverified(
                &src.name,
                "it has no verification record matching the shutdown digest".into(),
            ));
        };
        // The disk is as verified if it kept the stamp it had when its
        // digest was read; otherwise it is hashed again.
        let untouched = verification
            .primary_stamp
            .is_some_and(|stamp| stamp.is_current(&dst.path));
        let now = if untouched {
            recorded
        } else {
            rehashed.push(src.name.clone());
            sync::image_digest(&dst.path)?
        };
        if now != recorded {
            return Err(unverified(
                &src.name,
                format!(
                    "it changed since it was verified: expected image digest {recorded}, found {now}"
                ),
            ));
        }
        digests.push((src.name, now));
    }

    let at = now_ms();
    locked.append_event(&serde_json::json!({
        "version": 1,
        "event": "power-on",
        "time": rfc3339(at),
        "vm": name,
        "host": host,
        "disks": digests.iter().map(|(disk, _)| disk.as_str()).collect::<Vec<_>>(),
        "digests": digests
            .iter()
            .map(|(disk, digest)| (disk.clone(), serde_json::Value::from(digest.to_string())))
            .collect::<serde_json::Map<_, _>>(),
        // Disks hashed again because they lost their verification stamp.
        "rehashed": rehashed,
    }))?;
    let vm = locked.vm_mut(name)?;
    vm.state = Lifecycle::CommitPending;
    vm.primary.running = true;
    vm.active = Site::Primary;
    vm.change_tracking = false;
    vm.downtime_ms = vm.shutdown_at_ms.map(|off| at.saturating_sub(off));
    locked.save()
}

/// Commit: see `Provider::commit`.
pub(crate) fn commit(lab: &Lab, name: &str) -> Result<(), LabError> {
    let mut locked = lab.lock()?;
    let vm = locked.vm(name)?;
    match vm.state {
        Lifecycle::Committed | Lifecycle::Protected => return Ok(()),
        Lifecycle::CommitPending => {}
        state => {
            return Err(LabError::WrongState {
                vm: name.to_owned(),
                action: "commit",
                state,
                expected: "expected commit-pending (the VM running on the primary host)",
            });
        }
    }
    if !vm.primary.running {
        return Err(LabError::Precondition {
            vm: name.to_owned(),
            reason: "commit deletes the recovery copy, but the primary VM is not running".into(),
        });
    }
    let disks = vm.recovery.disks.clone();
    if !vm.commit_started {
        locked.vm_mut(name)?.commit_started = true;
        locked.save()?;
    }
    let disks_dir = lab.disks_dir();
    for disk in &disks {
        for path in [disk.path.clone(), disk.change_map_path()] {
            // `Lab::read` refused any disk path outside the lab.
            if !path.starts_with(&disks_dir) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LabError::io("deleting", &path)(e)),
            }
        }
        if let Some(dir) = disk.path.parent() {
            sync_dir(dir)?;
        }
    }
    locked.append_event(&serde_json::json!({
        "version": 1,
        "event": "commit",
        "time": rfc3339(now_ms()),
        "vm": name,
        "deleted": disks.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
    }))?;
    let vm = locked.vm_mut(name)?;
    vm.recovery.exists = false;
    vm.recovery.running = false;
    vm.recovery.disks.clear();
    vm.has_recovery_point = false;
    vm.sync_mode = None;
    vm.commit_started = false;
    vm.state = Lifecycle::Committed;
    locked.save()
}

/// Reverse replication: see `Provider::reverse_replicate`. The replica's
/// bytes are real: each primary disk is copied in full to `replica/`.
pub(crate) fn reverse_replicate(
    lab: &Lab,
    name: &str,
    progress: &ProgressFn,
) -> Result<(), LabError> {
    let jobs = {
        let mut locked = lab.lock()?;
        let vm = locked.vm(name)?;
        match vm.state {
            Lifecycle::Protected => return Ok(()),
            Lifecycle::Committed => {}
            state => {
                return Err(LabError::WrongState {
                    vm: name.to_owned(),
                    action: "reverse-replicate",
                    state,
                    expected: "expected committed",
                });
            }
        }
        let host = primary_host(vm)?;
        locked.require_reachable(&host)?;
        let replica = match &vm.replica {
            Some(replica) => replica.clone(),
            None => {
                let disks = vm
                    .primary
                    .disks
                    .iter()
                    .map(|d| LabDisk {
                        name: d.name.clone(),
                        path: lab.disk_path(&vm.dir, "replica", &d.name),
                        size: d.size,
                    })
                    .collect();
                let replica = Replica {
                    disks,
                    synced: false,
                };
                locked.vm_mut(name)?.replica = Some(replica.clone());
                locked.save()?;
                replica
            }
        };
        let vm = locked.vm(name)?;
        let mut jobs = Vec::new();
        for disk in &vm.primary.disks {
            let Some(target) = replica.disks.iter().find(|r| r.name == disk.name) else {
                continue;
            };
            if let Some(dir) = target.path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(LabError::io("creating the directory", dir))?;
            }
            jobs.push(Job {
                bytes: disk.size,
                source: disk.path.clone(),
                target: target.path.clone(),
                transfer: Transfer::Full,
            });
        }
        jobs
    };
    transfer_all(name, jobs, progress)?;

    let mut locked = lab.lock()?;
    let vm = locked.vm_mut(name)?;
    if vm.state == Lifecycle::Committed {
        vm.state = Lifecycle::Protected;
        vm.protection = Protection::PrimaryToRecovery;
        vm.has_recovery_point = true;
        if let Some(replica) = vm.replica.as_mut() {
            replica.synced = true;
        }
        locked.save()?;
    }
    Ok(())
}

// --- helpers ---------------------------------------------------------------

fn mode_name(mode: SyncMode) -> &'static str {
    match mode {
        SyncMode::Delta => "delta",
        SyncMode::Full => "full",
    }
}

fn expect_state(
    vm: &LabVm,
    action: &'static str,
    states: &[Lifecycle],
    expected: &'static str,
) -> Result<(), LabError> {
    if states.contains(&vm.state) {
        Ok(())
    } else {
        Err(LabError::WrongState {
            vm: vm.name.clone(),
            action,
            state: vm.state,
            expected,
        })
    }
}

/// The states in which the primary disks are verified and the VM started:
/// a delta's final sync, or a full sync.
fn expect_verifiable(vm: &LabVm) -> Result<(), LabError> {
    let ok = match vm.state {
        Lifecycle::FinalSync => true,
        Lifecycle::Syncing => vm.sync_mode == Some(SyncMode::Full),
        _ => false,
    };
    if !ok {
        return Err(LabError::WrongState {
            vm: vm.name.clone(),
            action: "verify and start",
            state: vm.state,
            expected: "expected final-sync, or syncing in full mode",
        });
    }
    require_recovery_off(vm)
}

fn require_recovery_off(vm: &LabVm) -> Result<(), LabError> {
    if vm.recovery.running {
        return Err(LabError::Precondition {
            vm: vm.name.clone(),
            reason: "the recovery VM is still running".into(),
        });
    }
    Ok(())
}

fn primary_host(vm: &LabVm) -> Result<String, LabError> {
    vm.primary
        .host
        .clone()
        .ok_or_else(|| LabError::Precondition {
            vm: vm.name.clone(),
            reason: "it has no primary-side VM".into(),
        })
}

fn recorded_digest(vm: &LabVm, disk: &str) -> Result<ImageDigest, LabError> {
    let text = vm
        .shutdown_digests
        .get(disk)
        .ok_or_else(|| LabError::Precondition {
            vm: vm.name.clone(),
            reason: format!("no image digest of disk '{disk}' was recorded at shutdown"),
        })?;
    text.parse().map_err(|e| LabError::Precondition {
        vm: vm.name.clone(),
        reason: format!("the digest recorded for disk '{disk}' is damaged: {e}"),
    })
}

fn parses_to(text: &str, digest: ImageDigest) -> bool {
    text.parse::<ImageDigest>().is_ok_and(|d| d == digest)
}

/// Each recovery disk with its primary disk of the same name.
fn pairs(vm: &LabVm) -> Result<Vec<(LabDisk, LabDisk)>, LabError> {
    vm.recovery
        .disks
        .iter()
        .map(|src| {
            let dst = vm
                .primary
                .disks
                .iter()
                .find(|d| d.name == src.name)
                .ok_or_else(|| LabError::Precondition {
                    vm: vm.name.clone(),
                    reason: format!("its primary-side VM has no disk '{}'", src.name),
                })?;
            Ok((src.clone(), dst.clone()))
        })
        .collect()
}

enum Transfer {
    /// A delta sync, with the target's digests when they are known.
    Delta(Option<Digests>),
    Full,
    Changes(ChangeMap),
}

struct Job {
    source: PathBuf,
    target: PathBuf,
    transfer: Transfer,
    /// Bytes this job is expected to process, for progress.
    bytes: u64,
}

/// Runs the jobs one after another (each sync is parallel inside), reporting
/// progress over all of them. Returns, job by job, the source digests a
/// delta sync read (`None` for other transfers).
fn transfer_all(
    vm: &str,
    jobs: Vec<Job>,
    progress: &ProgressFn,
) -> Result<Vec<Option<Digests>>, LabError> {
    let total: u64 = jobs.iter().map(|j| j.bytes).sum();
    let abort = test_abort_fault();
    let mut base = 0u64;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let fault = test_io_fault(abort.unwrap_or_default());
        let report = |done: u64, _: u64| {
            progress(Progress {
                vm: vm.to_owned(),
                bytes_done: base.saturating_add(done).min(total),
                bytes_total: total,
            });
        };
        let mut options = SyncOptions::new().with_progress(&report).with_fault(fault);
        let outcome = match &job.transfer {
            Transfer::Delta(known) => {
                if let Some(known) = known {
                    options = options.with_known_target(known);
                }
                sync::delta_sync(&job.source, &job.target, &options)
                    .map(|outcome| Some(outcome.source_digests))
            }
            Transfer::Full => sync::full_sync(&job.source, &job.target, &options).map(|_| None),
            Transfer::Changes(map) => {
                sync::copy_blocks(&job.source, &job.target, map, &options).map(|_| None)
            }
        };
        match outcome {
            Ok(digests) => outcomes.push(digests),
            Err(SyncError::InjectedFault { path, offset }) if abort.is_some() => {
                tracing::error!(target = %path.display(), offset, "{TEST_ABORT_ENV} is set: aborting the process mid-sync");
                std::process::abort();
            }
            Err(e) => return Err(e.into()),
        }
        base = base.saturating_add(job.bytes);
    }
    progress(Progress {
        vm: vm.to_owned(),
        bytes_done: total,
        bytes_total: total,
    });
    Ok(outcomes)
}

/// Adds the I/O faults of [`TEST_FAIL_DISK_WRITE_ENV`] and
/// [`TEST_FAIL_DISK_FSYNC_ENV`] to `fault`, counting this sync. Inert in
/// release builds.
fn test_io_fault(mut fault: FaultPlan) -> FaultPlan {
    static SYNCS: AtomicU64 = AtomicU64::new(0);
    if !cfg!(debug_assertions) {
        return fault;
    }
    let n = SYNCS.fetch_add(1, Ordering::Relaxed) + 1;
    let number = |var: &str| -> Option<u64> { std::env::var(var).ok()?.trim().parse().ok() };
    if let Some(offset) = number(TEST_FAIL_DISK_WRITE_ENV) {
        fault.enospc_at_offset = Some(offset);
    }
    if number(TEST_FAIL_DISK_FSYNC_ENV) == Some(n) {
        fault.eio_on_fsync = true;
    }
    fault
}

fn test_abort_fault() -> Option<FaultPlan> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let text = std::env::var(TEST_ABORT_ENV).ok()?;
    text.trim().parse::<u64>().ok().map(FaultPlan::fail_at)
}
