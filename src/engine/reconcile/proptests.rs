//! Property tests of the pure reconciler (issue 4, docs/reliability.md):
//! random plans, approvals and observed worlds, including worlds no
//! provider should ever produce, because `decide` must be safe for any
//! observation.
//!
//! Single decisions must never:
//! - propose `Commit` (the only step that deletes the recovery copy) unless
//!   the VM is `commit-pending` with its primary VM running, its commit
//!   policy allows it and its `verify` check goes with it;
//! - propose `Complete` (which boots the primary VM) before a sync finished,
//!   or skip a gate that is not approved;
//! - act at all while the primary site or the VM's host is unreachable.
//!
//! Sequences of decisions, applied to a small model of the provider that
//! may be interrupted (crash) in the middle of any action, must reach the
//! declared end state, or stop at a gate or a named blocker, within a
//! bounded number of steps; approving the gate lets them go on; a blocker
//! stops before anything changed.
//!
//! Cases: `FAILBACK_PROPTEST_CASES` (default 2048 per property).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::provider::ObservedHost;

const HOSTS: [&str; 3] = ["hv-01", "hv-02", "hv-old"];
const SWITCHES: [&str; 3] = ["Production", "Backup", "Dmz"];
const VM: &str = "app-01";

/// Codes a blocker may have; anything else is unnamed.
const BLOCKER_CODES: [&str; 10] = [
    "vm-unknown",
    "primary-disconnected",
    "host-disconnected",
    "host-unknown",
    "failover-not-committed",
    "no-recovery-point",
    "primary-running",
    "vm-missing",
    "host-mismatch",
    "vswitch-missing",
];

fn cases() -> u32 {
    std::env::var("FAILBACK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048)
}

fn lifecycle() -> impl Strategy<Value = Lifecycle> {
    prop_oneof![
        Just(Lifecycle::RunningInRecovery),
        Just(Lifecycle::Syncing),
        Just(Lifecycle::AwaitingCompletion),
        Just(Lifecycle::FinalSync),
        Just(Lifecycle::CommitPending),
        Just(Lifecycle::Committed),
        Just(Lifecycle::Protected),
    ]
}

fn sync_mode() -> impl Strategy<Value = SyncMode> {
    prop_oneof![Just(SyncMode::Delta), Just(SyncMode::Full)]
}

fn opt<T: Clone + std::fmt::Debug + 'static>(
    values: &'static [T],
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(proptest::sample::select(values))
}

/// The settings part of a VM or of `defaults`, as plan JSON.
fn settings() -> impl Strategy<Value = Value> {
    (
        opt(&["delta", "full"]),
        opt(&["auto", "manual"]),
        opt(&["auto", "manual", "never"]),
        opt(&[true, false]),
        opt(&[true, false]),
    )
        .prop_map(|(sync, completion, commit, rr, create)| {
            json!({
                "sync": sync, "completion": completion, "commit": commit,
                "reverseReplicate": rr, "createIfMissing": create,
            })
        })
}

/// A one-VM plan with random defaults, overrides, host, networks and verify.
fn plan() -> impl Strategy<Value = FailbackPlan> {
    (
        settings(),
        settings(),
        proptest::sample::select(&HOSTS[..2]),
        proptest::sample::subsequence(&SWITCHES[..], 0..=3),
        any::<bool>(),
    )
        .prop_map(|(defaults, mut vm, host, networks, verify)| {
            let obj = vm.as_object_mut().map(std::mem::take).unwrap_or_default();
            let mut vm: serde_json::Map<String, Value> = obj;
            vm.insert("name".into(), json!(VM));
            vm.insert("host".into(), json!(host));
            vm.insert(
                "networks".into(),
                json!(
                    networks
                        .iter()
                        .map(|s| json!({ "vswitch": s }))
                        .collect::<Vec<_>>()
                ),
            );
            if verify {
                vm.insert(
                    "verify".into(),
                    json!({ "command": ["true"], "timeout": "5s" }),
                );
            }
            let doc = json!({
                "apiVersion": "failback/v1",
                "kind": "FailbackPlan",
                "metadata": { "name": "prop" },
                "spec": {
                    "primary": { "site": "dc1", "hosts": [
                        { "name": "hv-01", "vswitches": SWITCHES },
                        { "name": "hv-02", "vswitches": SWITCHES },
                    ] },
                    "recovery": { "site": "azure" },
                    "defaults": defaults,
                    "groups": [ { "name": "g", "vms": [ Value::Object(vm) ] } ],
                },
            });
            match serde_json::from_value::<FailbackPlan>(doc) {
                Ok(p) => p,
                Err(e) => panic!("the generated plan does not deserialize: {e}"),
            }
        })
}

fn approvals() -> impl Strategy<Value = Approvals> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::sample::subsequence(
            vec![
                (Gate::Completion, VM),
                (Gate::Commit, VM),
                (Gate::Completion, "other"),
                (Gate::Commit, "other"),
            ],
            0..=4,
        ),
    )
        .prop_map(|(completion, commit, vms)| {
            let mut a = Approvals::default();
            if completion {
                a.all.insert(Gate::Completion);
            }
            if commit {
                a.all.insert(Gate::Commit);
            }
            a.vms
                .extend(vms.into_iter().map(|(g, v)| (g, v.to_owned())));
            a
        })
}

fn host() -> impl Strategy<Value = ObservedHost> {
    (
        proptest::sample::select(&HOSTS[..]),
        any::<bool>(),
        proptest::option::of(proptest::sample::subsequence(&SWITCHES[..], 0..=3)),
    )
        .prop_map(|(name, connected, switches)| ObservedHost {
            name: name.into(),
            connected,
            vswitches: switches.map(|s| s.into_iter().map(str::to_owned).collect()),
        })
}

/// Any observation of the VM, consistent or not.
fn observed() -> impl Strategy<Value = ObservedVm> {
    (
        lifecycle(),
        proptest::collection::vec(any::<bool>(), 7),
        proptest::option::of(proptest::sample::select(&HOSTS[..])),
        proptest::option::of(sync_mode()),
        0u32..60,
    )
        .prop_map(|(state, flags, host, sync_mode, days)| ObservedVm {
            name: VM.into(),
            state,
            failover_committed: flags[0],
            has_recovery_point: flags[1],
            recovery_exists: flags[2],
            recovery_running: flags[3],
            primary_exists: flags[4],
            primary_host: host.map(str::to_owned),
            primary_running: flags[5],
            sync_mode,
            days_in_recovery: days,
            downtime_ms: flags[6].then_some(40),
        })
}

/// Any world: the site up or down, 0 to 3 hosts, the VM known or not.
fn world() -> impl Strategy<Value = World> {
    world_of(prop_oneof![9 => observed().prop_map(Some), 1 => Just(None)])
}

/// Any world in which the recovery site knows the VM.
fn world_with_vm() -> impl Strategy<Value = World> {
    world_of(observed().prop_map(Some))
}

fn world_of(vm: impl Strategy<Value = Option<ObservedVm>>) -> impl Strategy<Value = World> {
    (
        prop_oneof![4 => Just(true), 1 => Just(false)],
        proptest::collection::vec(host(), 0..=3),
        vm,
    )
        .prop_map(|(primary_connected, hosts, vm)| World {
            primary_connected,
            hosts,
            vms: vm.into_iter().collect(),
        })
}

/// A world where the failback can run: everything connected, every
/// precondition met, the VM at a random point of its lifecycle as a
/// provider that honours the contract would show it.
fn runnable_world(plan: &FailbackPlan) -> impl Strategy<Value = World> + use<> {
    let vm = &plan.spec.groups[0].vms[0];
    let host = vm.host.to_string();
    let mode = plan.effective(vm).sync;
    (lifecycle(), any::<bool>()).prop_map(move |(state, lost_start)| {
        let running_primary =
            state >= Lifecycle::CommitPending && !(state == Lifecycle::CommitPending && lost_start);
        World {
            primary_connected: true,
            hosts: vec![ObservedHost {
                name: host.clone(),
                connected: true,
                vswitches: Some(SWITCHES.iter().map(|s| (*s).to_owned()).collect()),
            }],
            vms: vec![ObservedVm {
                name: VM.into(),
                state,
                failover_committed: true,
                has_recovery_point: state < Lifecycle::Committed,
                recovery_exists: state < Lifecycle::Committed,
                recovery_running: matches!(
                    state,
                    Lifecycle::RunningInRecovery | Lifecycle::AwaitingCompletion
                ) || (state == Lifecycle::Syncing && mode == SyncMode::Delta),
                primary_exists: true,
                primary_host: Some(host.clone()),
                primary_running: running_primary,
                sync_mode: matches!(
                    state,
                    Lifecycle::Syncing
                        | Lifecycle::AwaitingCompletion
                        | Lifecycle::FinalSync
                        | Lifecycle::CommitPending
                )
                .then_some(mode),
                days_in_recovery: 3,
                downtime_ms: None,
            }],
        }
    })
}

fn reachable(plan: &FailbackPlan, world: &World) -> bool {
    let vm = &plan.spec.groups[0].vms[0];
    world.primary_connected && world.host(vm.host.as_str()).is_some_and(|h| h.connected)
}

/// The safety properties of one decision, for any plan, approvals and world.
fn check_decision(
    plan: &FailbackPlan,
    approvals: &Approvals,
    world: &World,
    decision: &Decision,
) -> Result<(), TestCaseError> {
    let vm = &plan.spec.groups[0].vms[0];
    let s = plan.effective(vm);
    let observed = world.vm(VM);
    if let Decision::Act(action) = decision {
        prop_assert!(
            reachable(plan, world),
            "acted ({action:?}) while the site or host is unreachable"
        );
        let o = observed.ok_or_else(|| TestCaseError::fail("acted on an unknown VM"))?;
        match action {
            Action::Commit(verify) => {
                prop_assert_eq!(
                    o.state,
                    Lifecycle::CommitPending,
                    "commit (deletes the recovery copy) outside commit-pending"
                );
                prop_assert!(o.primary_running, "commit before the primary VM runs");
                prop_assert!(
                    s.commit != CommitPolicy::Never,
                    "commit under `commit: never`"
                );
                prop_assert!(
                    s.commit == CommitPolicy::Auto || approvals.approved(Gate::Commit, VM),
                    "commit without approval under `commit: manual`"
                );
                prop_assert_eq!(verify, &vm.verify, "commit without its verify check");
            }
            Action::Complete => {
                prop_assert!(
                    matches!(
                        o.state,
                        Lifecycle::AwaitingCompletion | Lifecycle::FinalSync
                    ) || (o.state == Lifecycle::CommitPending && !o.primary_running),
                    "complete (boots the primary) from {}",
                    o.state
                );
                if o.state == Lifecycle::AwaitingCompletion {
                    prop_assert!(
                        s.completion == Completion::Auto
                            || approvals.approved(Gate::Completion, VM),
                        "completion gate skipped"
                    );
                }
            }
            Action::StartFailback(req) => {
                prop_assert!(
                    matches!(o.state, Lifecycle::RunningInRecovery | Lifecycle::Syncing),
                    "start-failback from {}",
                    o.state
                );
                prop_assert_eq!(&req.vm, VM);
                prop_assert_eq!(req.target_host.as_str(), vm.host.as_str());
                if o.state == Lifecycle::RunningInRecovery {
                    // Overwriting a running on-premises VM's disks loses its data.
                    prop_assert!(!o.primary_running, "sync onto a running primary VM");
                    prop_assert!(o.failover_committed && o.has_recovery_point);
                    prop_assert!(o.primary_exists || s.create_if_missing);
                }
                if let Some(mode) = o.sync_mode.filter(|_| o.state == Lifecycle::Syncing) {
                    prop_assert_eq!(req.sync, mode, "an interrupted sync changed mode");
                }
            }
            Action::ReverseReplicate => {
                prop_assert_eq!(o.state, Lifecycle::Committed);
                prop_assert!(s.reverse_replicate);
            }
        }
    }
    // `plan` shows the steps `remaining_steps` lists: it must show some
    // whenever `apply` would act, or `plan` says "converged" while `apply`
    // would still change things.
    if matches!(decision, Decision::Act(_)) {
        prop_assert!(
            !remaining_steps(plan, vm, observed).is_empty(),
            "apply would act ({decision:?}) but plan lists no step"
        );
    }
    match decision {
        Decision::Done => {
            let o = observed.ok_or_else(|| TestCaseError::fail("done for an unknown VM"))?;
            prop_assert!(o.state >= end_state(&s), "done before the end state");
        }
        Decision::Wait(Gate::Completion) => {
            let o = observed.ok_or_else(|| TestCaseError::fail("waits for an unknown VM"))?;
            prop_assert_eq!(o.state, Lifecycle::AwaitingCompletion);
            prop_assert!(
                s.completion == Completion::Manual && !approvals.approved(Gate::Completion, VM)
            );
        }
        Decision::Wait(Gate::Commit) => {
            let o = observed.ok_or_else(|| TestCaseError::fail("waits for an unknown VM"))?;
            prop_assert_eq!(o.state, Lifecycle::CommitPending);
            prop_assert!(s.commit == CommitPolicy::Manual && !approvals.approved(Gate::Commit, VM));
        }
        Decision::Blocked(b) => {
            prop_assert!(
                BLOCKER_CODES.contains(&b.code),
                "unnamed blocker {}",
                b.code
            );
            prop_assert!(b.message.contains(VM), "the blocker does not name the VM");
        }
        Decision::Act(_) => {}
    }
    Ok(())
}

/// A provider as the contract describes it, reduced to what `decide`
/// observes. Every action either completes or is interrupted (as by a
/// crash) half-way, leaving the state an interrupted provider leaves.
struct Model {
    world: World,
    /// Which of the actions taken are interrupted, in order.
    crashes: Vec<bool>,
    taken: usize,
}

impl Model {
    fn vm(&mut self) -> &mut ObservedVm {
        &mut self.world.vms[0]
    }

    /// Applies `action`; an `Err` is a breach of the provider contract's
    /// safety rules by the decision that proposed it.
    fn apply(&mut self, action: &Action) -> Result<(), String> {
        let crash = self.crashes.get(self.taken).copied().unwrap_or(false);
        self.taken += 1;
        let vm = self.vm();
        match action {
            Action::StartFailback(req) => {
                if !matches!(vm.state, Lifecycle::RunningInRecovery | Lifecycle::Syncing) {
                    return Err(format!("start-failback from {}", vm.state));
                }
                let mode = vm
                    .sync_mode
                    .filter(|_| vm.state == Lifecycle::Syncing)
                    .unwrap_or(req.sync);
                // Intent first: `syncing` is durable before data moves.
                vm.state = Lifecycle::Syncing;
                vm.sync_mode = Some(mode);
                vm.primary_exists = true;
                vm.primary_host = Some(req.target_host.clone());
                if mode == SyncMode::Full {
                    vm.recovery_running = false;
                }
                if crash {
                    return Ok(());
                }
                match mode {
                    SyncMode::Delta => vm.state = Lifecycle::AwaitingCompletion,
                    SyncMode::Full => {
                        vm.state = Lifecycle::CommitPending;
                        vm.primary_running = true;
                    }
                }
            }
            Action::Complete => {
                if !matches!(
                    vm.state,
                    Lifecycle::AwaitingCompletion | Lifecycle::FinalSync | Lifecycle::CommitPending
                ) {
                    return Err(format!("complete from {}", vm.state));
                }
                if vm.state != Lifecycle::CommitPending {
                    vm.state = Lifecycle::FinalSync;
                    vm.recovery_running = false;
                }
                if crash {
                    return Ok(());
                }
                vm.state = Lifecycle::CommitPending;
                vm.primary_running = true;
            }
            Action::Commit(_) => {
                if vm.state != Lifecycle::CommitPending || !vm.primary_running {
                    return Err(format!(
                        "commit from {} (primary running: {})",
                        vm.state, vm.primary_running
                    ));
                }
                if crash {
                    return Ok(());
                }
                vm.state = Lifecycle::Committed;
                vm.recovery_exists = false;
                vm.recovery_running = false;
                vm.has_recovery_point = false;
                vm.sync_mode = None;
            }
            Action::ReverseReplicate => {
                if vm.state != Lifecycle::Committed {
                    return Err(format!("reverse-replicate from {}", vm.state));
                }
                if crash {
                    return Ok(());
                }
                vm.state = Lifecycle::Protected;
                vm.has_recovery_point = true;
            }
        }
        Ok(())
    }
}

/// How a sequence of decisions ended.
#[derive(Debug)]
enum End {
    Done,
    Gate(Gate),
    Blocked(&'static str),
}

/// Observes, decides and acts until done, a gate or a blocker; fails if it
/// takes more than `bound` actions or breaks a rule on the way.
fn run_sequence(
    plan: &FailbackPlan,
    approvals: &Approvals,
    model: &mut Model,
    bound: usize,
) -> Result<(End, usize), TestCaseError> {
    let vm = &plan.spec.groups[0].vms[0];
    let mut actions = 0;
    loop {
        let decision = decide(plan, vm, &model.world, approvals);
        check_decision(plan, approvals, &model.world, &decision)?;
        match decision {
            Decision::Done => return Ok((End::Done, actions)),
            Decision::Wait(g) => return Ok((End::Gate(g), actions)),
            Decision::Blocked(b) => return Ok((End::Blocked(b.code), actions)),
            Decision::Act(action) => {
                actions += 1;
                prop_assert!(
                    actions <= bound,
                    "no end after {bound} actions; last: {action:?} in {:?}",
                    model.world.vms[0].state
                );
                model.apply(&action).map_err(TestCaseError::fail)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any plan, approvals and world (consistent or not): one decision keeps
    /// every safety rule.
    #[test]
    fn a_single_decision_is_always_safe(
        plan in plan(),
        approvals in approvals(),
        world in world(),
    ) {
        let vm = &plan.spec.groups[0].vms[0];
        let decision = decide(&plan, vm, &world, &approvals);
        check_decision(&plan, &approvals, &world, &decision)?;
        // Level-triggered: the same observation gives the same decision.
        prop_assert_eq!(decide(&plan, vm, &world, &approvals), decision);
    }

    /// Disconnecting the site or the VM's host turns any decision into
    /// "done" or a blocker, never an action or a gate.
    #[test]
    fn nothing_acts_while_disconnected(
        plan in plan(),
        approvals in approvals(),
        world in world(),
        site_down in any::<bool>(),
    ) {
        let vm = &plan.spec.groups[0].vms[0];
        let mut world = world;
        if site_down {
            world.primary_connected = false;
        } else {
            for h in &mut world.hosts {
                if h.name == vm.host.as_str() {
                    h.connected = false;
                }
            }
        }
        let decision = decide(&plan, vm, &world, &approvals);
        prop_assert!(
            matches!(decision, Decision::Done | Decision::Blocked(_)),
            "{decision:?} while disconnected"
        );
    }

    /// From any point of a runnable failback, with crashes in the middle of
    /// any actions: the decisions reach the end state, or stop at a gate
    /// that, once approved, lets them reach it; within a bound.
    #[test]
    fn every_sequence_reaches_the_end_state_or_a_gate(
        (plan, world) in plan().prop_flat_map(|p| {
            let w = runnable_world(&p);
            (Just(p), w)
        }),
        approvals in approvals(),
        crashes in proptest::collection::vec(prop_oneof![3 => Just(false), 1 => Just(true)], 0..12),
    ) {
        let vm = &plan.spec.groups[0].vms[0];
        let s = plan.effective(vm);
        let end = end_state(&s);
        let crashed = crashes.iter().filter(|c| **c).count();
        // 4 actions at most in a clean failback (start, complete, commit,
        // reverse replication), plus one more per interruption.
        let bound = 4 + crashed;
        let mut model = Model { world, crashes, taken: 0 };
        let mut approvals = approvals;
        let mut total = 0;
        for _ in 0..3 {
            let (ended, actions) = run_sequence(&plan, &approvals, &mut model, bound - total.min(bound))?;
            total += actions;
            match ended {
                End::Done => {
                    let o = &model.world.vms[0];
                    prop_assert!(o.state >= end, "done at {} before {end}", o.state);
                    // The declared end state has the VM running on-premises.
                    prop_assert!(
                        o.primary_running,
                        "done at {} with the primary VM not running",
                        o.state
                    );
                    if end >= Lifecycle::Committed {
                        prop_assert!(!o.recovery_exists || o.state > Lifecycle::Committed);
                    }
                    return Ok(());
                }
                End::Gate(gate) => {
                    // Approving the gate lets the same plan go on.
                    approvals.vms.insert((gate, VM.to_owned()));
                }
                End::Blocked(code) => {
                    return Err(TestCaseError::fail(format!(
                        "a runnable failback blocked: {code} at {}",
                        model.world.vms[0].state
                    )));
                }
            }
        }
        prop_assert!(false, "still not done after approving both gates");
    }

    /// Preconditions that fail block before anything changes: a blocker
    /// comes from the first decision, never after an action.
    #[test]
    fn a_blocker_stops_before_anything_changes(
        plan in plan(),
        approvals in approvals(),
        world in world_with_vm(),
        crashes in proptest::collection::vec(any::<bool>(), 0..6),
    ) {
        let mut model = Model { world, crashes, taken: 0 };
        let before = model.world.clone();
        let (ended, actions) = run_sequence(&plan, &approvals, &mut model, 16)?;
        if let End::Blocked(code) = ended {
            prop_assert_eq!(actions, 0, "blocked ({}) after {} actions", code, actions);
            prop_assert_eq!(&model.world, &before);
        }
    }
}

/// Found by `every_sequence_reaches_the_end_state_or_a_gate`: under
/// `commit: never`, a VM at `commit-pending` whose primary VM is not
/// running (a provider lost its start) was reported done, and `plan` said
/// "converged" with the VM running nowhere. It must be completed again.
#[test]
fn a_lost_start_under_commit_never_is_completed_not_done() {
    let plan = serde_json::from_value::<FailbackPlan>(json!({
        "apiVersion": "failback/v1", "kind": "FailbackPlan",
        "metadata": { "name": "prop" },
        "spec": {
            "primary": { "site": "dc1", "hosts": [ { "name": "hv-01", "vswitches": ["Production"] } ] },
            "recovery": { "site": "azure" },
            "defaults": { "commit": "never" },
            "groups": [ { "name": "g", "vms": [ { "name": VM, "host": "hv-01" } ] } ],
        },
    }))
    .unwrap();
    let vm = &plan.spec.groups[0].vms[0];
    let world = World {
        primary_connected: true,
        hosts: vec![ObservedHost {
            name: "hv-01".into(),
            connected: true,
            vswitches: Some(vec!["Production".into()]),
        }],
        vms: vec![ObservedVm {
            name: VM.into(),
            state: Lifecycle::CommitPending,
            failover_committed: true,
            has_recovery_point: true,
            recovery_exists: true,
            recovery_running: false,
            primary_exists: true,
            primary_host: Some("hv-01".into()),
            primary_running: false,
            sync_mode: Some(SyncMode::Delta),
            days_in_recovery: 3,
            downtime_ms: None,
        }],
    };
    let approvals = Approvals::default();
    assert_eq!(
        decide(&plan, vm, &world, &approvals),
        Decision::Act(Action::Complete)
    );
    assert_eq!(remaining_steps(&plan, vm, world.vm(VM)), ["start-primary"]);
    let mut running = world.clone();
    running.vms[0].primary_running = true;
    assert_eq!(decide(&plan, vm, &running, &approvals), Decision::Done);
    assert!(remaining_steps(&plan, vm, running.vm(VM)).is_empty());
}
