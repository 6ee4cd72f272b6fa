//! Pure reconciliation: desired (plan) x observed (world) -> next decision.
//!
//! Level-triggered: the decision depends only on the plan, the approvals
//! recorded for it and the world as observed now, never on what an earlier
//! run did. Running it after a crash, after a success, or in another process
//! gives the same answer for the same world. No I/O.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::plan::{
    CommitPolicy, Completion, EffectiveSettings, FailbackPlan, SyncMode, Verify, Vm,
};
use crate::provider::{FailbackRequest, Lifecycle, ObservedVm, World};

/// A point where a failback waits for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// After delta phase 1, before the recovery VM is shut down.
    Completion,
    /// After the VM runs on the primary host, before the recovery copy is deleted.
    Commit,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Completion => "completion",
            Gate::Commit => "commit",
        }
    }
}

/// Gate approvals that apply to a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Approved for every VM (`apply --approve GATE`).
    pub all: BTreeSet<Gate>,
    /// Approved for named VMs (`failback approve`).
    pub vms: BTreeSet<(Gate, String)>,
}

impl Approvals {
    pub fn approved(&self, gate: Gate, vm: &str) -> bool {
        self.all.contains(&gate) || self.vms.contains(&(gate, vm.to_owned()))
    }
}

/// Why a VM cannot go on; nothing was changed for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// Stable, kebab-case.
    pub code: &'static str,
    /// Names the VM, the precondition and the fix.
    pub message: String,
}

/// What the engine does next for one VM.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start (or continue) the planned failover.
    StartFailback(FailbackRequest),
    /// "Complete Failover": shut down, final sync, verify, start primary.
    Complete,
    /// Run the `verify` check (if any), then commit.
    Commit(Option<Verify>),
    ReverseReplicate,
}

impl Action {
    /// The step name used in events and journals.
    pub fn step(&self) -> &'static str {
        match self {
            Action::StartFailback(r) if r.sync == SyncMode::Full => "sync-full",
            Action::StartFailback(_) => "sync-delta",
            Action::Complete => "complete",
            Action::Commit(_) => "commit",
            Action::ReverseReplicate => "reverse-replicate",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Act(Action),
    Wait(Gate),
    /// The declared end state is reached.
    Done,
    Blocked(Blocker),
}

/// The state a VM must reach under its settings.
pub fn end_state(s: &EffectiveSettings) -> Lifecycle {
    match (s.commit, s.reverse_replicate) {
        (CommitPolicy::Never, _) => Lifecycle::CommitPending,
        (_, true) => Lifecycle::Protected,
        (_, false) => Lifecycle::Committed,
    }
}

/// The next decision for `vm` of `plan` in `world`.
pub fn decide(plan: &FailbackPlan, vm: &Vm, world: &World, approvals: &Approvals) -> Decision {
    let s = plan.effective(vm);
    let name = vm.name.as_str();
    let Some(observed) = world.vm(name) else {
        return Decision::Blocked(Blocker {
            code: "vm-unknown",
            message: format!(
                "VM '{name}' is not known to the recovery site: check the name in the plan against the protected items"
            ),
        });
    };
    let end = end_state(&s);
    if observed.state >= end && !lost_start(observed) {
        return Decision::Done;
    }
    if let Some(b) = connectivity(plan, vm, world) {
        return Decision::Blocked(b);
    }
    match observed.state {
        Lifecycle::RunningInRecovery => match preconditions(vm, &s, observed, world) {
            Some(b) => Decision::Blocked(b),
            None => Decision::Act(Action::StartFailback(request(vm, &s, observed))),
        },
        // An interrupted sync is completed by starting it again, never by
        // booting anything.
        Lifecycle::Syncing => Decision::Act(Action::StartFailback(request(vm, &s, observed))),
        Lifecycle::AwaitingCompletion => {
            if s.completion == Completion::Manual && !approvals.approved(Gate::Completion, name) {
                Decision::Wait(Gate::Completion)
            } else {
                Decision::Act(Action::Complete)
            }
        }
        Lifecycle::FinalSync => Decision::Act(Action::Complete),
        Lifecycle::CommitPending => {
            if !observed.primary_running {
                // Only a provider that lost its start can be here; completing
                // again verifies and starts.
                return Decision::Act(Action::Complete);
            }
            match s.commit {
                CommitPolicy::Never => Decision::Done,
                CommitPolicy::Manual if !approvals.approved(Gate::Commit, name) => {
                    Decision::Wait(Gate::Commit)
                }
                _ => Decision::Act(Action::Commit(vm.verify.clone())),
            }
        }
        Lifecycle::Committed => Decision::Act(Action::ReverseReplicate),
        Lifecycle::Protected => Decision::Done,
    }
}

/// `commit-pending` with the primary VM off: a provider lost its start.
/// Not the end state even under `commit: never`, which declares the VM
/// running on the primary host; completing again verifies and starts it.
fn lost_start(observed: &ObservedVm) -> bool {
    observed.state == Lifecycle::CommitPending && !observed.primary_running
}

fn request(vm: &Vm, s: &EffectiveSettings, observed: &ObservedVm) -> FailbackRequest {
    FailbackRequest {
        vm: vm.name.to_string(),
        // A failback in progress keeps the mode it was started with.
        sync: observed.sync_mode.unwrap_or(s.sync),
        create_if_missing: s.create_if_missing,
        target_host: vm.host.to_string(),
    }
}

/// The primary site and the VM's host must be reachable for any step.
fn connectivity(plan: &FailbackPlan, vm: &Vm, world: &World) -> Option<Blocker> {
    let name = vm.name.as_str();
    let site = plan.spec.primary.site.as_str();
    if !world.primary_connected {
        return Some(Blocker {
            code: "primary-disconnected",
            message: format!(
                "VM '{name}': the primary site '{site}' is not connected; reconnect its VMM server or Hyper-V host to Site Recovery, then run again"
            ),
        });
    }
    let host = vm.host.as_str();
    match world.host(host) {
        None => Some(Blocker {
            code: "host-unknown",
            message: format!(
                "VM '{name}': host '{host}' is not registered in the primary site '{site}'; register it or choose another host in the plan"
            ),
        }),
        Some(h) if !h.connected => Some(Blocker {
            code: "host-disconnected",
            message: format!(
                "VM '{name}': host '{host}' is not connected; bring it online, then run again"
            ),
        }),
        Some(_) => None,
    }
}

/// failback.md, "Preconditions": checked before anything changes.
fn preconditions(
    vm: &Vm,
    s: &EffectiveSettings,
    observed: &ObservedVm,
    world: &World,
) -> Option<Blocker> {
    let name = vm.name.as_str();
    let host = vm.host.as_str();
    if !observed.failover_committed {
        return Some(Blocker {
            code: "failover-not-committed",
            message: format!(
                "VM '{name}': the earlier failover to the recovery site is not committed; commit it first"
            ),
        });
    }
    if !observed.has_recovery_point {
        return Some(Blocker {
            code: "no-recovery-point",
            message: format!(
                "VM '{name}' has no recovery point yet; wait for replication to produce one"
            ),
        });
    }
    if observed.primary_running {
        return Some(Blocker {
            code: "primary-running",
            message: format!(
                "VM '{name}' is running on the primary site; shut the on-premises copy down before failing back (it would be overwritten)"
            ),
        });
    }
    match (&observed.primary_host, observed.primary_exists) {
        (_, false) if !s.create_if_missing => {
            return Some(Blocker {
                code: "vm-missing",
                message: format!(
                    "VM '{name}' does not exist on the primary site; set `createIfMissing: true` to create it on '{host}' (alternate location)"
                ),
            });
        }
        (Some(on), true) if on != host && !s.create_if_missing => {
            return Some(Blocker {
                code: "host-mismatch",
                message: format!(
                    "VM '{name}' exists on host '{on}', but the plan places it on '{host}'; set `createIfMissing: true` for an alternate-location failback, or change `host` to '{on}'"
                ),
            });
        }
        _ => {}
    }
    if let Some(switches) = world.host(host).and_then(|h| h.vswitches.as_ref()) {
        for net in &vm.networks {
            if !switches.iter().any(|sw| sw == net.vswitch.as_str()) {
                return Some(Blocker {
                    code: "vswitch-missing",
                    message: format!(
                        "VM '{name}': host '{host}' has no vSwitch named '{}'; create it on the host (same name as before failover) or change the plan",
                        net.vswitch
                    ),
                });
            }
        }
    }
    None
}

/// The steps `apply` would still take for a VM, in order, from its
/// observed state (or from the start when it is not observed).
pub fn remaining_steps(
    plan: &FailbackPlan,
    vm: &Vm,
    observed: Option<&ObservedVm>,
) -> Vec<&'static str> {
    let s = plan.effective(vm);
    let state = observed.map_or(Lifecycle::RunningInRecovery, |o| o.state);
    let sync = observed.and_then(|o| o.sync_mode).unwrap_or(s.sync);
    let end = end_state(&s);
    let mut steps: Vec<(Lifecycle, &'static str)> = Vec::new();
    steps.push((Lifecycle::RunningInRecovery, "preflight"));
    match sync {
        SyncMode::Delta => {
            steps.push((Lifecycle::Syncing, "sync-delta"));
            steps.push((Lifecycle::AwaitingCompletion, "complete"));
            steps.push((Lifecycle::FinalSync, "shutdown-recovery"));
            steps.push((Lifecycle::FinalSync, "final-sync"));
        }
        SyncMode::Full => {
            steps.push((Lifecycle::Syncing, "shutdown-recovery"));
            steps.push((Lifecycle::Syncing, "sync-full"));
        }
    }
    steps.push((Lifecycle::FinalSync, "start-primary"));
    if end > Lifecycle::CommitPending {
        if vm.verify.is_some() {
            steps.push((Lifecycle::CommitPending, "verify"));
        }
        steps.push((Lifecycle::CommitPending, "commit"));
    }
    if end > Lifecycle::Committed {
        steps.push((Lifecycle::Committed, "reverse-replicate"));
    }
    let lost_start = observed.is_some_and(lost_start);
    if state >= end && !lost_start {
        return Vec::new();
    }
    steps
        .into_iter()
        .filter(|(at, step)| *at >= state || (lost_start && *step == "start-primary"))
        .map(|(_, step)| step)
        .collect()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
