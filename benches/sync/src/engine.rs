//! `engine PLAN`: the reconciler's own cost, without a provider's work. An
//! in-memory provider whose actions are instant (a map of observed VMs
//! behind a mutex) runs `engine::run::apply` over the plan (its `verify`
//! commands removed: they are processes, not engine work), with every gate
//! approved: first a converging run, then a no-op run on the converged
//! world. Prints the wall time of each, the steps taken, and the engine's
//! time per step. The provider reads one VM in constant time
//! (`observe_vm`), as a provider with a per-VM store can; `observe` clones
//! and sorts all of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use failback::engine::reconcile::{Approvals, Gate};
use failback::engine::run::{Event, EventSink, RunOptions, apply};
use failback::plan::{FailbackPlan, SyncMode};
use failback::provider::{
    BoxFuture, FailbackRequest, Lifecycle, ObservedHost, ObservedVm, ProgressFn, Provider,
    ProviderResult, World,
};
use failback::validate::{self, Checked, Origin};

struct InstantProvider {
    hosts: Vec<ObservedHost>,
    vms: Mutex<HashMap<String, ObservedVm>>,
}

impl InstantProvider {
    fn new(plan: &FailbackPlan) -> Self {
        let hosts = plan
            .spec
            .primary
            .hosts
            .iter()
            .map(|h| ObservedHost {
                name: h.name.to_string(),
                connected: true,
                vswitches: Some(h.vswitches.iter().map(|v| v.to_string()).collect()),
            })
            .collect();
        let vms = plan
            .vms()
            .map(|(_, vm)| {
                let name = vm.name.to_string();
                let observed = ObservedVm {
                    name: name.clone(),
                    state: Lifecycle::RunningInRecovery,
                    failover_committed: true,
                    has_recovery_point: true,
                    recovery_exists: true,
                    recovery_running: true,
                    primary_exists: true,
                    primary_host: Some(vm.host.to_string()),
                    primary_running: false,
                    sync_mode: None,
                    days_in_recovery: 3,
                    downtime_ms: None,
                };
                (name, observed)
            })
            .collect();
        InstantProvider {
            hosts,
            vms: Mutex::new(vms),
        }
    }

    fn set(&self, vm: &str, f: impl FnOnce(&mut ObservedVm)) -> ProviderResult<()> {
        if let Some(v) = self.vms.lock().unwrap().get_mut(vm) {
            f(v);
        }
        Ok(())
    }
}

impl Provider for InstantProvider {
    fn observe<'a>(&'a self, _plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move {
            let vms = self.vms.lock().unwrap().values().cloned().collect();
            Ok(World {
                primary_connected: true,
                hosts: self.hosts.clone(),
                vms,
            }
            .sort())
        })
    }

    fn observe_vm<'a>(
        &'a self,
        _plan: &'a FailbackPlan,
        vm: &'a str,
    ) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move {
            let vms = self
                .vms
                .lock()
                .unwrap()
                .get(vm)
                .cloned()
                .into_iter()
                .collect();
            Ok(World {
                primary_connected: true,
                hosts: self.hosts.clone(),
                vms,
            })
        })
    }

    fn start_failback<'a>(
        &'a self,
        req: &'a FailbackRequest,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            let full = req.sync == SyncMode::Full;
            self.set(&req.vm, |v| {
                v.sync_mode = Some(req.sync);
                v.state = if full {
                    Lifecycle::CommitPending
                } else {
                    Lifecycle::AwaitingCompletion
                };
                v.recovery_running = !full;
                v.primary_running = full;
            })
        })
    }

    fn complete<'a>(&'a self, vm: &'a str, _p: ProgressFn) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            self.set(vm, |v| {
                v.state = Lifecycle::CommitPending;
                v.recovery_running = false;
                v.primary_running = true;
            })
        })
    }

    fn commit<'a>(&'a self, vm: &'a str) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move {
            self.set(vm, |v| {
                v.state = Lifecycle::Committed;
                v.recovery_exists = false;
                v.sync_mode = None;
            })
        })
    }

    fn reverse_replicate<'a>(
        &'a self,
        vm: &'a str,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async move { self.set(vm, |v| v.state = Lifecycle::Protected) })
    }
}

/// Counts the steps the engine starts.
#[derive(Default)]
struct Steps(AtomicU64);

impl EventSink for Steps {
    fn emit(&self, event: Event) {
        if matches!(event, Event::StepStarted { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn engine(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let Checked::Plan(_, Some(plan)) =
        validate::check(&path.display().to_string(), &bytes, Origin::Named)
    else {
        return Err(format!("{} is not a valid plan", path.display()).into());
    };
    let mut plan = *plan;
    for group in &mut plan.spec.groups {
        for vm in &mut group.vms {
            vm.verify = None;
        }
    }
    let vms = plan.vms().count();
    let provider = Arc::new(InstantProvider::new(&plan));
    let options = RunOptions {
        approvals: Approvals {
            all: [Gate::Completion, Gate::Commit].into_iter().collect(),
            ..Approvals::default()
        },
        ..RunOptions::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    for (name, expect_steps) in [("converging apply", true), ("no-op apply", false)] {
        let steps = Arc::new(Steps::default());
        let start = Instant::now();
        let report = runtime.block_on(apply(
            plan.clone(),
            provider.clone(),
            steps.clone(),
            options.clone(),
        ));
        let secs = start.elapsed().as_secs_f64();
        let n = steps.0.load(Ordering::Relaxed);
        assert!(!report.failed(), "the {name} failed");
        assert_eq!(n > 0, expect_steps, "{name}: {n} steps");
        let per_step = if n > 0 {
            format!(", {:.1} µs of engine time per step", secs * 1e6 / n as f64)
        } else {
            String::new()
        };
        println!("engine {name}: {vms} VMs, {n} steps in {secs:.3} s{per_step}");
    }
    Ok(())
}
