//! Every lifecycle state x plan option, with the decision it must give.

use super::*;
use crate::plan::{Network, VSwitchName};
use crate::provider::ObservedHost;

fn plan() -> FailbackPlan {
    let text = crate::validate::tests_support::MINIMAL;
    serde_saphyr::from_str::<serde_json::Value>(text)
        .map(|v| serde_json::from_value::<FailbackPlan>(v).unwrap())
        .unwrap()
}

fn observed(state: Lifecycle) -> ObservedVm {
    ObservedVm {
        name: "app-01".into(),
        state,
        failover_committed: true,
        has_recovery_point: true,
        recovery_exists: state < Lifecycle::Committed,
        recovery_running: state <= Lifecycle::AwaitingCompletion,
        primary_exists: true,
        primary_host: Some("hv-01".into()),
        primary_running: state >= Lifecycle::CommitPending,
        sync_mode: None,
        days_in_recovery: 3,
        downtime_ms: None,
    }
}

fn world(vm: ObservedVm) -> World {
    World {
        primary_connected: true,
        hosts: vec![ObservedHost {
            name: "hv-01".into(),
            connected: true,
            vswitches: Some(vec!["Production".into()]),
        }],
        vms: vec![vm],
    }
}

fn with(mut p: FailbackPlan, f: impl FnOnce(&mut Vm)) -> FailbackPlan {
    f(&mut p.spec.groups[0].vms[0]);
    p
}

fn decide_for(p: &FailbackPlan, w: &World, a: &Approvals) -> Decision {
    decide(p, &p.spec.groups[0].vms[0], w, a)
}

fn blocked_code(d: Decision) -> &'static str {
    match d {
        Decision::Blocked(b) => b.code,
        other => panic!("expected a blocker, got {other:?}"),
    }
}

#[test]
fn running_in_recovery_starts_the_declared_sync() {
    let p = plan();
    let d = decide_for(
        &p,
        &world(observed(Lifecycle::RunningInRecovery)),
        &Approvals::default(),
    );
    assert!(
        matches!(d, Decision::Act(Action::StartFailback(ref r)) if r.sync == SyncMode::Delta && r.target_host == "hv-01")
    );
    let p = with(plan(), |vm| vm.sync = Some(SyncMode::Full));
    let d = decide_for(
        &p,
        &world(observed(Lifecycle::RunningInRecovery)),
        &Approvals::default(),
    );
    assert!(matches!(d, Decision::Act(Action::StartFailback(ref r)) if r.sync == SyncMode::Full));
}

#[test]
fn an_interrupted_sync_is_restarted_in_its_own_mode() {
    let p = plan();
    let mut o = observed(Lifecycle::Syncing);
    o.sync_mode = Some(SyncMode::Full);
    let d = decide_for(&p, &world(o), &Approvals::default());
    assert!(matches!(d, Decision::Act(Action::StartFailback(ref r)) if r.sync == SyncMode::Full));
}

#[test]
fn completion_gate() {
    let auto = plan();
    let w = world(observed(Lifecycle::AwaitingCompletion));
    assert_eq!(
        decide_for(&auto, &w, &Approvals::default()),
        Decision::Act(Action::Complete)
    );
    let manual = with(plan(), |vm| vm.completion = Some(Completion::Manual));
    assert_eq!(
        decide_for(&manual, &w, &Approvals::default()),
        Decision::Wait(Gate::Completion)
    );
    let mut a = Approvals::default();
    a.vms.insert((Gate::Completion, "app-01".into()));
    assert_eq!(decide_for(&manual, &w, &a), Decision::Act(Action::Complete));
    let mut other = Approvals::default();
    other.vms.insert((Gate::Completion, "other".into()));
    assert_eq!(
        decide_for(&manual, &w, &other),
        Decision::Wait(Gate::Completion)
    );
}

#[test]
fn final_sync_is_completed_again_never_skipped() {
    let p = plan();
    assert_eq!(
        decide_for(
            &p,
            &world(observed(Lifecycle::FinalSync)),
            &Approvals::default()
        ),
        Decision::Act(Action::Complete)
    );
}

#[test]
fn commit_policies() {
    let w = world(observed(Lifecycle::CommitPending));
    let manual = plan();
    assert_eq!(
        decide_for(&manual, &w, &Approvals::default()),
        Decision::Wait(Gate::Commit)
    );
    let mut a = Approvals::default();
    a.all.insert(Gate::Commit);
    assert_eq!(
        decide_for(&manual, &w, &a),
        Decision::Act(Action::Commit(None))
    );
    let never = with(plan(), |vm| vm.commit = Some(CommitPolicy::Never));
    assert_eq!(decide_for(&never, &w, &a), Decision::Done);
    let verify = Verify {
        command: vec!["true".into()],
        timeout: std::time::Duration::from_secs(5),
    };
    let auto = with(plan(), |vm| {
        vm.commit = Some(CommitPolicy::Auto);
        vm.verify = Some(verify.clone());
    });
    assert_eq!(
        decide_for(&auto, &w, &Approvals::default()),
        Decision::Act(Action::Commit(Some(verify)))
    );
}

#[test]
fn never_commits_before_the_primary_runs() {
    let mut o = observed(Lifecycle::CommitPending);
    o.primary_running = false;
    let auto = with(plan(), |vm| vm.commit = Some(CommitPolicy::Auto));
    assert_eq!(
        decide_for(&auto, &world(o), &Approvals::default()),
        Decision::Act(Action::Complete)
    );
}

#[test]
fn committed_then_protected() {
    let p = plan();
    assert_eq!(
        decide_for(
            &p,
            &world(observed(Lifecycle::Committed)),
            &Approvals::default()
        ),
        Decision::Act(Action::ReverseReplicate)
    );
    assert_eq!(
        decide_for(
            &p,
            &world(observed(Lifecycle::Protected)),
            &Approvals::default()
        ),
        Decision::Done
    );
    let no_rr = with(plan(), |vm| vm.reverse_replicate = Some(false));
    assert_eq!(
        decide_for(
            &no_rr,
            &world(observed(Lifecycle::Committed)),
            &Approvals::default()
        ),
        Decision::Done
    );
}

#[test]
fn missing_vm_needs_create_if_missing() {
    let mut o = observed(Lifecycle::RunningInRecovery);
    o.primary_exists = false;
    o.primary_host = None;
    assert_eq!(
        blocked_code(decide_for(
            &plan(),
            &world(o.clone()),
            &Approvals::default()
        )),
        "vm-missing"
    );
    let create = with(plan(), |vm| vm.create_if_missing = Some(true));
    assert!(
        matches!(decide_for(&create, &world(o), &Approvals::default()), Decision::Act(Action::StartFailback(ref r)) if r.create_if_missing)
    );
}

#[test]
fn alternate_host_needs_create_if_missing() {
    let mut o = observed(Lifecycle::RunningInRecovery);
    o.primary_host = Some("hv-old".into());
    assert_eq!(
        blocked_code(decide_for(&plan(), &world(o), &Approvals::default())),
        "host-mismatch"
    );
}

#[test]
fn disconnected_site_or_host_blocks_every_step() {
    for state in [
        Lifecycle::RunningInRecovery,
        Lifecycle::Syncing,
        Lifecycle::AwaitingCompletion,
        Lifecycle::CommitPending,
    ] {
        let mut w = world(observed(state));
        w.primary_connected = false;
        assert_eq!(
            blocked_code(decide_for(&plan(), &w, &Approvals::default())),
            "primary-disconnected"
        );
        let mut w = world(observed(state));
        w.hosts[0].connected = false;
        assert_eq!(
            blocked_code(decide_for(&plan(), &w, &Approvals::default())),
            "host-disconnected"
        );
    }
}

#[test]
fn missing_vswitch_blocks_before_anything_changes() {
    let mut w = world(observed(Lifecycle::RunningInRecovery));
    w.hosts[0].vswitches = Some(vec!["Backup".into()]);
    assert_eq!(
        blocked_code(decide_for(&plan(), &w, &Approvals::default())),
        "vswitch-missing"
    );
    // Unknown vSwitches (a provider that cannot read them) do not block.
    w.hosts[0].vswitches = None;
    assert!(matches!(
        decide_for(&plan(), &w, &Approvals::default()),
        Decision::Act(_)
    ));
    // A network on another declared vSwitch that the host lacks.
    let p = with(plan(), |vm| {
        vm.networks.push(Network {
            adapter: None,
            vswitch: VSwitchName::from("Backup"),
        })
    });
    let w = world(observed(Lifecycle::RunningInRecovery));
    assert_eq!(
        blocked_code(decide_for(&p, &w, &Approvals::default())),
        "vswitch-missing"
    );
}

#[test]
fn other_preconditions() {
    let mut o = observed(Lifecycle::RunningInRecovery);
    o.primary_running = true;
    assert_eq!(
        blocked_code(decide_for(&plan(), &world(o), &Approvals::default())),
        "primary-running"
    );
    let mut o = observed(Lifecycle::RunningInRecovery);
    o.failover_committed = false;
    assert_eq!(
        blocked_code(decide_for(&plan(), &world(o), &Approvals::default())),
        "failover-not-committed"
    );
    let mut o = observed(Lifecycle::RunningInRecovery);
    o.has_recovery_point = false;
    assert_eq!(
        blocked_code(decide_for(&plan(), &world(o), &Approvals::default())),
        "no-recovery-point"
    );
    let mut w = world(observed(Lifecycle::RunningInRecovery));
    w.vms.clear();
    assert_eq!(
        blocked_code(decide_for(&plan(), &w, &Approvals::default())),
        "vm-unknown"
    );
}

#[test]
fn remaining_steps_follow_the_state() {
    let p = plan();
    let vm = &p.spec.groups[0].vms[0];
    assert_eq!(
        remaining_steps(&p, vm, Some(&observed(Lifecycle::RunningInRecovery))),
        [
            "preflight",
            "sync-delta",
            "complete",
            "shutdown-recovery",
            "final-sync",
            "start-primary",
            "commit",
            "reverse-replicate"
        ]
    );
    assert_eq!(
        remaining_steps(&p, vm, Some(&observed(Lifecycle::CommitPending))),
        ["commit", "reverse-replicate"]
    );
    assert!(remaining_steps(&p, vm, Some(&observed(Lifecycle::Protected))).is_empty());
    let full = with(plan(), |vm| vm.sync = Some(SyncMode::Full));
    let vm = &full.spec.groups[0].vms[0];
    assert_eq!(
        remaining_steps(&full, vm, None),
        [
            "preflight",
            "shutdown-recovery",
            "sync-full",
            "start-primary",
            "commit",
            "reverse-replicate"
        ]
    );
}
