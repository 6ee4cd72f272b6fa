//! Executing decisions: groups in order, VMs of a group concurrently (at
//! most `parallelism` in flight), gates, `verify` checks, retries with
//! backoff, and an event for everything that happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::{Instrument, info_span, warn};

use super::reconcile::{Action, Approvals, Blocker, Decision, Gate, decide};
use crate::plan::{FailbackPlan, Verify, Vm};
use crate::provider::{Lifecycle, Progress, ProgressFn, Provider, ProviderError, World};

/// Something that happened during a run (cli.md, `apply --format json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        plan: String,
        vms: usize,
    },
    StepStarted {
        vm: String,
        group: String,
        step: &'static str,
    },
    StepFinished {
        vm: String,
        group: String,
        step: &'static str,
        state: Lifecycle,
    },
    StepFailed {
        vm: String,
        group: String,
        step: &'static str,
        cause: String,
    },
    StepProgress {
        vm: String,
        bytes_done: u64,
        bytes_total: u64,
    },
    GateWaiting {
        vm: String,
        group: String,
        gate: Gate,
    },
    VmConverged {
        vm: String,
        group: String,
        state: Lifecycle,
    },
    GroupHeldBack {
        group: String,
        because: String,
    },
    RunFinished {
        exit: u8,
        downtime_ms: BTreeMap<String, u64>,
    },
}

/// Receives events as they happen.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// How a VM ended this run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum VmOutcome {
    Converged {
        state: Lifecycle,
    },
    AtGate {
        gate: Gate,
    },
    Blocked {
        code: &'static str,
        message: String,
    },
    Failed {
        step: &'static str,
        cause: String,
    },
    /// Not started: an earlier group did not finish.
    HeldBack,
}

#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    pub name: String,
    pub group: String,
    #[serde(flatten)]
    pub outcome: VmOutcome,
    pub downtime_ms: Option<u64>,
}

/// What a run achieved.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub vms: Vec<VmReport>,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        self.vms.iter().any(|v| {
            matches!(
                v.outcome,
                VmOutcome::Failed { .. } | VmOutcome::Blocked { .. }
            )
        })
    }

    pub fn at_gate(&self) -> bool {
        self.vms
            .iter()
            .any(|v| matches!(v.outcome, VmOutcome::AtGate { .. }))
    }
}

/// Retries of transient provider errors.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub approvals: Approvals,
    pub retry: RetryPolicy,
}

/// Test-only crash hook: with `FAILBACK_TEST_ABORT_AT_STEP=N` in a debug
/// build, the process aborts (as under `kill -9`) just before its N-th step
/// starts. Release builds ignore it.
fn abort_hook(counter: &AtomicU32) {
    if !cfg!(debug_assertions) {
        return;
    }
    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(at) = std::env::var("FAILBACK_TEST_ABORT_AT_STEP")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        && n >= at
    {
        std::process::abort();
    }
}

struct Shared {
    plan: FailbackPlan,
    provider: Arc<dyn Provider>,
    sink: Arc<dyn EventSink>,
    options: RunOptions,
    steps: AtomicU32,
}

/// Converges the plan: takes the next safe step for each VM until each is
/// done, waits at a gate, or is stopped by an error. A group starts only
/// when every VM of the group before it is done or at a gate.
pub async fn apply(
    plan: FailbackPlan,
    provider: Arc<dyn Provider>,
    sink: Arc<dyn EventSink>,
    options: RunOptions,
) -> RunReport {
    let span = info_span!("run", plan = %plan.metadata.name);
    run_groups(plan, provider, sink, options)
        .instrument(span)
        .await
}

async fn run_groups(
    plan: FailbackPlan,
    provider: Arc<dyn Provider>,
    sink: Arc<dyn EventSink>,
    options: RunOptions,
) -> RunReport {
    let parallelism = usize::from(plan.spec.parallelism.max(1));
    let semaphore = Arc::new(Semaphore::new(parallelism));
    sink.emit(Event::RunStarted {
        plan: plan.metadata.name.to_string(),
        vms: plan.vms().count(),
    });
    let shared = Arc::new(Shared {
        plan,
        provider,
        sink,
        options,
        steps: AtomicU32::new(0),
    });
    let mut reports = Vec::new();
    let mut stop: Option<String> = None;
    for (g, group) in shared.plan.spec.groups.iter().enumerate() {
        let group_name = group.name.to_string();
        if let Some(because) = &stop {
            shared.sink.emit(Event::GroupHeldBack {
                group: group_name.clone(),
                because: because.clone(),
            });
            reports.extend(group.vms.iter().map(|vm| VmReport {
                name: vm.name.to_string(),
                group: group_name.clone(),
                outcome: VmOutcome::HeldBack,
                downtime_ms: None,
            }));
            continue;
        }
        // One observation serves every VM's first decision: a converged or
        // gated VM then costs no observation of its own, whatever the plan's
        // size. Every later decision observes afresh.
        let snapshot = observe(&shared, None).await.ok().map(Arc::new);
        let mut tasks = tokio::task::JoinSet::new();
        for v in 0..group.vms.len() {
            let shared = Arc::clone(&shared);
            let semaphore = Arc::clone(&semaphore);
            let snapshot = snapshot.clone();
            let span = info_span!("vm", vm = %group.vms[v].name, group = %group_name);
            tasks.spawn(
                async move {
                    let _permit = semaphore.acquire_owned().await;
                    converge_vm(&shared, g, v, snapshot).await
                }
                .instrument(span),
            );
        }
        let mut group_reports = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(report) => group_reports.push(report),
                Err(e) => warn!("a VM task ended abnormally: {e}"),
            }
        }
        group_reports.sort_by_key(|r| group.vms.iter().position(|vm| vm.name.as_str() == r.name));
        if let Some(bad) = group_reports.iter().find(|r| {
            matches!(
                r.outcome,
                VmOutcome::Failed { .. } | VmOutcome::Blocked { .. }
            )
        }) {
            stop = Some(format!(
                "VM '{}' of group '{group_name}' did not finish",
                bad.name
            ));
        }
        reports.extend(group_reports);
    }
    let report = RunReport { vms: reports };
    let downtime_ms = report
        .vms
        .iter()
        .filter_map(|v| v.downtime_ms.map(|d| (v.name.clone(), d)))
        .collect();
    let exit = if report.failed() {
        1
    } else if report.at_gate() {
        3
    } else {
        0
    };
    shared.sink.emit(Event::RunFinished { exit, downtime_ms });
    report
}

/// The most decisions one VM takes in a run: more means the provider does
/// not advance, and the run stops rather than loop.
const MAX_DECISIONS: u32 = 32;

async fn converge_vm(
    shared: &Shared,
    g: usize,
    v: usize,
    mut snapshot: Option<Arc<World>>,
) -> VmReport {
    let group = &shared.plan.spec.groups[g];
    let vm = &group.vms[v];
    let name = vm.name.to_string();
    let group_name = group.name.to_string();
    let report = |outcome: VmOutcome, world: Option<&World>| VmReport {
        name: name.clone(),
        group: group_name.clone(),
        outcome,
        downtime_ms: world.and_then(|w| w.vm(&name)).and_then(|o| o.downtime_ms),
    };
    let mut retries = 0u32;
    let mut last_world: Option<Arc<World>> = None;
    for _ in 0..MAX_DECISIONS {
        let observed = match snapshot.take() {
            Some(world) => Ok(world),
            None => observe(shared, None).await.map(Arc::new),
        };
        let world = match observed {
            Ok(w) => w,
            Err(cause) => {
                shared.sink.emit(Event::StepFailed {
                    vm: name.clone(),
                    group: group_name.clone(),
                    step: "observe",
                    cause: cause.clone(),
                });
                return report(
                    VmOutcome::Failed {
                        step: "observe",
                        cause,
                    },
                    last_world.as_deref(),
                );
            }
        };
        let decision = decide(&shared.plan, vm, &world, &shared.options.approvals);
        let action = match decision {
            Decision::Done => {
                let state = world.vm(&name).map_or(Lifecycle::Protected, |o| o.state);
                shared.sink.emit(Event::VmConverged {
                    vm: name.clone(),
                    group: group_name.clone(),
                    state,
                });
                return report(VmOutcome::Converged { state }, Some(&world));
            }
            Decision::Wait(gate) => {
                shared.sink.emit(Event::GateWaiting {
                    vm: name.clone(),
                    group: group_name.clone(),
                    gate,
                });
                return report(VmOutcome::AtGate { gate }, Some(&world));
            }
            Decision::Blocked(Blocker { code, message }) => {
                shared.sink.emit(Event::StepFailed {
                    vm: name.clone(),
                    group: group_name.clone(),
                    step: "preflight",
                    cause: message.clone(),
                });
                return report(VmOutcome::Blocked { code, message }, Some(&world));
            }
            Decision::Act(action) => action,
        };
        last_world = Some(world);
        let step = action.step();
        abort_hook(&shared.steps);
        shared.sink.emit(Event::StepStarted {
            vm: name.clone(),
            group: group_name.clone(),
            step,
        });
        let result = execute(shared, vm, &action)
            .instrument(info_span!("step", step))
            .await;
        match result {
            Ok(()) => {
                // One VM observed after its step: its new state for the
                // event, and the world of its next decision (a failed
                // observation is made again, in full, by the next loop).
                let after = observe(shared, Some(&name)).await.ok().map(Arc::new);
                let state = after
                    .as_ref()
                    .and_then(|w| w.vm(&name).map(|o| o.state))
                    .unwrap_or(Lifecycle::RunningInRecovery);
                snapshot = after;
                shared.sink.emit(Event::StepFinished {
                    vm: name.clone(),
                    group: group_name.clone(),
                    step,
                    state,
                });
                retries = 0;
            }
            Err(StepError::Retry(cause)) if retries + 1 < shared.options.retry.attempts => {
                retries += 1;
                let backoff = shared
                    .options
                    .retry
                    .first_backoff
                    .saturating_mul(1 << retries.min(16))
                    .min(shared.options.retry.max_backoff);
                warn!(vm = %name, step, attempt = retries, "transient error, re-observing after {backoff:?}: {cause}");
                tokio::time::sleep(backoff).await;
            }
            Err(StepError::Retry(cause) | StepError::Fatal(cause)) => {
                shared.sink.emit(Event::StepFailed {
                    vm: name.clone(),
                    group: group_name.clone(),
                    step,
                    cause: cause.clone(),
                });
                return report(VmOutcome::Failed { step, cause }, last_world.as_deref());
            }
        }
    }
    let cause =
        format!("no progress after {MAX_DECISIONS} steps; the provider does not advance this VM");
    shared.sink.emit(Event::StepFailed {
        vm: name.clone(),
        group: group_name.clone(),
        step: "reconcile",
        cause: cause.clone(),
    });
    report(
        VmOutcome::Failed {
            step: "reconcile",
            cause,
        },
        last_world.as_deref(),
    )
}

/// The world, in full or (`vm` given) only what one VM's decision needs,
/// retrying transient errors.
async fn observe(shared: &Shared, vm: Option<&str>) -> Result<World, String> {
    let mut attempt = 0;
    loop {
        let observed = match vm {
            Some(vm) => shared.provider.observe_vm(&shared.plan, vm).await,
            None => shared.provider.observe(&shared.plan).await,
        };
        match observed {
            Ok(w) => return Ok(w),
            Err(ProviderError::Transient(e)) if attempt + 1 < shared.options.retry.attempts => {
                attempt += 1;
                tokio::time::sleep(
                    shared
                        .options
                        .retry
                        .first_backoff
                        .saturating_mul(1 << attempt),
                )
                .await;
                warn!("observing failed, retrying: {e}");
            }
            Err(e) => return Err(format!("observing the world failed: {e}")),
        }
    }
}

enum StepError {
    /// Re-observe, then decide again (transient error or conflict).
    Retry(String),
    Fatal(String),
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Transient(m) | ProviderError::Conflict(m) => StepError::Retry(m),
            ProviderError::Failed(m) => StepError::Fatal(m),
        }
    }
}

async fn execute(shared: &Shared, vm: &Vm, action: &Action) -> Result<(), StepError> {
    let sink = Arc::clone(&shared.sink);
    let progress: ProgressFn = Arc::new(move |p: Progress| {
        sink.emit(Event::StepProgress {
            vm: p.vm,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
        });
    });
    let name = vm.name.as_str();
    let provider = &shared.provider;
    match action {
        Action::StartFailback(req) => provider.start_failback(req, progress).await?,
        Action::Complete => provider.complete(name, progress).await?,
        Action::Commit(verify) => {
            if let Some(check) = verify {
                run_verify(vm, check).await.map_err(StepError::Fatal)?;
            }
            provider.commit(name).await?;
        }
        Action::ReverseReplicate => provider.reverse_replicate(name, progress).await?,
    }
    Ok(())
}

/// Runs the health check with `FAILBACK_VM` and `FAILBACK_HOST` set; it must
/// exit 0 within its timeout.
async fn run_verify(vm: &Vm, check: &Verify) -> Result<(), String> {
    let Some((program, args)) = check.command.split_first() else {
        return Err(format!("VM '{}': verify has an empty command", vm.name));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("FAILBACK_VM", vm.name.as_str())
        .env("FAILBACK_HOST", vm.host.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| {
        format!(
            "VM '{}': cannot run verify command '{program}': {e}",
            vm.name
        )
    })?;
    match tokio::time::timeout(check.timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "VM '{}': verify command '{program}' did not finish within {}; the VM was not committed",
            vm.name,
            humantime::format_duration(check.timeout)
        )),
        Ok(Err(e)) => Err(format!(
            "VM '{}': verify command '{program}' failed to run: {e}",
            vm.name
        )),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            Err(format!(
                "VM '{}': verify command '{program}' failed ({}){}; the VM was not committed",
                vm.name,
                out.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests;
