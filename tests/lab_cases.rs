//! Whole failbacks through the binary, as a user runs them. Every case ends
//! with a `plan` that must report nothing to do. The cases that make sense
//! through Azure run twice from one scenario body: on the lab provider
//! (`NAME`) and through the Site Recovery emulator with `--provider azure`
//! (`NAME_through_the_emulator`), on the same kind of lab and with the same
//! checks of the lab's world and disk bytes. Where Azure legitimately
//! differs, the scenario says so and asserts the Azure behaviour
//! (docs/azure.md, "Tested against the emulator").

use std::process::Stdio;

use serde_json::Value;

use crate::support::{Case, PLAN, Provider, code, stderr, stdout};

/// Two `#[test]`s for a scenario `fn(Provider)`: one on the lab, one
/// through the emulator.
macro_rules! on_both_providers {
    ($scenario:ident: $lab:ident, $azure:ident) => {
        #[test]
        fn $lab() {
            $scenario(Provider::Lab);
        }

        #[test]
        fn $azure() {
            $scenario(Provider::Azure);
        }
    };
}

on_both_providers!(
    whole_failback:
    a_whole_failback_converges_and_a_second_run_changes_nothing,
    a_whole_failback_converges_and_a_second_run_changes_nothing_through_the_emulator
);

fn whole_failback(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&[]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    for vm in ["db-01", "app-01", "app-02"] {
        let v = case.vm(vm);
        assert_eq!(v["state"], "protected", "{v:#}");
        assert_eq!(v["protection"], "primary-to-recovery");
        // The lab world records the downtime whichever provider drove it.
        assert!(v["downtimeMs"].is_u64(), "downtime recorded: {v:#}");
    }
    let out = case.exec(&["status", case.plan_path(), "--format", "json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    for vm in status["vms"].as_array().unwrap() {
        match provider {
            Provider::Lab => assert!(vm["downtimeMs"].is_u64(), "{status:#}"),
            // Site Recovery does not report the downtime of a failback
            // (docs/azure.md): `status` shows none through Azure.
            Provider::Azure => assert!(vm["downtimeMs"].is_null(), "{status:#}"),
        }
    }
    let again = case.apply(&["--format", "json"]);
    assert_eq!(code(&again), Some(0), "{}", stderr(&again));
    let text = stdout(&again);
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

/// Lab only: the Azure provider has no lab to create (the emulator serves
/// an existing one).
#[test]
fn apply_creates_the_lab_when_there_is_none() {
    let case = Case::new(PLAN);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("creating one"), "{}", stderr(&out));
    case.assert_converged();
}

on_both_providers!(
    gates:
    gates_wait_for_approval,
    gates_wait_for_approval_through_the_emulator
);

fn gates(provider: Provider) {
    let plan = PLAN.replace(
        "    commit: auto\n",
        "    commit: manual\n    completion: manual\n",
    );
    let case = Case::on(provider, &plan);
    case.init(&[]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert_eq!(case.vm("db-01")["state"], "awaiting-completion");
    // A full sync has no completion gate: it waits at commit.
    let out = case.exec(&["status", case.plan_path(), "--format", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["vms"][0]["waiting"], "completion", "{status:#}");

    let out = case.exec(&["approve", case.plan_path(), "--gate", "completion"]);
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

on_both_providers!(
    delta_with_guest_writes:
    delta_with_concurrent_guest_writes_loses_nothing,
    delta_with_concurrent_guest_writes_loses_nothing_through_the_emulator
);

fn delta_with_guest_writes(provider: Provider) {
    let plan = PLAN.replace("    commit: auto\n", "    commit: never\n");
    let case = Case::on(provider, &plan);
    case.init(&["--latency", "150"]);
    let mut apply = case
        .provider_cmd(&["apply", case.plan_path()])
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
    assert_eq!(case.vm("db-01")["state"], "commit-pending");
    case.assert_primary_holds_recovery_bytes("db-01");
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

on_both_providers!(
    disconnected_site:
    a_disconnected_site_blocks_and_reconnecting_resumes,
    a_disconnected_site_blocks_and_reconnecting_resumes_through_the_emulator
);

fn disconnected_site(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&[]);
    assert_eq!(code(&case.run(&["lab", "fault", "disconnect"])), Some(0));
    let out = case.exec(&["plan", case.plan_path(), "--format", "json"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["vms"][0]["blocked"]["code"], "primary-disconnected");
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).contains("db-01"));
    assert_eq!(
        case.vm("db-01")["state"],
        "running-in-recovery",
        "nothing changed"
    );
    assert_eq!(code(&case.run(&["lab", "fault", "connect"])), Some(0));
    assert_eq!(code(&case.apply(&[])), Some(0));
    case.assert_converged();
}

on_both_providers!(
    missing_vswitch:
    a_missing_vswitch_blocks_before_anything_changes,
    a_missing_vswitch_blocks_before_anything_changes_through_the_emulator
);

/// Through Azure the vSwitches come from the `--hyperv-inventory` file the
/// case exports from the lab's hosts before each command (Site Recovery does
/// not show them; without the file the check is "not checked", see
/// `azure::without_an_inventory_the_vswitch_check_is_reported_not_made`).
fn missing_vswitch(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&[]);
    assert_eq!(
        code(&case.run(&["lab", "fault", "remove-vswitch", "hv-01", "Backup"])),
        Some(0)
    );
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    assert!(stdout(&out).contains("vswitch-missing"), "{}", stdout(&out));
    assert!(!stderr(&out).contains("NOT checked"), "{}", stderr(&out));
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

on_both_providers!(
    stuck_shutdown:
    a_stuck_shutdown_stops_with_the_recovery_vm_intact,
    a_stuck_shutdown_stops_with_the_recovery_vm_intact_through_the_emulator
);

fn stuck_shutdown(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&[]);
    assert_eq!(
        code(&case.run(&["lab", "fault", "stuck-shutdown", "db-01"])),
        Some(0)
    );
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    if provider == Provider::Azure {
        // Through Azure the message is the failed Site Recovery job's: its
        // ID, error code, possible causes and recommended action around the
        // same reason (docs/azure.md, Errors).
        assert!(
            stdout(&out).contains("AzureVmShutdownTimedOut"),
            "{}",
            stdout(&out)
        );
    }
    let vm = case.vm("db-01");
    assert_eq!(vm["recovery"]["running"], true, "{vm:#}");
    assert_eq!(vm["primary"]["running"], false);
    assert_eq!(code(&case.run(&["lab", "fault", "clear"])), Some(0));
    assert_eq!(code(&case.apply(&[])), Some(0));
    if provider == Provider::Azure {
        // Through Azure the failed job is restarted, not started again.
        let calls = case.emulator().calls();
        assert_eq!(calls["restart"]["db-01"], 1, "{calls}");
        assert_eq!(calls["plannedFailover"]["db-01"], 1, "{calls}");
    }
    case.assert_converged();
    case.assert_no_unverified_boot();
}

on_both_providers!(
    alternate_location:
    alternate_location_creates_the_vm_and_a_missing_vm_needs_it,
    alternate_location_creates_the_vm_and_a_missing_vm_needs_it_through_the_emulator
);

fn alternate_location(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&["--missing", "app-01"]);
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(1));
    // Through Azure the provider derives existence from the item's
    // `recoveryServicesProviderId` (docs/azure.md): an item without one
    // blocks the same way, before any request is sent for it.
    assert!(stdout(&out).contains("vm-missing"), "{}", stdout(&out));
    if provider == Provider::Azure {
        let calls = case.emulator().calls();
        assert!(
            calls["plannedFailover"].get("app-01").is_none(),
            "nothing sent for app-01: {calls}"
        );
    }
    assert_eq!(
        case.vm("db-01")["state"],
        "protected",
        "the group before is unaffected"
    );
    let app_01 = case.vm("app-01");
    assert_eq!(app_01["state"], "running-in-recovery", "{app_01:#}");
    assert_eq!(app_01["recovery"]["running"], true, "{app_01:#}");

    let plan = PLAN.replace("          host: hv-02\n          networks: [{ vswitch: Production }]\n", "          host: hv-02\n          createIfMissing: true\n          networks: [{ vswitch: Production }]\n");
    std::fs::write(&case.plan, plan).unwrap();
    let out = case.apply(&[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let vm = case.vm("app-01");
    assert_eq!(vm["primary"]["exists"], true);
    assert_eq!(vm["primary"]["host"], "hv-02");
    case.assert_converged();
    case.assert_no_unverified_boot();
}

/// Lab only: through Azure a subset of the boundaries runs in
/// `azure::killed_at_step_boundaries_the_same_command_converges_without_a_second_job`
/// (each kill there also proves no second job is started).
#[test]
fn killed_at_every_step_boundary_the_same_command_converges() {
    // 3 VMs x 4 actions (+ restarts) = at most 12 steps in one clean run.
    for n in 1..=12 {
        let case = Case::new(PLAN);
        case.init(&[]);
        let out = case.apply_with(&[("FAILBACK_TEST_ABORT_AT_STEP", n.to_string())]);
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

/// Lab only: through Azure the bytes are copied by the emulator's job, not
/// by the `apply` process this hook kills; a run killed while a job runs is
/// `azure::killed_in_the_middle_of_a_job_the_next_apply_reattaches_to_it`.
#[test]
fn killed_during_a_sync_the_same_command_converges() {
    for bytes in [4096, 300_000, 700_000] {
        let plan = PLAN.replace("    commit: auto\n", "    commit: never\n");
        let case = Case::new(&plan);
        case.init(&[]);
        let out = case.apply_with(&[("FAILBACK_TEST_ABORT_AT_SYNC_BYTES", bytes.to_string())]);
        assert_eq!(
            out.status.code(),
            None,
            "aborted mid-sync at {bytes}: {}",
            stderr(&out)
        );
        let again = case.apply(&[]);
        assert_eq!(code(&again), Some(0), "{}", stderr(&again));
        case.assert_primary_holds_recovery_bytes("app-02");
        case.assert_converged();
        case.assert_no_unverified_boot();
    }
}

on_both_providers!(
    concurrent_applies:
    two_concurrent_applies_one_acts_the_other_exits_75,
    two_concurrent_applies_one_acts_the_other_exits_75_through_the_emulator
);

fn concurrent_applies(provider: Provider) {
    let case = Case::on(provider, PLAN);
    case.init(&["--latency", "300"]);
    let mut first = case
        .provider_cmd(&["apply", case.plan_path()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first holds the lock (its owner record is written).
    let lock = case.state_dir().join("case/run.lock");
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
    if provider == Provider::Azure {
        let calls = case.emulator().calls();
        for vm in ["db-01", "app-01", "app-02"] {
            assert_eq!(calls["plannedFailover"][vm], 1, "one job per VM: {calls}");
        }
    }
}
