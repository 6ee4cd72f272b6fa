//! The crash battery (issue 4, docs/reliability.md): a 3-VM, 2-group plan
//! is killed at every step boundary, every write of the lab's world store
//! (before and after its atomic rename) and several sync offsets, then run
//! again (and, for a subset, killed again during that recovery run). After
//! each, the same command must converge with:
//!
//! - `plan --detailed-exitcode` exiting 0;
//! - every primary disk byte-equal to its recovery disk as it was at
//!   shutdown (and, with no guest writes, to the recovery disk as `lab init`
//!   made it): no data lost;
//! - in the lab's own `events.jsonl`, every `power-on` preceded by a
//!   `verified` record of each of the VM's disks whose digests equal the
//!   digest powered on, and every `commit` preceded by a `power-on`: no
//!   unverified boot, no recovery copy deleted before the primary started.
//!
//! The default `cargo test` runs a quick subset and a few random kills. The
//! whole enumeration:
//!
//! ```text
//! cargo test --test main crash_battery -- --ignored --nocapture
//! ```
//!
//! Random kills print their seed; `FAILBACK_RELIABILITY_SEED=S` replays a
//! run and `FAILBACK_RELIABILITY_RUNS=N` sets how many:
//!
//! ```text
//! FAILBACK_RELIABILITY_SEED=S cargo test --test main reliability::random_kills -- --nocapture
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{Case, stderr, stdout};

// ------------------------------------------------------------------ the plans

/// A 3-VM, 2-group plan; `defaults` is spliced into `spec.defaults`.
fn plan_text(defaults: &str, app_02_extra: &str) -> String {
    format!(
        "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: reliability
spec:
  primary:
    site: dc1
    hosts:
      - name: hv-01
        vswitches: [Production, Backup]
      - name: hv-02
        vswitches: [Production]
  recovery:
    site: azure
  defaults:
{defaults}
  groups:
    - name: data
      vms:
        - name: db-01
          host: hv-01
          networks: [{{ vswitch: Backup }}]
          verify: {{ command: [\"true\"], timeout: 10s }}
    - name: app
      vms:
        - name: app-01
          host: hv-02
          networks: [{{ vswitch: Production }}]
          verify: {{ command: [\"true\"], timeout: 10s }}
        - name: app-02
          host: hv-02
          verify: {{ command: [\"true\"], timeout: 10s }}
{app_02_extra}"
    )
}

const VMS: [&str; 3] = ["db-01", "app-01", "app-02"];

/// What is failed back and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Every VM `delta`, `commit: never` (the recovery disks stay to compare).
    Delta,
    /// Every VM `full`, `commit: never`.
    Full,
    /// Mixed (`app-02` full), `commit: auto` and reverse replication: the
    /// crash points of commit and reverse replication.
    Commit,
}

impl Variant {
    pub(crate) fn plan(self) -> String {
        match self {
            Variant::Delta => plan_text("    sync: delta\n    commit: never", ""),
            Variant::Full => plan_text("    sync: full\n    commit: never", ""),
            Variant::Commit => plan_text("    commit: auto", "          sync: full\n"),
        }
    }

    fn end_state(self) -> &'static str {
        match self {
            Variant::Delta | Variant::Full => "commit-pending",
            Variant::Commit => "protected",
        }
    }
}

// ------------------------------------------------------------ crash points

/// Where a run is killed (each is a debug-build test hook of the binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Point {
    /// Just before the N-th step (`FAILBACK_TEST_ABORT_AT_STEP`).
    Step(u32),
    /// At the N-th world write, its temporary file written, before the rename.
    WorldWrite(u32),
    /// At the N-th world write, just after the rename.
    WorldWriteAfterRename(u32),
    /// Inside the first sync that reaches this source offset.
    SyncBytes(u64),
}

impl Point {
    fn env(self) -> (&'static str, String) {
        match self {
            Point::Step(n) => ("FAILBACK_TEST_ABORT_AT_STEP", n.to_string()),
            Point::WorldWrite(n) => ("FAILBACK_TEST_ABORT_AT_WORLD_WRITE", n.to_string()),
            Point::WorldWriteAfterRename(n) => (
                "FAILBACK_TEST_ABORT_AT_WORLD_WRITE",
                format!("{n}:after-rename"),
            ),
            Point::SyncBytes(b) => ("FAILBACK_TEST_ABORT_AT_SYNC_BYTES", b.to_string()),
        }
    }

    fn nth(self, n: u32) -> Point {
        match self {
            Point::Step(_) => Point::Step(n),
            Point::WorldWrite(_) => Point::WorldWrite(n),
            Point::WorldWriteAfterRename(_) => Point::WorldWriteAfterRename(n),
            Point::SyncBytes(b) => Point::SyncBytes(b),
        }
    }
}

/// How a run with a crash point ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    /// Killed by the hook (a signal, as under `kill -9`).
    Killed,
    /// The point lies beyond the run: it finished (exit 0).
    Finished,
}

/// One scenario: a crash, maybe a second crash in the recovery run, maybe
/// guest writes in between, then a clean run and every check.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) variant: Variant,
    pub(crate) first: Point,
    pub(crate) second: Option<Point>,
    /// `lab write` seeds run after the first crash (VMs still running in
    /// the recovery site take them; the others refuse).
    pub(crate) guest_writes: Vec<u64>,
    pub(crate) lab_seed: u64,
    /// `FAILBACK_TEST_COMPACT_AT` for every run: whole-world writes among
    /// the journal appends.
    pub(crate) compact_at: Option<u64>,
}

/// What a scenario did, for the figures.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) processes: u32,
    pub(crate) kills: u32,
    pub(crate) first_killed: bool,
}

fn run_with_point(case: &Case, point: Point, context: &str) -> Ran {
    let out = case.apply_with(&[point.env()]);
    match out.status.code() {
        None => Ran::Killed,
        Some(0) => Ran::Finished,
        Some(code) => panic!(
            "{context}: the run with {point:?} exited {code} instead of being killed or finishing:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        ),
    }
}

/// The bytes of every recovery disk, by (VM, disk).
type Disks = BTreeMap<(String, String), Vec<u8>>;

fn disks(world: &Value, side: &str) -> Disks {
    let mut out = Disks::new();
    for vm in world["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap().to_owned();
        for d in vm[side]["disks"].as_array().into_iter().flatten() {
            let path = Path::new(d["path"].as_str().unwrap());
            out.insert(
                (name.clone(), d["name"].as_str().unwrap().to_owned()),
                std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            );
        }
    }
    out
}

/// Runs one scenario and checks every promise; panics naming the scenario.
pub(crate) fn run_scenario(s: &Scenario) -> Tally {
    let context = format!("{s:?}");
    let mut case = Case::new(&s.variant.plan());
    if let Some(bytes) = s.compact_at {
        case = case.with_env("FAILBACK_TEST_COMPACT_AT", &bytes.to_string());
    }
    case.init(&["--seed", &s.lab_seed.to_string()]);
    let initial = disks(&case.show(), "recovery");
    let mut tally = Tally::default();

    tally.processes += 1;
    let first = run_with_point(&case, s.first, &context);
    tally.first_killed = first == Ran::Killed;
    if first == Ran::Killed {
        tally.kills += 1;
        assert_world_intact(&case, &context);
        for seed in &s.guest_writes {
            // Refused (exit 1) once the VM is off in the recovery site.
            let vm = VMS[(*seed % 3) as usize];
            let out = case.run(&[
                "lab",
                "write",
                vm,
                "--blocks",
                "8",
                "--seed",
                &seed.to_string(),
            ]);
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{context}: {}",
                stderr(&out)
            );
        }
        if let Some(second) = s.second {
            tally.processes += 1;
            if run_with_point(&case, second, &context) == Ran::Killed {
                tally.kills += 1;
                assert_world_intact(&case, &context);
            }
        }
        tally.processes += 1;
        let out = case.apply_with(&[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{context}: the clean run after the crash did not converge:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    check_promises(&case, s, &initial, &context);
    tally
}

/// After a kill: `world.json` is whole, valid JSON the lab accepts.
fn assert_world_intact(case: &Case, context: &str) {
    let bytes = std::fs::read(case.lab_dir().join("world.json")).unwrap();
    let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
    assert!(
        parsed.is_ok(),
        "{context}: world.json is not valid JSON after a kill"
    );
    let out = case.run(&["lab", "show", "--format", "json"]);
    assert!(out.status.success(), "{context}: {}", stderr(&out));
}

/// Every promise of the battery, on a converged case.
/// [`check_promises`] after one clean run of `variant` (no crash, no
/// guest writes): what the fault scenarios check once the fault is gone.
fn check_single_run(case: &Case, variant: Variant, initial: &Disks, context: &str) {
    let s = Scenario {
        variant,
        first: Point::Step(1),
        second: None,
        guest_writes: Vec::new(),
        lab_seed: 0,
        compact_at: None,
    };
    check_promises(case, &s, initial, context);
}

fn check_promises(case: &Case, s: &Scenario, initial: &Disks, context: &str) {
    case.assert_converged_as(context);
    let world = case.show();
    for vm in world["vms"].as_array().unwrap() {
        assert_eq!(vm["state"], s.variant.end_state(), "{context}: {vm:#}");
        assert_eq!(vm["primary"]["running"], true, "{context}: {vm:#}");
    }
    let primary = disks(&world, "primary");
    assert_eq!(
        primary.len(),
        initial.len(),
        "{context}: a primary disk is missing"
    );
    match s.variant {
        Variant::Delta | Variant::Full => {
            // The recovery disks are kept (`commit: never`) and nothing has
            // written them since shutdown: the primary must hold them.
            let recovery = disks(&world, "recovery");
            for (key, bytes) in &recovery {
                assert!(
                    primary.get(key) == Some(bytes),
                    "{context}: primary disk {key:?} differs from the recovery disk at shutdown"
                );
                if s.guest_writes.is_empty() {
                    assert!(
                        initial.get(key) == Some(bytes),
                        "{context}: recovery disk {key:?} changed with no guest write"
                    );
                }
            }
        }
        Variant::Commit => {
            for vm in world["vms"].as_array().unwrap() {
                assert_eq!(vm["recovery"]["exists"], false, "{context}: {vm:#}");
            }
            for (key, bytes) in initial {
                assert!(
                    primary.get(key) == Some(bytes),
                    "{context}: primary disk {key:?} differs from the recovery disk"
                );
            }
            let replica: Disks = world["vms"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|vm| {
                    let name = vm["name"].as_str().unwrap().to_owned();
                    vm["replica"]["disks"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |d| {
                            (
                                (name.clone(), d["name"].as_str().unwrap().to_owned()),
                                std::fs::read(d["path"].as_str().unwrap()).unwrap(),
                            )
                        })
                })
                .collect();
            if !replica.is_empty() {
                assert_eq!(
                    replica, primary,
                    "{context}: the replica differs from the primary"
                );
            }
        }
    }
    check_events(&case.events(), context);
}

/// The lab's own log: every `power-on` follows, for each disk powered on,
/// a `verified` record (the last one for that disk) whose shutdown and
/// primary digests both equal the digest powered on, and a `recovery-off`
/// of that VM; every `commit` follows a `power-on` of that VM.
pub(crate) fn check_events(events: &[Value], context: &str) {
    let mut last_verified: HashMap<(String, String), (String, String)> = HashMap::new();
    let mut off: HashMap<String, bool> = HashMap::new();
    let mut powered: HashMap<String, bool> = HashMap::new();
    for e in events {
        let vm = e["vm"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str().unwrap_or_default() {
            "recovery-off" => {
                off.insert(vm, true);
            }
            "verified" => {
                assert_eq!(
                    e["shutdownDigest"], e["primaryDigest"],
                    "{context}: a `verified` record with unequal digests: {e}"
                );
                last_verified.insert(
                    (vm, e["disk"].as_str().unwrap().to_owned()),
                    (
                        e["shutdownDigest"].as_str().unwrap().to_owned(),
                        e["primaryDigest"].as_str().unwrap().to_owned(),
                    ),
                );
            }
            "verification-mismatch" => {
                // A later `verified` must replace it before any power-on.
                last_verified.remove(&(vm, e["disk"].as_str().unwrap().to_owned()));
            }
            "power-on" => {
                assert!(
                    off.get(&vm).copied().unwrap_or(false),
                    "{context}: {vm} powered on with no recovery-off logged before: {e}"
                );
                let disks = e["disks"].as_array().unwrap();
                assert!(!disks.is_empty(), "{context}: a power-on with no disk: {e}");
                for disk in disks {
                    let disk = disk.as_str().unwrap().to_owned();
                    let digest = e["digests"][&disk].as_str().unwrap_or_default();
                    let Some((shutdown, found)) = last_verified.get(&(vm.clone(), disk.clone()))
                    else {
                        panic!("{context}: {vm} powered on without verifying {disk}: {e}");
                    };
                    assert!(
                        shutdown == digest && found == digest,
                        "{context}: {vm} powered on {disk} with digest {digest}, verified {shutdown}/{found}"
                    );
                }
                powered.insert(vm, true);
            }
            "commit" => {
                assert!(
                    powered.get(&vm).copied().unwrap_or(false),
                    "{context}: {vm} committed (recovery copy deleted) before any power-on: {e}"
                );
            }
            _ => {}
        }
    }
    for vm in VMS {
        assert!(
            powered.get(vm).copied().unwrap_or(false),
            "{context}: no power-on of {vm} in events.jsonl"
        );
    }
}

// ------------------------------------------------------------ enumeration

/// The crash families, each enumerated from 1 until a run finishes unkilled.
const FAMILIES: [Point; 3] = [
    Point::Step(1),
    Point::WorldWrite(1),
    Point::WorldWriteAfterRename(1),
];

/// Sync offsets: the first block, the middle, the last block of a 1 MiB disk.
const SYNC_OFFSETS: [u64; 4] = [0, 4096, 512 * 1024, 1024 * 1024 - 4096];

/// Kills `variant` at every point of `family` (or at `only`), returns how
/// many points were killed and the tallies.
fn enumerate(
    variant: Variant,
    family: Point,
    only: Option<&[u32]>,
    compact_at: Option<u64>,
) -> (u32, Tally) {
    let mut total = Tally::default();
    let mut killed = 0;
    let limit = 200;
    let points: Vec<u32> = match only {
        Some(list) => list.to_vec(),
        None => (1..=limit).collect(),
    };
    for n in points {
        let s = Scenario {
            variant,
            first: family.nth(n),
            second: None,
            guest_writes: Vec::new(),
            lab_seed: u64::from(n),
            compact_at,
        };
        let t = run_scenario(&s);
        total.processes += t.processes;
        total.kills += t.kills;
        if !t.first_killed {
            break;
        }
        killed += 1;
    }
    assert!(killed > 0, "{variant:?} {family:?}: no point was reached");
    assert!(killed < limit, "{variant:?} {family:?}: the run never ends");
    (killed, total)
}

fn report(what: &str, killed: u32, tally: Tally) {
    println!(
        "reliability: {what}: {killed} points killed, {} processes, {} kills, all converged",
        tally.processes, tally.kills
    );
}

/// The quick subset `cargo test` runs: the first points of each family, a
/// sync offset and one second crash, in both data variants.
#[test]
fn quick_crash_points_converge_without_loss() {
    for variant in [Variant::Delta, Variant::Full] {
        for family in FAMILIES {
            let (killed, tally) = enumerate(variant, family, Some(&[1, 2, 5]), None);
            report(&format!("quick {variant:?} {family:?}"), killed, tally);
        }
        run_scenario(&Scenario {
            variant,
            first: Point::SyncBytes(512 * 1024),
            second: Some(Point::WorldWrite(2)),
            guest_writes: Vec::new(),
            lab_seed: 7,
            compact_at: None,
        });
    }
}

/// A journal limit that makes about every third world write a whole new
/// world (a save's line is about 1 KiB for these plans).
const COMPACT_EVERY_FEW_SAVES: u64 = 2500;

/// Crashes at world writes when some of them are whole new worlds (the
/// lab folds its journal): before and after the rename, and halfway
/// through a journal line, the next run converges without loss.
#[test]
fn crash_points_among_whole_world_writes_converge_without_loss() {
    for family in [Point::WorldWrite(1), Point::WorldWriteAfterRename(1)] {
        let only: Vec<u32> = (1..=9).collect();
        let (killed, tally) = enumerate(
            Variant::Delta,
            family,
            Some(&only),
            Some(COMPACT_EVERY_FEW_SAVES),
        );
        report(&format!("compacting Delta {family:?}"), killed, tally);
    }
}

#[test]
#[ignore = "the whole enumeration (about a minute): cargo test --test main crash_battery -- --ignored"]
fn crash_battery_every_point_delta() {
    every_point(Variant::Delta);
}

#[test]
#[ignore = "the whole enumeration (about a minute): cargo test --test main crash_battery -- --ignored"]
fn crash_battery_every_point_full() {
    every_point(Variant::Full);
}

#[test]
#[ignore = "the whole enumeration (about a minute): cargo test --test main crash_battery -- --ignored"]
fn crash_battery_every_point_with_commit() {
    every_point(Variant::Commit);
}

fn every_point(variant: Variant) {
    for family in FAMILIES {
        let (killed, tally) = enumerate(variant, family, None, None);
        report(&format!("{variant:?} {family:?}"), killed, tally);
    }
    let mut tally = Tally::default();
    for (i, offset) in SYNC_OFFSETS.into_iter().enumerate() {
        let t = run_scenario(&Scenario {
            variant,
            first: Point::SyncBytes(offset),
            second: None,
            guest_writes: Vec::new(),
            lab_seed: i as u64,
            compact_at: None,
        });
        assert!(
            t.first_killed,
            "{variant:?}: sync offset {offset} not reached"
        );
        tally.processes += t.processes;
        tally.kills += t.kills;
    }
    report(
        &format!("{variant:?} sync offsets"),
        SYNC_OFFSETS.len() as u32,
        tally,
    );
}

/// A second crash during the recovery run, for a matrix of first and
/// second points.
#[test]
#[ignore = "second crashes (about a minute): cargo test --test main crash_battery -- --ignored"]
fn crash_battery_second_crash_during_recovery() {
    let firsts = [
        Point::Step(1),
        Point::Step(3),
        Point::WorldWrite(4),
        Point::WorldWriteAfterRename(7),
        Point::SyncBytes(300_000),
    ];
    let seconds = [
        Point::Step(1),
        Point::Step(2),
        Point::WorldWrite(1),
        Point::WorldWrite(3),
        Point::WorldWriteAfterRename(2),
        Point::SyncBytes(4096),
    ];
    for variant in [Variant::Delta, Variant::Full, Variant::Commit] {
        let mut tally = Tally::default();
        let mut n = 0;
        for first in firsts {
            for second in seconds {
                let t = run_scenario(&Scenario {
                    variant,
                    first,
                    second: Some(second),
                    guest_writes: Vec::new(),
                    lab_seed: n,
                    compact_at: None,
                });
                n += 1;
                tally.processes += t.processes;
                tally.kills += t.kills;
            }
        }
        report(&format!("{variant:?} second crashes"), n as u32, tally);
    }
}

// ------------------------------------------------------------ random kills

fn random_point(rng: &mut impl Rng, variant: Variant) -> Point {
    // Bounds a little past the longest clean run of each family, so that
    // some runs also finish unkilled.
    // (Clean runs take 6, 3 and 11 steps; 18, 12 and 28 world writes.)
    let (steps, writes) = match variant {
        Variant::Delta => (7, 20),
        Variant::Full => (4, 14),
        Variant::Commit => (12, 30),
    };
    match rng.random_range(0..4) {
        0 => Point::Step(rng.random_range(1..=steps)),
        1 => Point::WorldWrite(rng.random_range(1..=writes)),
        2 => Point::WorldWriteAfterRename(rng.random_range(1..=writes)),
        _ => Point::SyncBytes(rng.random_range(0..1024 * 1024)),
    }
}

/// A random scenario, all drawn from `seed`.
pub(crate) fn random_scenario(seed: u64) -> Scenario {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let variant = match rng.random_range(0..3) {
        0 => Variant::Delta,
        1 => Variant::Full,
        _ => Variant::Commit,
    };
    let first = random_point(&mut rng, variant);
    let second = rng
        .random_bool(0.5)
        .then(|| random_point(&mut rng, variant));
    // Guest writes only where the recovery disks stay to compare.
    let guest_writes = if variant != Variant::Commit && rng.random_bool(0.5) {
        (0..rng.random_range(1..4)).map(|_| rng.random()).collect()
    } else {
        Vec::new()
    };
    Scenario {
        variant,
        first,
        second,
        guest_writes,
        lab_seed: rng.random(),
        // Half of them write a whole new world every few saves.
        compact_at: rng.random_bool(0.5).then_some(COMPACT_EVERY_FEW_SAVES),
    }
}

/// Random kills: `FAILBACK_RELIABILITY_RUNS` scenarios (default 3) drawn
/// from a seed that is printed, taken from `FAILBACK_RELIABILITY_SEED` when
/// set (a failure prints the seed to replay it).
#[test]
fn random_kills() {
    let seed = std::env::var("FAILBACK_RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| rand::rng().random());
    let runs: u64 = std::env::var("FAILBACK_RELIABILITY_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("reliability: random kills, FAILBACK_RELIABILITY_SEED={seed}, {runs} runs");
    let mut tally = Tally::default();
    for i in 0..runs {
        let scenario_seed = seed.wrapping_add(i);
        let s = random_scenario(scenario_seed);
        let t = std::panic::catch_unwind(|| run_scenario(&s)).unwrap_or_else(|e| {
            eprintln!(
                "reliability: run {i} failed; replay it with FAILBACK_RELIABILITY_SEED={scenario_seed} FAILBACK_RELIABILITY_RUNS=1 ({s:?})"
            );
            std::panic::resume_unwind(e)
        });
        tally.processes += t.processes;
        tally.kills += t.kills;
    }
    println!(
        "reliability: random kills, seed {seed}: {runs} runs, {} processes, {} kills, all converged",
        tally.processes, tally.kills
    );
}

// ------------------------------------------------------------ I/O errors

/// No leftover temporary world file in the lab directory.
fn temp_files(case: &Case) -> Vec<String> {
    std::fs::read_dir(case.lab_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn io_error_case(var: &str, n: u32, cause: &str) {
    let context = format!("{var}={n}");
    let case = Case::new(&Variant::Delta.plan());
    case.init(&[]);
    let initial = disks(&case.show(), "recovery");
    let world_path = case.lab_dir().join("world.json");
    let before = std::fs::read(&world_path).unwrap();
    let out = case.apply_with(&[(var, n.to_string())]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{context}: {all}");
    // A clear error: the VM, the step, world.json's path and the cause.
    let path = std::fs::canonicalize(&world_path).unwrap();
    assert!(
        all.contains(&path.display().to_string()),
        "{context}: names the path: {all}"
    );
    assert!(all.contains(cause), "{context}: names the cause: {all}");
    assert!(all.contains("FAILED"), "{context}: names the step: {all}");
    assert!(
        VMS.iter()
            .any(|vm| all.contains(&format!("{vm}: cannot save the lab world"))),
        "{context}: names the VM: {all}"
    );
    // No corrupted world, no litter.
    let after = std::fs::read(&world_path).unwrap();
    assert!(serde_json::from_slice::<Value>(&after).is_ok(), "{context}");
    if n == 1 {
        assert_eq!(
            before, after,
            "{context}: the failed first write changed world.json"
        );
    }
    assert!(
        temp_files(&case).is_empty(),
        "{context}: {:?}",
        temp_files(&case)
    );
    // The fault cleared, the same command converges without loss.
    let out = case.apply_with(&[]);
    assert_eq!(out.status.code(), Some(0), "{context}: {}", stderr(&out));
    check_single_run(&case, Variant::Delta, &initial, &context);
}

#[test]
fn a_full_disk_on_a_world_write_fails_clearly_and_the_next_run_converges() {
    for n in [1, 4, 9] {
        io_error_case(
            "FAILBACK_TEST_FAIL_WORLD_WRITE",
            n,
            "no space left on device",
        );
    }
}

#[test]
fn an_fsync_error_on_a_world_write_fails_clearly_and_the_next_run_converges() {
    for n in [2, 6] {
        io_error_case(
            "FAILBACK_TEST_FAIL_WORLD_FSYNC",
            n,
            "input/output error on fsync",
        );
    }
}

// ------------------------------------------------ I/O errors on disk images

/// A sync of a disk image fails (`var=value`): `apply` exits 1 naming a
/// primary disk's path and the cause, starts no VM and leaves every
/// recovery disk as `lab init` made it; the fault cleared, the next run
/// converges with every promise.
fn disk_error_case(variant: Variant, var: &str, value: &str, cause: &str) {
    let context = format!("{variant:?} {var}={value}");
    let case = Case::new(&variant.plan());
    case.init(&[]);
    let initial = disks(&case.show(), "recovery");
    let out = case.apply_with(&[(var, value.to_owned())]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{context}: {all}");
    assert!(all.contains(cause), "{context}: names the cause: {all}");
    assert!(all.contains("FAILED"), "{context}: names the step: {all}");
    let world = case.show();
    let primary_paths: Vec<String> = world["vms"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|vm| {
            vm["primary"]["disks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        primary_paths.iter().any(|p| all.contains(p.as_str())),
        "{context}: names the disk path (one of {primary_paths:?}): {all}"
    );
    // No VM started; the recovery side intact.
    let events = case.events();
    assert!(
        !events.iter().any(|e| e["event"] == "power-on"),
        "{context}: a VM was powered on after a failed sync: {events:?}"
    );
    for vm in world["vms"].as_array().unwrap() {
        assert_eq!(vm["recovery"]["exists"], true, "{context}: {vm:#}");
        assert_eq!(vm["primary"]["running"], false, "{context}: {vm:#}");
    }
    assert!(
        disks(&world, "recovery") == initial,
        "{context}: a recovery disk changed"
    );
    assert_world_intact(&case, &context);
    // The fault cleared: the same command re-opens, re-syncs and converges.
    let out = case.apply_with(&[]);
    assert_eq!(out.status.code(), Some(0), "{context}: {}", stderr(&out));
    check_single_run(&case, variant, &initial, &context);
}

#[test]
fn a_full_disk_during_a_sync_fails_clearly_and_the_next_run_converges() {
    for variant in [Variant::Delta, Variant::Full] {
        for offset in [0u64, 256 * 1024 + 100] {
            disk_error_case(
                variant,
                "FAILBACK_TEST_FAIL_DISK_WRITE",
                &offset.to_string(),
                "no space left on device",
            );
        }
    }
}

/// The fsync of the first sync's target fails: the run stops there (the
/// file is closed, not fsynced again, and the step is not retried in this
/// run, or a re-opened second sync would have succeeded and the run exited
/// 0); the next run re-opens the disk and syncs it again.
#[test]
fn an_fsync_error_on_a_disk_fails_clearly_and_the_next_run_converges() {
    for variant in [Variant::Delta, Variant::Full] {
        disk_error_case(
            variant,
            "FAILBACK_TEST_FAIL_DISK_FSYNC",
            "1",
            "input/output error on fsync",
        );
    }
}

// ------------------------------------------------ indeterminate outcomes

fn journal(case: &Case) -> Vec<Value> {
    std::fs::read_to_string(case.state_dir().join("reliability/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many `events.jsonl` entries of kind `event` each VM has.
fn count_events(events: &[Value], event: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == event) {
        *counts
            .entry(e["vm"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// An action takes effect and its reply is lost (a timeout): the same
/// `apply` re-observes, sees the effect, and goes on; no action is started
/// twice, and the lab's log shows one shutdown, one power-on and (with
/// commit) one commit per VM.
fn lost_reply_case(variant: Variant, lose: &str) {
    let context = format!("{variant:?} FAILBACK_TEST_LOSE_REPLY={lose}");
    let case = Case::new(&variant.plan());
    case.init(&[]);
    let initial = disks(&case.show(), "recovery");
    let out = case.apply_with(&[("FAILBACK_TEST_LOSE_REPLY", lose.to_owned())]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{context}: {all}");
    assert!(
        all.contains("reply lost"),
        "{context}: the fault did not fire: {all}"
    );
    check_single_run(&case, variant, &initial, &context);

    // The engine started each step at most once per VM.
    let mut started: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in journal(&case)
        .iter()
        .filter(|e| e["event"] == "step-started")
    {
        let key = (
            e["vm"].as_str().unwrap_or_default().to_owned(),
            e["step"].as_str().unwrap_or_default().to_owned(),
        );
        *started.entry(key).or_insert(0) += 1;
    }
    assert!(
        !started.is_empty(),
        "{context}: no step-started in the journal"
    );
    let repeated: Vec<_> = started.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{context}: an action was started again after its reply was lost: {repeated:?}"
    );
    // The lab's own log: no duplicate stop, start or commit.
    let events = case.events();
    let once = |event: &str, expected: usize| {
        let counts = count_events(&events, event);
        for vm in VMS {
            assert_eq!(
                counts.get(vm).copied().unwrap_or(0),
                expected,
                "{context}: `{event}` events of {vm}: {counts:?}"
            );
        }
    };
    once("recovery-off", 1);
    once("power-on", 1);
    once("commit", usize::from(variant == Variant::Commit));
}

#[test]
fn a_lost_reply_is_re_observed_and_no_action_runs_twice() {
    for (variant, lose) in [
        (Variant::Delta, "start-failback"),
        (Variant::Full, "start-failback"),
        (Variant::Delta, "complete"),
        (Variant::Commit, "commit"),
        (Variant::Commit, "reverse-replicate"),
        (
            Variant::Commit,
            "start-failback:2,complete,commit:3,reverse-replicate:2",
        ),
    ] {
        lost_reply_case(variant, lose);
    }
}

// ------------------------------------------------------------ fuzz findings

/// Loads, validates and renders `bytes` every way a command can; returns
/// the panic message, if any.
fn load_and_render(bytes: &[u8]) -> Option<String> {
    use failback::diagnostics::render::{self, HumanStyle};
    use failback::validate::{self, Checked, Origin};
    std::panic::catch_unwind(|| {
        for origin in [Origin::Named, Origin::Discovered] {
            if let Checked::Plan(report, _) = validate::check("input.yaml", bytes, origin) {
                let style = HumanStyle {
                    color: false,
                    unicode: true,
                    width: 100,
                };
                let _ = render::human(&report, style);
                let _ = render::json_file(&report, false);
                let _ = render::github(&report);
                let _ = render::summary_line(&report, false);
            }
        }
    })
    .err()
    .map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Every input the fuzzer found (fuzz/regressions/) loads and renders
/// without a panic.
#[test]
fn fuzz_regressions_load_without_a_panic() {
    let files = crate::support::yaml_files("fuzz/regressions");
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        if let Some(panic) = load_and_render(&bytes) {
            panic!("{}: {panic}", path.display());
        }
    }
}

/// Inputs of fuzz findings still open (fuzz/regressions/open/): they fail
/// until the bug is fixed; then move them to fuzz/regressions/.
#[test]
#[ignore = "open fuzz findings (docs/reliability.md): cargo test --test main open_fuzz_findings -- --ignored"]
fn open_fuzz_findings_load_without_a_panic() {
    let mut failed = Vec::new();
    for path in crate::support::yaml_files("fuzz/regressions/open") {
        let bytes = std::fs::read(&path).unwrap();
        if let Some(panic) = load_and_render(&bytes) {
            failed.push(format!("{}: {panic}", path.display()));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
