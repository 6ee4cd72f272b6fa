//! Tests of the lab provider: real (small, sparse) disk images in temporary
//! directories, the provider driven through its trait.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::actions;
use super::store::Lab;
use super::*;
use crate::plan::{FailbackPlan, SyncMode};
use crate::provider::{FailbackRequest, Lifecycle, Progress, ProgressFn, Provider, ProviderError};
use crate::sync::{BLOCK, ChangeMap};

const MIB: u64 = 1024 * 1024;
/// A VM name with a space and a non-ASCII letter: its directory must be safe.
const ODD: &str = "file server ü";

fn plan() -> FailbackPlan {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "failback/v1",
        "kind": "FailbackPlan",
        "metadata": { "name": "lab-test" },
        "spec": {
            "primary": { "site": "dc1", "hosts": [
                { "name": "hv-01", "vswitches": ["Production", "Backup"] },
                { "name": "hv-02", "vswitches": ["Production"] }
            ] },
            "recovery": { "site": "azure" },
            "groups": [
                { "name": "data", "vms": [
                    { "name": "sql-01", "host": "hv-01",
                      "networks": [ { "adapter": "nic0", "vswitch": "Production" }, { "vswitch": "Backup" } ] },
                    { "name": ODD, "host": "hv-02", "networks": [ { "vswitch": "Production" } ] }
                ] },
                { "name": "app", "vms": [ { "name": "app-01", "host": "hv-02" } ] }
            ]
        }
    }))
    .unwrap()
}

struct TestLab {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    provider: LabProvider,
    lab: Lab,
}

impl TestLab {
    fn new(opts: InitOptions) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lab");
        init(&dir, &plan(), &opts).unwrap();
        let provider = LabProvider::open(&dir).unwrap();
        let lab = Lab::open(&dir).unwrap();
        TestLab {
            _tmp: tmp,
            dir,
            provider,
            lab,
        }
    }

    /// Two 2 MiB disks per VM, `app-01` missing on the primary site.
    fn small() -> Self {
        TestLab::new(InitOptions {
            disk_size: 2 * MIB,
            disks: 2,
            missing: vec!["app-01".into()],
            seed: 7,
            ..InitOptions::default()
        })
    }

    fn world(&self) -> LabWorld {
        show(&self.dir).unwrap()
    }

    fn vm(&self, name: &str) -> LabVm {
        self.world().vm(name).unwrap().clone()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join(EVENTS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn request(vm: &str, sync: SyncMode, host: &str) -> FailbackRequest {
    FailbackRequest {
        vm: vm.into(),
        sync,
        create_if_missing: false,
        target_host: host.into(),
    }
}

fn quiet() -> ProgressFn {
    Arc::new(|_: Progress| {})
}

/// Byte-compares two files.
fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

fn differing_blocks(a: &Path, b: &Path) -> usize {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    x.chunks(BLOCK)
        .zip(y.chunks(BLOCK))
        .filter(|(p, q)| p != q)
        .count()
}

fn assert_disks_equal(vm: &LabVm) {
    assert!(!vm.recovery.disks.is_empty());
    for disk in &vm.recovery.disks {
        let primary = vm
            .primary
            .disks
            .iter()
            .find(|d| d.name == disk.name)
            .unwrap();
        assert_same_bytes(&disk.path, &primary.path);
    }
}

fn conflict(result: Result<(), ProviderError>) -> String {
    match result {
        Err(ProviderError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn init_makes_the_documented_world() {
    let t = TestLab::small();
    let world = t.world();
    assert_eq!(world.version, 1);
    assert_eq!(world.primary.site, "dc1");
    assert!(world.primary.connected);
    assert_eq!(world.primary.hosts.len(), 2);
    assert!(world.primary.hosts.iter().all(|h| h.connected));
    assert_eq!(world.primary.hosts[0].vswitches, ["Production", "Backup"]);
    assert_eq!(world.vms.len(), 3);

    let sql = t.vm("sql-01");
    assert_eq!(sql.state, Lifecycle::RunningInRecovery);
    assert_eq!(sql.active, Site::Recovery);
    assert!(sql.recovery.exists && sql.recovery.running);
    assert!(sql.primary.exists && !sql.primary.running);
    assert_eq!(sql.primary.host.as_deref(), Some("hv-01"));
    assert_eq!(sql.primary.networks[1].adapter, "nic1");
    assert_eq!(sql.primary.networks[1].vswitch, "Backup");
    assert_eq!(sql.protection, Protection::None);
    assert_eq!(sql.days_in_recovery, 3);
    assert_eq!(sql.downtime_ms, None);
    assert_eq!(sql.recovery.disks.len(), 2);
    let blocks = (2 * MIB) as usize / BLOCK;
    let drift = (blocks as f64 * 0.05).round() as usize;
    for (r, p) in sql.recovery.disks.iter().zip(&sql.primary.disks) {
        assert!(r.path.is_absolute() && p.path.is_absolute());
        assert_eq!(fs::metadata(&r.path).unwrap().len(), 2 * MIB);
        assert_eq!(r.size, 2 * MIB);
        assert!(
            fs::read(&r.path).unwrap().iter().any(|&b| b != 0),
            "recovery disk has data"
        );
        assert_eq!(
            differing_blocks(&r.path, &p.path),
            drift,
            "drift of {}",
            p.path.display()
        );
    }

    // A name with a space gets a safe directory of its own.
    let odd = t.vm(ODD);
    assert!(
        odd.dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "{}",
        odd.dir
    );
    assert!(
        odd.recovery.disks[0]
            .path
            .starts_with(t.dir.join(DISKS_DIR).canonicalize().unwrap().join(&odd.dir))
    );

    // --missing: no primary-side VM and no primary disk.
    let app = t.vm("app-01");
    assert!(!app.primary.exists && app.primary.host.is_none() && app.primary.disks.is_empty());
    assert!(
        !t.dir
            .join(DISKS_DIR)
            .join(&app.dir)
            .join("primary")
            .exists()
    );

    // The documented JSON shape of `lab show`.
    let json = serde_json::to_value(&world).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["primary"]["hosts"][0]["vswitches"][0], "Production");
    let vm = &json["vms"][0];
    for field in [
        "name",
        "state",
        "active",
        "recovery",
        "primary",
        "protection",
        "daysInRecovery",
        "downtimeMs",
    ] {
        assert!(vm.get(field).is_some(), "missing field {field}");
    }
    assert_eq!(vm["state"], "running-in-recovery");
    assert_eq!(vm["protection"], "none");
    assert_eq!(vm["primary"]["networks"][0]["adapter"], "nic0");
    assert_eq!(vm["recovery"]["disks"][0]["size"], 2 * MIB);

    // The provider's view.
    let observed = t.provider.observe(&plan()).await.unwrap();
    assert!(observed.primary_connected);
    assert_eq!(
        observed.host("hv-01").unwrap().vswitches.as_deref(),
        Some(&["Production".to_owned(), "Backup".to_owned()][..])
    );
    let sql = observed.vm("sql-01").unwrap();
    assert!(
        sql.failover_committed
            && sql.has_recovery_point
            && sql.recovery_running
            && sql.primary_exists
    );
    assert_eq!(sql.primary_host.as_deref(), Some("hv-01"));
    assert_eq!(sql.sync_mode, None);
    assert!(!observed.vm("app-01").unwrap().primary_exists);

    // No replacing without --force; the same seed gives the same disks.
    let again = init(&t.dir, &plan(), &InitOptions::default());
    assert!(
        matches!(again, Err(LabError::AlreadyExists { .. })),
        "{again:?}"
    );
    let before = crate::sync::image_digest(&sql_recovery(&t)).unwrap();
    let opts = InitOptions {
        disk_size: 2 * MIB,
        disks: 2,
        seed: 7,
        force: true,
        ..InitOptions::default()
    };
    init(&t.dir, &plan(), &opts).unwrap();
    assert_eq!(
        crate::sync::image_digest(&sql_recovery(&t)).unwrap(),
        before
    );
    assert!(
        t.vm("app-01").primary.exists,
        "--force rebuilt the world without --missing"
    );
}

fn sql_recovery(t: &TestLab) -> PathBuf {
    t.vm("sql-01").recovery.disks[0].path.clone()
}

#[test]
fn init_refuses_bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    for opts in [
        InitOptions {
            disk_size: 0,
            ..InitOptions::default()
        },
        InitOptions {
            disks: 0,
            ..InitOptions::default()
        },
        InitOptions {
            drift_percent: 101.0,
            ..InitOptions::default()
        },
        InitOptions {
            drift_percent: f64::NAN,
            ..InitOptions::default()
        },
        InitOptions {
            missing: vec!["nope".into()],
            ..InitOptions::default()
        },
    ] {
        let e = init(&dir, &plan(), &opts).unwrap_err();
        assert!(matches!(e, LabError::InvalidOption(_)), "{e}");
    }
    assert!(!exists(&dir));
}

#[test]
fn sizes_parse_with_binary_units() {
    assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
    assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
    assert_eq!(parse_size("1GiB"), Ok(1024 * MIB));
    assert_eq!(parse_size("2m"), Ok(2 * MIB));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("1.5GiB").is_err());
    assert!(parse_size("64MB").is_err());
    assert!(parse_size("").is_err());
    assert!(parse_size("99999999999TiB").is_err());
}

#[tokio::test]
async fn delta_failback_end_to_end_with_guest_writes_during_and_after_phase_one() {
    let t = TestLab::new(InitOptions {
        disk_size: 4 * MIB,
        disks: 2,
        seed: 1,
        ..InitOptions::default()
    });

    // A guest write from inside phase 1 (at the first progress report, with
    // part of the disks read), and a guest writing concurrently throughout.
    let dir = t.dir.clone();
    let wrote = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let progress: ProgressFn = {
        let (wrote, last) = (wrote.clone(), last.clone());
        Arc::new(move |p: Progress| {
            assert!(p.bytes_done <= p.bytes_total && p.bytes_total == 8 * MIB);
            assert!(
                p.bytes_done >= last.swap(p.bytes_done, Ordering::SeqCst),
                "progress went back"
            );
            if p.bytes_done < p.bytes_total && !wrote.swap(true, Ordering::SeqCst) {
                write_guest_blocks(&dir, "sql-01", 200, Some(1)).unwrap();
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let guest = {
        let (dir, stop) = (t.dir.clone(), stop.clone());
        std::thread::spawn(move || {
            // A bounded guest: the world lock (flock) is not fair, and an
            // unbounded writer could starve the failback's short updates.
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 20 {
                write_guest_blocks(&dir, "sql-01", 8, None).unwrap();
                n += 1;
                std::thread::yield_now();
            }
            n
        })
    };
    let req = request("sql-01", SyncMode::Delta, "hv-01");
    t.provider.start_failback(&req, progress).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(guest.join().unwrap() > 0);
    assert!(wrote.load(Ordering::SeqCst), "the in-sync write ran");

    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::AwaitingCompletion);
    assert!(vm.recovery.running && !vm.primary.running && vm.change_tracking);
    assert_eq!(vm.sync_mode, Some(SyncMode::Delta));
    let observed = t.provider.observe(&plan()).await.unwrap();
    assert_eq!(
        observed.vm("sql-01").unwrap().sync_mode,
        Some(SyncMode::Delta)
    );

    // After phase 1 the guest goes on writing; the writes are tracked.
    let write = write_guest_blocks(&t.dir, "sql-01", 64, Some(2)).unwrap();
    assert!(write.tracked && write.blocks == 64);
    let marked: u64 = vm
        .recovery
        .disks
        .iter()
        .map(|d| ChangeMap::load(&d.change_map_path()).unwrap().count())
        .sum();
    assert!(marked >= 64);

    t.provider.complete("sql-01", quiet()).await.unwrap();
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::CommitPending);
    assert!(!vm.recovery.running && vm.recovery.exists && vm.primary.running);
    assert_eq!(vm.active, Site::Primary);
    assert!(vm.downtime_ms.is_some());
    assert_disks_equal(&vm);
    assert!(
        vm.verifications
            .values()
            .all(|v| v.equal && v.primary_digest == v.shutdown_digest)
    );

    // The log: each disk verified equal to its shutdown digest, then power-on;
    // phase 2 alone made them equal (the change maps caught every write,
    // including those racing phase 1): no repair was needed.
    let events = t.events();
    assert!(
        !events.iter().any(|e| e["event"] == "verification-mismatch"),
        "a repair was needed"
    );
    let power_on = events
        .iter()
        .position(|e| e["event"] == "power-on" && e["vm"] == "sql-01")
        .unwrap();
    for disk in ["disk0", "disk1"] {
        let verified = events[..power_on]
            .iter()
            .rev()
            .find(|e| e["event"] == "verified" && e["disk"] == disk)
            .unwrap();
        assert_eq!(verified["equal"], true);
        assert_eq!(verified["shutdownDigest"], verified["primaryDigest"]);
        assert_eq!(
            verified["shutdownDigest"].as_str(),
            vm.shutdown_digests.get(disk).map(String::as_str)
        );
        // Phase 2 read back only the changed blocks, not the whole disk.
        assert_eq!(verified["method"], "changed-blocks", "{verified}");
        let read = verified["blocksRead"].as_u64().unwrap();
        assert!(read > 0 && read < 4 * MIB / 4096, "{verified}");
        assert!(
            events[power_on]["disks"]
                .as_array()
                .unwrap()
                .contains(&disk.into())
        );
        assert_eq!(events[power_on]["digests"][disk], verified["primaryDigest"]);
    }
    // Both disks kept their verification stamp: none was hashed again.
    assert_eq!(events[power_on]["rehashed"], serde_json::json!([]));

    // The guest is gone from the recovery site.
    let refused = write_guest_blocks(&t.dir, "sql-01", 1, None).unwrap_err();
    assert!(matches!(refused, LabError::NotRunning { .. }), "{refused}");
}

#[tokio::test]
async fn full_failback_creates_a_missing_vm_and_starts_it_verified() {
    let t = TestLab::small();
    let req = FailbackRequest {
        create_if_missing: true,
        ..request("app-01", SyncMode::Full, "hv-02")
    };

    // Without createIfMissing, nothing changes.
    let before = t.world();
    let message = conflict(
        t.provider
            .start_failback(
                &FailbackRequest {
                    create_if_missing: false,
                    ..req.clone()
                },
                quiet(),
            )
            .await,
    );
    assert!(
        message.contains("app-01") && message.contains("createIfMissing"),
        "{message}"
    );
    assert_eq!(t.world(), before);

    t.provider.start_failback(&req, quiet()).await.unwrap();
    let vm = t.vm("app-01");
    assert_eq!(vm.state, Lifecycle::CommitPending);
    assert!(vm.primary.exists && vm.primary.running && !vm.recovery.running);
    assert_eq!(vm.primary.host.as_deref(), Some("hv-02"));
    assert!(vm.downtime_ms.is_some());
    assert_eq!(vm.sync_mode, Some(SyncMode::Full));
    assert!(!vm.change_tracking);
    assert_disks_equal(&vm);
    assert!(
        t.events()
            .iter()
            .any(|e| e["event"] == "power-on" && e["vm"] == "app-01")
    );

    // Full mode over an existing, stale primary VM.
    t.provider
        .start_failback(&request(ODD, SyncMode::Full, "hv-02"), quiet())
        .await
        .unwrap();
    assert_disks_equal(&t.vm(ODD));
}

#[tokio::test]
async fn a_stuck_shutdown_fails_and_changes_nothing() {
    let t = TestLab::small();
    t.provider
        .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
        .await
        .unwrap();
    inject_fault(
        &t.dir,
        &Fault::StuckShutdown {
            vm: "sql-01".into(),
        },
    )
    .unwrap();
    inject_fault(&t.dir, &Fault::StuckShutdown { vm: ODD.into() }).unwrap();
    let before = t.world();
    let events = t.events().len();

    match t.provider.complete("sql-01", quiet()).await {
        Err(ProviderError::Failed(message)) => {
            assert!(
                message.contains("recovery VM 'sql-01' did not confirm it is off"),
                "{message}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(matches!(
        t.provider
            .start_failback(&request(ODD, SyncMode::Full, "hv-02"), quiet())
            .await,
        Err(ProviderError::Failed(_))
    ));
    assert_eq!(t.world(), before, "nothing changed");
    assert_eq!(t.events().len(), events);
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::AwaitingCompletion);
    assert!(vm.recovery.running && !vm.primary.running);
    assert_eq!(t.vm(ODD).state, Lifecycle::RunningInRecovery);
    // The guest still runs and writes.
    write_guest_blocks(&t.dir, "sql-01", 4, None).unwrap();

    inject_fault(&t.dir, &Fault::Clear).unwrap();
    t.provider.complete("sql-01", quiet()).await.unwrap();
    assert_eq!(t.vm("sql-01").state, Lifecycle::CommitPending);
    assert_disks_equal(&t.vm("sql-01"));
}

#[tokio::test]
async fn commit_deletes_the_recovery_disks_only_from_commit_pending() {
    let t = TestLab::small();
    let recovery: Vec<PathBuf> = t
        .vm("sql-01")
        .recovery
        .disks
        .iter()
        .map(|d| d.path.clone())
        .collect();
    let all_there = || recovery.iter().all(|p| p.exists());

    conflict(t.provider.commit("sql-01").await);
    assert!(all_there());
    t.provider
        .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
        .await
        .unwrap();
    conflict(t.provider.commit("sql-01").await);
    conflict(t.provider.reverse_replicate("sql-01", quiet()).await);
    assert!(all_there());
    assert_eq!(t.vm("sql-01").state, Lifecycle::AwaitingCompletion);

    t.provider.complete("sql-01", quiet()).await.unwrap();
    conflict(t.provider.reverse_replicate("sql-01", quiet()).await);
    assert!(all_there());
    t.provider.commit("sql-01").await.unwrap();
    assert!(
        recovery
            .iter()
            .all(|p| !p.exists() && !p.with_extension("changes").exists())
    );
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::Committed);
    assert!(!vm.recovery.exists && vm.recovery.disks.is_empty() && vm.primary.running);
    assert_eq!(vm.sync_mode, None);
    for disk in &vm.primary.disks {
        assert!(disk.path.exists(), "primary disks are kept");
    }

    t.provider
        .reverse_replicate("sql-01", quiet())
        .await
        .unwrap();
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::Protected);
    assert_eq!(vm.protection, Protection::PrimaryToRecovery);
    let replica = vm.replica.clone().unwrap();
    assert!(replica.synced);
    for (p, r) in vm.primary.disks.iter().zip(&replica.disks) {
        assert_same_bytes(&p.path, &r.path);
    }
    let observed = t.provider.observe(&plan()).await.unwrap();
    let sql = observed.vm("sql-01").unwrap();
    assert_eq!(
        (sql.state, sql.has_recovery_point, sql.sync_mode),
        (Lifecycle::Protected, true, None)
    );
}

#[tokio::test]
async fn every_action_is_idempotent() {
    let t = TestLab::small();
    let p = &t.provider;
    let req = request("sql-01", SyncMode::Delta, "hv-01");

    p.start_failback(&req, quiet()).await.unwrap();
    let after = t.world();
    p.start_failback(&req, quiet()).await.unwrap();
    assert_eq!(t.world(), after, "start on awaiting-completion is a no-op");

    p.complete("sql-01", quiet()).await.unwrap();
    let after = t.world();
    p.complete("sql-01", quiet()).await.unwrap();
    p.start_failback(&req, quiet()).await.unwrap();
    assert_eq!(t.world(), after);

    p.commit("sql-01").await.unwrap();
    let after = t.world();
    p.commit("sql-01").await.unwrap();
    p.complete("sql-01", quiet()).await.unwrap();
    assert_eq!(t.world(), after);

    p.reverse_replicate("sql-01", quiet()).await.unwrap();
    let after = t.world();
    p.reverse_replicate("sql-01", quiet()).await.unwrap();
    p.commit("sql-01").await.unwrap();
    p.start_failback(&req, quiet()).await.unwrap();
    assert_eq!(t.world(), after);

    // Re-calling start on `syncing` (as after a crash in phase 1) re-runs
    // the sync and converges.
    let odd = request(ODD, SyncMode::Delta, "hv-02");
    p.start_failback(&odd, quiet()).await.unwrap();
    {
        let mut locked = t.lab.lock().unwrap();
        locked.vm_mut(ODD).unwrap().state = Lifecycle::Syncing;
        locked.save().unwrap();
    }
    p.start_failback(&odd, quiet()).await.unwrap();
    assert_eq!(t.vm(ODD).state, Lifecycle::AwaitingCompletion);

    // A crash after shutdown (state final-sync): complete continues.
    actions::shut_down(
        &t.lab,
        ODD,
        &[Lifecycle::AwaitingCompletion],
        Lifecycle::FinalSync,
    )
    .unwrap();
    p.complete(ODD, quiet()).await.unwrap();
    assert_eq!(t.vm(ODD).state, Lifecycle::CommitPending);
    assert_disks_equal(&t.vm(ODD));

    // Completing before phase 1 is a conflict.
    conflict(p.complete("app-01", quiet()).await);
}

#[tokio::test]
async fn power_on_refuses_an_unverified_disk() {
    let t = TestLab::small();
    t.provider
        .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
        .await
        .unwrap();
    write_guest_blocks(&t.dir, "sql-01", 16, Some(3)).unwrap();

    // `complete`, step by step, with the primary disk damaged between the
    // verification record and the power-on.
    let lab = &t.lab;
    actions::shut_down(
        lab,
        "sql-01",
        &[Lifecycle::AwaitingCompletion],
        Lifecycle::FinalSync,
    )
    .unwrap();
    let mut evidence = actions::record_shutdown_digests(lab, "sql-01").unwrap();
    let e = actions::power_on(lab, "sql-01").unwrap_err();
    assert!(
        matches!(e, LabError::Unverified { .. }),
        "no verification yet: {e}"
    );
    actions::final_copy(lab, "sql-01", &quiet(), &mut evidence).unwrap();
    actions::verify_disks(lab, "sql-01", &quiet(), &evidence).unwrap();
    let disk = t.vm("sql-01").primary.disks[1].path.clone();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 12345).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], 12345).unwrap();
    drop(file);

    let e = actions::power_on(lab, "sql-01").unwrap_err();
    assert!(
        !t.vm("sql-01").verifications["disk1"]
            .primary_stamp
            .unwrap()
            .is_current(&disk),
        "the write moved the stamp"
    );
    match &e {
        LabError::Unverified { vm, disk, reason } => {
            assert_eq!((vm.as_str(), disk.as_str()), ("sql-01", "disk1"));
            assert!(reason.contains("changed since it was verified"), "{reason}");
        }
        other => panic!("expected Unverified, got {other}"),
    }
    assert!(matches!(ProviderError::from(e), ProviderError::Failed(_)));
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::FinalSync);
    assert!(!vm.primary.running && vm.active == Site::Recovery);
    assert!(!t.events().iter().any(|e| e["event"] == "power-on"));

    // Running the failback again repairs the disk (a full delta), verifies
    // and starts the VM.
    t.provider.complete("sql-01", quiet()).await.unwrap();
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::CommitPending);
    assert_disks_equal(&vm);
    let events = t.events();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "verification-mismatch" && e["disk"] == "disk1")
    );
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "verified")
            .all(|e| e["shutdownDigest"] == e["primaryDigest"])
    );
    assert_eq!(events.last().unwrap()["event"], "power-on");
}

#[tokio::test]
async fn a_damaged_change_map_costs_a_full_delta_not_data() {
    let t = TestLab::small();
    t.provider
        .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
        .await
        .unwrap();
    write_guest_blocks(&t.dir, "sql-01", 32, Some(4)).unwrap();
    let map = t.vm("sql-01").recovery.disks[0].change_map_path();
    fs::write(&map, b"garbage").unwrap();
    // A guest write now fails rather than write unrecorded data.
    assert!(matches!(
        write_guest_blocks(&t.dir, "sql-01", 1, Some(5)),
        Err(LabError::Sync(_))
    ));
    t.provider.complete("sql-01", quiet()).await.unwrap();
    assert_disks_equal(&t.vm("sql-01"));
    // Without its change map, the disk is verified whole.
    let events = t.events();
    let verified = |disk: &str| {
        events
            .iter()
            .rfind(|e| e["event"] == "verified" && e["disk"] == disk)
            .unwrap()["method"]
            .clone()
    };
    assert_eq!(verified("disk0"), "whole-disk");
    assert_eq!(verified("disk1"), "changed-blocks");
}

/// The fast verification trusts phase 1's digests of the primary disk only
/// while the disk keeps its phase-1 stamp: a block written there behind the
/// failback's back, outside every change map, is still found and repaired.
#[tokio::test]
async fn a_primary_disk_written_after_phase_one_is_verified_whole() {
    let t = TestLab::small();
    t.provider
        .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
        .await
        .unwrap();
    write_guest_blocks(&t.dir, "sql-01", 16, Some(7)).unwrap();
    let vm = t.vm("sql-01");
    assert_eq!(vm.phase_one.len(), 2, "phase 1 recorded both disks");
    let map = ChangeMap::load(&vm.recovery.disks[1].change_map_path()).unwrap();
    let block = (0..).find(|b| !map.contains(*b)).unwrap();
    let disk = vm.primary.disks[1].path.clone();
    let file = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    file.write_all_at(&[0xa5; 64], block * 4096).unwrap();
    drop(file);

    t.provider.complete("sql-01", quiet()).await.unwrap();
    let vm = t.vm("sql-01");
    assert_eq!(vm.state, Lifecycle::CommitPending);
    assert_disks_equal(&vm);
    let events = t.events();
    let last = |disk: &str, event: &str| {
        events
            .iter()
            .rfind(|e| e["event"] == event && e["disk"] == disk)
            .cloned()
    };
    // disk1 was compared whole, found different, re-synced, then equal.
    assert_eq!(last("disk1", "verified").unwrap()["method"], "whole-disk");
    assert!(last("disk1", "verification-mismatch").is_some());
    assert_eq!(
        last("disk0", "verified").unwrap()["method"],
        "changed-blocks"
    );
    assert!(last("disk0", "verification-mismatch").is_none());
}

#[tokio::test]
async fn faults_are_observed_and_block_actions() {
    let t = TestLab::small();
    inject_fault(&t.dir, &Fault::Disconnect { host: None }).unwrap();
    let observed = t.provider.observe(&plan()).await.unwrap();
    assert!(!observed.primary_connected);
    assert!(
        observed
            .hosts
            .iter()
            .all(|h| !h.connected && h.vswitches.is_none())
    );
    let before = t.world();
    assert!(matches!(
        t.provider
            .start_failback(&request("sql-01", SyncMode::Delta, "hv-01"), quiet())
            .await,
        Err(ProviderError::Transient(_))
    ));
    assert_eq!(t.world(), before);

    inject_fault(&t.dir, &Fault::Connect { host: None }).unwrap();
    inject_fault(
        &t.dir,
        &Fault::Disconnect {
            host: Some("hv-02".into()),
        },
    )
    .unwrap();
    inject_fault(
        &t.dir,
        &Fault::RemoveVswitch {
            host: "hv-01".into(),
            vswitch: "Backup".into(),
        },
    )
    .unwrap();
    let observed = t.provider.observe(&plan()).await.unwrap();
    assert_eq!(
        observed.host("hv-01").unwrap().vswitches.as_deref(),
        Some(&["Production".to_owned()][..])
    );
    assert!(!observed.host("hv-02").unwrap().connected);
    assert!(matches!(
        inject_fault(
            &t.dir,
            &Fault::RemoveVswitch {
                host: "hv-01".into(),
                vswitch: "Backup".into()
            }
        ),
        Err(LabError::UnknownVswitch { .. })
    ));
    assert!(matches!(
        inject_fault(&t.dir, &Fault::StuckShutdown { vm: "nope".into() }),
        Err(LabError::UnknownVm { .. })
    ));

    inject_fault(&t.dir, &Fault::Clear).unwrap();
    let observed = t.provider.observe(&plan()).await.unwrap();
    assert!(observed.hosts.iter().all(|h| h.connected));
    assert_eq!(
        observed
            .host("hv-01")
            .unwrap()
            .vswitches
            .as_ref()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn lab_write_is_refused_unless_the_vm_runs_in_recovery() {
    let t = TestLab::small();
    assert!(matches!(
        write_guest_blocks(&t.dir, "nope", 1, None),
        Err(LabError::UnknownVm { .. })
    ));
    let write = write_guest_blocks(&t.dir, "sql-01", 10, Some(9)).unwrap();
    assert!(!write.tracked && write.bytes == 10 * BLOCK as u64);
    t.provider
        .start_failback(&request("sql-01", SyncMode::Full, "hv-01"), quiet())
        .await
        .unwrap();
    let e = write_guest_blocks(&t.dir, "sql-01", 1, None).unwrap_err();
    assert!(
        matches!(e, LabError::NotRunning { .. }) && e.to_string().contains("sql-01"),
        "{e}"
    );
}

#[tokio::test]
async fn a_damaged_world_is_a_clear_error() {
    let t = TestLab::small();
    let world_file = t.dir.join(WORLD_FILE);
    fs::write(&world_file, b"{ not json").unwrap();
    let e = LabProvider::open(&t.dir).unwrap_err();
    assert!(
        e.to_string().contains("world.json") && e.to_string().contains("not a valid lab world"),
        "{e}"
    );
    match t.provider.observe(&plan()).await {
        Err(ProviderError::Failed(message)) => assert!(message.contains("world.json"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    // A disk path outside the lab is refused (the lab writes and deletes disks).
    let mut world = serde_json::to_value(show_ok(&t)).unwrap();
    world["vms"][0]["recovery"]["disks"][0]["path"] = "/etc/passwd".into();
    fs::write(&world_file, world.to_string()).unwrap();
    let e = show(&t.dir).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");

    fs::remove_file(&world_file).unwrap();
    assert!(!exists(&t.dir));
    assert!(matches!(
        LabProvider::open(&t.dir),
        Err(LabError::NoWorld { .. })
    ));
}

/// A valid world for `t`, rebuilt from scratch (the file may be damaged).
fn show_ok(t: &TestLab) -> LabWorld {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    init(
        &dir,
        &plan(),
        &InitOptions {
            disk_size: 64 * 1024,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let mut world = show(&dir).unwrap();
    for vm in &mut world.vms {
        for disk in vm
            .recovery
            .disks
            .iter_mut()
            .chain(vm.primary.disks.iter_mut())
        {
            let relative = disk
                .path
                .strip_prefix(dir.canonicalize().unwrap())
                .unwrap()
                .to_path_buf();
            disk.path = t.lab.dir().join(relative);
        }
    }
    world
}

#[tokio::test]
async fn latency_delays_every_operation() {
    let t = TestLab::new(InitOptions {
        disk_size: 64 * 1024,
        latency_ms: 40,
        ..InitOptions::default()
    });
    let started = std::time::Instant::now();
    t.provider.observe(&plan()).await.unwrap();
    t.provider.commit("app-01").await.unwrap_err();
    assert!(started.elapsed() >= std::time::Duration::from_millis(80));
}

// ------------------------------------------------------------ world store

/// A plan of `n` VMs on one host, for the store's tests.
fn plan_of(n: usize) -> FailbackPlan {
    let vms: Vec<_> = (0..n)
        .map(|i| serde_json::json!({ "name": format!("vm-{i:04}"), "host": "hv-01" }))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "failback/v1",
        "kind": "FailbackPlan",
        "metadata": { "name": "store-test" },
        "spec": {
            "primary": { "site": "dc1", "hosts": [ { "name": "hv-01", "vswitches": ["Production"] } ] },
            "recovery": { "site": "azure" },
            "groups": [ { "name": "all", "vms": vms } ]
        }
    }))
    .unwrap()
}

/// A lab of `n` VMs with empty disks (no data to write).
fn store_lab(n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let opts = InitOptions {
        disk_size: 4096,
        ..InitOptions::default()
    };
    init(&dir, &plan_of(n), &opts).unwrap();
    (tmp, dir)
}

fn journals(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(JOURNAL_PREFIX))
        .collect();
    names.sort();
    names
}

/// Changes one VM under the lock and saves it.
fn bump(lab: &Lab, vm: &str) {
    let mut locked = lab.lock().unwrap();
    locked.vm_mut(vm).unwrap().days_in_recovery += 1;
    locked.save().unwrap();
}

#[test]
fn a_save_appends_the_changed_vm_and_leaves_the_world_file_alone() {
    let (_tmp, dir) = store_lab(500);
    let world_file = dir.join(WORLD_FILE);
    let before = fs::read(&world_file).unwrap();
    let lab = Lab::open(&dir).unwrap();
    bump(&lab, "vm-0042");
    bump(&lab, "vm-0007");

    // The world file is untouched; the journal holds two lines, each about
    // one VM's size, not the world's.
    assert_eq!(fs::read(&world_file).unwrap(), before);
    assert_eq!(journals(&dir), vec![format!("{JOURNAL_PREFIX}0")]);
    let journal = fs::read(dir.join(format!("{JOURNAL_PREFIX}0"))).unwrap();
    assert_eq!(journal.iter().filter(|&&b| b == b'\n').count(), 2);
    assert!(
        journal.len() * 50 < before.len(),
        "{} vs {}",
        journal.len(),
        before.len()
    );

    // Another process (a fresh Lab) and this one see the same world.
    let fresh = show(&dir).unwrap();
    assert_eq!(fresh, lab.read().unwrap());
    assert_eq!(fresh.vm("vm-0042").unwrap().days_in_recovery, 4);
    assert_eq!(fresh.vm("vm-0007").unwrap().days_in_recovery, 4);
    assert_eq!(fresh.vm("vm-0008").unwrap().days_in_recovery, 3);
}

#[test]
fn the_journal_is_folded_into_a_new_world_file_once_it_outgrows_it() {
    let (_tmp, dir) = store_lab(3);
    let lab = Lab::open(&dir).unwrap();
    let mut numbers = std::collections::BTreeSet::new();
    for i in 0..200 {
        bump(&lab, &format!("vm-{:04}", i % 3));
        let names = journals(&dir);
        assert!(names.len() <= 1, "one journal at a time: {names:?}");
        let on_disk = fs::metadata(dir.join(WORLD_FILE)).unwrap().len();
        let journal: u64 = names
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len())
            .sum();
        assert!(journal <= on_disk.max(COMPACT_AT), "{journal} > {on_disk}");
        numbers.extend(names);
    }
    assert!(numbers.len() > 2, "compacted more than once: {numbers:?}");
    let world = show(&dir).unwrap();
    let days: Vec<u32> = world.vms.iter().map(|v| v.days_in_recovery).collect();
    assert_eq!(days, vec![3 + 67, 3 + 67, 3 + 66]);
    assert_eq!(world.journal, 0, "the store's bookkeeping is not shown");
}

#[test]
fn two_labs_on_one_directory_see_each_others_saves() {
    let (_tmp, dir) = store_lab(4);
    let (a, b) = (Lab::open(&dir).unwrap(), Lab::open(&dir).unwrap());
    for i in 0..120 {
        let (lab, vm) = if i % 2 == 0 {
            (&a, "vm-0001")
        } else {
            (&b, "vm-0002")
        };
        bump(lab, vm);
        // Each reads the other's saves, across compactions.
        assert_eq!(a.read().unwrap(), b.read().unwrap(), "after save {i}");
    }
    let world = show(&dir).unwrap();
    assert_eq!(world.vm("vm-0001").unwrap().days_in_recovery, 63);
    assert_eq!(world.vm("vm-0002").unwrap().days_in_recovery, 63);
}

#[test]
fn a_change_not_saved_is_forgotten() {
    let (_tmp, dir) = store_lab(2);
    let lab = Lab::open(&dir).unwrap();
    {
        let mut locked = lab.lock().unwrap();
        locked.vm_mut("vm-0001").unwrap().days_in_recovery = 99;
        locked.primary_mut().connected = false;
        // Dropped without a save (an action that failed halfway).
    }
    let world = lab.read().unwrap();
    assert_eq!(world.vm("vm-0001").unwrap().days_in_recovery, 3);
    assert!(world.primary.connected);
    assert_eq!(world, show(&dir).unwrap());
}

#[test]
fn a_torn_last_line_is_ignored_then_cut_off_and_a_damaged_one_is_an_error() {
    let (_tmp, dir) = store_lab(2);
    let lab = Lab::open(&dir).unwrap();
    bump(&lab, "vm-0000");
    let path = dir.join(format!("{JOURNAL_PREFIX}0"));
    let whole = fs::read(&path).unwrap();
    let expected = show(&dir).unwrap();

    // A crash halfway through the next line: readers see the world as saved.
    let torn = &whole[..whole.len() / 2];
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, torn).unwrap();
    assert_eq!(show(&dir).unwrap(), expected);
    // Torn with its end of line (a lost page): still ignored.
    std::io::Write::write_all(&mut file, b"\n").unwrap();
    assert_eq!(show(&dir).unwrap(), expected);

    // The next save cuts it off before appending.
    let fresh = Lab::open(&dir).unwrap();
    bump(&fresh, "vm-0001");
    let lines = fs::read(&path).unwrap();
    assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 2);
    assert_eq!(&lines[..whole.len()], &whole[..]);
    let world = show(&dir).unwrap();
    assert_eq!(world.vm("vm-0001").unwrap().days_in_recovery, 4);

    // A damaged line with a whole one after it is corruption, named.
    let mut damaged = lines.clone();
    damaged[40] ^= 1;
    fs::write(&path, &damaged).unwrap();
    let e = show(&dir).unwrap_err();
    assert!(
        e.to_string().contains(&path.display().to_string())
            && e.to_string().contains("damaged")
            && e.to_string().contains("lab init PLAN --force"),
        "{e}"
    );
}

#[test]
fn lab_init_force_removes_the_old_journal() {
    let (_tmp, dir) = store_lab(2);
    let lab = Lab::open(&dir).unwrap();
    bump(&lab, "vm-0000");
    assert_eq!(journals(&dir).len(), 1);
    let opts = InitOptions {
        disk_size: 4096,
        force: true,
        ..InitOptions::default()
    };
    init(&dir, &plan_of(2), &opts).unwrap();
    assert!(journals(&dir).is_empty());
    assert_eq!(
        show(&dir).unwrap().vm("vm-0000").unwrap().days_in_recovery,
        3
    );
    // A Lab opened before sees the new world, not its cached one.
    assert_eq!(lab.read().unwrap(), show(&dir).unwrap());
}

#[test]
fn steps_read_only_what_changed_never_the_whole_world_again() {
    let (_tmp, dir) = store_lab(3);
    let lab = Lab::open(&dir).unwrap();
    assert_eq!(lab.loads(), 1);
    // A change dropped unsaved is undone in place.
    {
        let mut locked = lab.lock().unwrap();
        locked.vm_mut("vm-0000").unwrap().days_in_recovery = 50;
    }
    assert_eq!(lab.vm("vm-0000").unwrap().days_in_recovery, 3);
    // A save that changes nothing writes nothing.
    {
        let mut locked = lab.lock().unwrap();
        locked.vm_mut("vm-0001").unwrap().days_in_recovery = 3;
        locked.primary_mut().connected = true;
        locked.save().unwrap();
    }
    assert!(journals(&dir).is_empty());
    // Saves of this lab and of another one are read as lines.
    bump(&lab, "vm-0002");
    bump(&Lab::open(&dir).unwrap(), "vm-0001");
    let world = lab.read().unwrap();
    assert_eq!(world.vm("vm-0001").unwrap().days_in_recovery, 4);
    assert_eq!(world.vm("vm-0002").unwrap().days_in_recovery, 4);
    assert_eq!(lab.loads(), 1, "the world was read whole again");
    assert_eq!(world, show(&dir).unwrap());
}
