//! Whole failbacks on the lab through the binary, as a user runs them. Every
//! case ends with a `plan` that must report nothing to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A lab and a state directory in a temporary folder, with one plan.
struct Case {
    dir: tempfile::TempDir,
    plan: PathBuf,
}

const PLAN: &str = "\
apiVersion: failback/v1
kind: FailbackPlan
metadata:
  name: case
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
    commit: auto
  groups:
    - name: data
      vms:
        - name: db-01
          host: hv-01
          networks: [{ vswitch: Backup }]
          verify: { command: [\"true\"], timeout: 10s }
    - name: app
      vms:
        - name: app-01
          host: hv-02
          networks: [{ vswitch: Production }]
          verify: { command: [\"true\"], timeout: 10s }
        - name: app-02
          host: hv-02
          sync: full
          verify: { command: [\"true\"], timeout: 10s }
";

impl Case {
    fn new(plan: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.yaml");
        std::fs::write(&path, plan).unwrap();
        Case { dir, plan: path }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_failback"));
        c.args(args)
            .arg("--lab")
            .arg(self.dir.path().join("lab"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .env_remove("FAILBACK_PROVIDER")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn plan_path(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    fn init(&self, extra: &[&str]) {
        let mut args = vec!["lab", "init", self.plan_path(), "--disk-size", "1MiB"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "lab init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn apply(&self, extra: &[&str]) -> Output {
        let mut args = vec!["apply", self.plan_path()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn show(&self) -> Value {
        let out = self.run(&["lab", "show", "--format", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn vm(&self, name: &str) -> Value {
        self.show()["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    }

    /// `plan --detailed-exitcode` must say: nothing to do.
    fn assert_converged(&self) {
        let out = self.run(&[
            "plan",
            self.plan_path(),
            "--detailed-exitcode",
            "--format",
            "json",
        ]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "plan is not empty: {json:#}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json["converged"], true);
    }

    /// The lab's own log: every power-on follows a verification of every
    /// disk of that VM against the digest recorded at shutdown.
    fn assert_no_unverified_boot(&self) {
        let log =
            std::fs::read_to_string(self.dir.path().join("lab/events.jsonl")).unwrap_or_default();
        let mut verified: std::collections::HashSet<(String, String)> = Default::default();
        let mut boots = 0;
        for line in log.lines() {
            let e: Value = serde_json::from_str(line).unwrap();
            let vm = e["vm"].as_str().unwrap_or_default().to_owned();
            match e["event"].as_str() {
                Some("verified") => {
                    assert_eq!(
                        e["shutdownDigest"], e["primaryDigest"],
                        "a verification record with unequal digests: {e}"
                    );
                    verified.insert((vm, e["disk"].as_str().unwrap_or_default().to_owned()));
                }
                Some("power-on") => {
                    boots += 1;
                    for disk in e["disks"].as_array().unwrap() {
                        assert!(
                            verified.contains(&(vm.clone(), disk.as_str().unwrap().to_owned())),
                            "{vm} powered on without verifying {disk}"
                        );
                    }
                }
                _ => {}
            }
        }
        assert!(boots > 0 || log.is_empty(), "no power-on recorded");
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn a_whole_failback_converges_and_a_second_run_changes_nothing() {
    let case = Case::new(PLAN);
    case.init(&[]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    for vm in ["db-01", "app-01", "app-02"] {
        let v = case.vm(vm);
        assert_eq!(v["state"], "protected", "{v:#}");
        assert_eq!(v["protection"], "primary-to-recovery");
        assert!(v["downtimeMs"].is_u64(), "downtime recorded: {v:#}");
    }
    let again = case.apply(&["--format", "json"]);
    assert_eq!(code(&again), Some(0), "{}", stderr(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        !text.contains("\"step-started\""),
        "a converged plan takes no step:\n{text}"
    );
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(e["version"], 1);
        assert!(e["time"].is_string());
    }
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn apply_creates_the_lab_when_there_is_none() {
    let case = Case::new(PLAN);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("creating one"), "{}", stderr(&out));
    case.assert_converged();
}

#[test]
fn gates_wait_for_approval() {
    let plan = PLAN.replace(
        "    commit: auto\n",
        "    commit: manual\n    completion: manual\n",
    );
    let case = Case::new(&plan);
    case.init(&[]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert_eq!(case.vm("db-01")["state"], "awaiting-completion");
    // A full sync has no completion gate: it waits at commit.
    let out = case.run(&["status", case.plan_path(), "--format", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vms"][0]["waiting"], "completion", "{status:#}");

    let out = case.run(&["approve", case.plan_path(), "--gate", "completion"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = case.apply(&[]);
    assert_eq!(
        code(&out),
        Some(3),
        "stops at the commit gate: {}",
        stderr(&out)
    );
    assert_eq!(case.vm("db-01")["state"], "commit-pending");
    assert_eq!(
        case.vm("db-01")["recovery"]["exists"],
        true,
        "never deleted before commit"
    );

    let out = case.apply(&["--approve", "commit"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    case.assert_converged();
}

#[test]
fn delta_with_concurrent_guest_writes_loses_nothing() {
    let plan = PLAN.replace("    commit: auto\n", "    commit: never\n");
    let case = Case::new(&plan);
    case.init(&["--latency", "150"]);
    let mut apply = case
        .cmd(&["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut writes = 0;
    while apply.try_wait().unwrap().is_none() {
        // Refused once the VM is shut down: both outcomes are expected.
        let out = case.run(&[
            "lab",
            "write",
            "db-01",
            "--blocks",
            "16",
            "--seed",
            &writes.to_string(),
        ]);
        if out.status.success() {
            writes += 1;
        }
    }
    assert_eq!(apply.wait().unwrap().code(), Some(0));
    assert!(writes > 0, "no guest write landed while apply ran");
    let vm = case.vm("db-01");
    assert_eq!(vm["state"], "commit-pending");
    for (r, p) in vm["recovery"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(vm["primary"]["disks"].as_array().unwrap())
    {
        assert!(
            same_bytes(
                Path::new(r["path"].as_str().unwrap()),
                Path::new(p["path"].as_str().unwrap())
            ),
            "primary disk differs from the recovery disk at shutdown"
        );
    }
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn lab_write_is_refused_when_the_vm_is_not_running_in_recovery() {
    let case = Case::new(PLAN);
    case.init(&[]);
    assert_eq!(code(&case.apply(&[])), Some(0));
    let out = case.run(&["lab", "write", "db-01"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
}

#[test]
fn a_disconnected_site_blocks_and_reconnecting_resumes() {
    let case = Case::new(PLAN);
    case.init(&[]);
    assert_eq!(code(&case.run(&["lab", "fault", "disconnect"])), Some(0));
    let out = case.run(&["plan", case.plan_path(), "--format", "json"]);
    assert_eq!(code(&out), Some(1));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["vms"][0]["blocked"]["code"], "primary-disconnected");
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("db-01"));
    assert_eq!(
        case.vm("db-01")["state"],
        "running-in-recovery",
        "nothing changed"
    );
    assert_eq!(code(&case.run(&["lab", "fault", "connect"])), Some(0));
    assert_eq!(code(&case.apply(&[])), Some(0));
    case.assert_converged();
}

#[test]
fn a_missing_vswitch_blocks_before_anything_changes() {
    let case = Case::new(PLAN);
    case.init(&[]);
    assert_eq!(
        code(&case.run(&["lab", "fault", "remove-vswitch", "hv-01", "Backup"])),
        Some(0)
    );
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vswitch-missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(case.vm("db-01")["state"], "running-in-recovery");
    assert_eq!(
        case.vm("app-01")["state"],
        "running-in-recovery",
        "later groups are held back"
    );
    assert_eq!(code(&case.run(&["lab", "fault", "clear"])), Some(0));
    assert_eq!(code(&case.apply(&[])), Some(0));
    case.assert_converged();
}

#[test]
fn a_stuck_shutdown_stops_with_the_recovery_vm_intact() {
    let case = Case::new(PLAN);
    case.init(&[]);
    assert_eq!(
        code(&case.run(&["lab", "fault", "stuck-shutdown", "db-01"])),
        Some(0)
    );
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let vm = case.vm("db-01");
    assert_eq!(vm["recovery"]["running"], true, "{vm:#}");
    assert_eq!(vm["primary"]["running"], false);
    assert_eq!(code(&case.run(&["lab", "fault", "clear"])), Some(0));
    assert_eq!(code(&case.apply(&[])), Some(0));
    case.assert_converged();
    case.assert_no_unverified_boot();
}

#[test]
fn alternate_location_creates_the_vm_and_a_missing_vm_needs_it() {
    let case = Case::new(PLAN);
    case.init(&["--missing", "app-01"]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm-missing"));
    assert_eq!(
        case.vm("db-01")["state"],
        "protected",
        "the group before is unaffected"
    );

    let plan = PLAN.replace("          host: hv-02\n          networks: [{ vswitch: Production }]\n", "          host: hv-02\n          createIfMissing: true\n          networks: [{ vswitch: Production }]\n");
    std::fs::write(&case.plan, plan).unwrap();
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let vm = case.vm("app-01");
    assert_eq!(vm["primary"]["exists"], true);
    assert_eq!(vm["primary"]["host"], "hv-02");
    case.assert_converged();
}

#[test]
fn killed_at_every_step_boundary_the_same_command_converges() {
    // 3 VMs x 4 actions (+ restarts) = at most 12 steps in one clean run.
    for n in 1..=12 {
        let case = Case::new(PLAN);
        case.init(&[]);
        let out = case
            .cmd(&["apply", case.plan_path()])
            .env("FAILBACK_TEST_ABORT_AT_STEP", n.to_string())
            .output()
            .unwrap();
        if out.status.success() {
            continue;
        }
        assert_eq!(
            out.status.code(),
            None,
            "step {n}: killed by a signal, not an exit: {}",
            stderr(&out)
        );
        let again = case.apply(&[]);
        assert_eq!(
            code(&again),
            Some(0),
            "after a kill at step {n}: {}",
            stderr(&again)
        );
        case.assert_converged();
        case.assert_no_unverified_boot();
    }
}

#[test]
fn killed_during_a_sync_the_same_command_converges() {
    for bytes in [4096, 300_000, 700_000] {
        let plan = PLAN.replace("    commit: auto\n", "    commit: never\n");
        let case = Case::new(&plan);
        case.init(&[]);
        let out = case
            .cmd(&["apply", case.plan_path()])
            .env("FAILBACK_TEST_ABORT_AT_SYNC_BYTES", bytes.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            None,
            "aborted mid-sync at {bytes}: {}",
            stderr(&out)
        );
        let again = case.apply(&[]);
        assert_eq!(code(&again), Some(0), "{}", stderr(&again));
        let vm = case.vm("app-02");
        for (r, p) in vm["recovery"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .zip(vm["primary"]["disks"].as_array().unwrap())
        {
            assert!(same_bytes(
                Path::new(r["path"].as_str().unwrap()),
                Path::new(p["path"].as_str().unwrap())
            ));
        }
        case.assert_converged();
        case.assert_no_unverified_boot();
    }
}

#[test]
fn two_concurrent_applies_one_acts_the_other_exits_75() {
    let case = Case::new(PLAN);
    case.init(&["--latency", "300"]);
    let mut first = case
        .cmd(&["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first holds the lock (its owner record is written).
    let lock = case.dir.path().join("state/case/run.lock");
    while std::fs::read_to_string(&lock).map_or(true, |t| t.is_empty()) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first apply ended before taking the lock"
        );
        std::thread::yield_now();
    }
    let second = case.apply(&[]);
    assert_eq!(code(&second), Some(75), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("pid"),
        "names the owner: {}",
        stderr(&second)
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    case.assert_converged();
}
