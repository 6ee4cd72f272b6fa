//! The run engine against an in-memory provider that follows the state
//! machine, records every call, and can be told to fail.

use std::sync::Mutex;

use super::*;
use crate::plan::{CommitPolicy, Completion, SyncMode};
use crate::provider::{BoxFuture, FailbackRequest, ObservedHost, ObservedVm, ProviderResult};

#[derive(Default)]
struct Fake {
    world: Mutex<Vec<ObservedVm>>,
    calls: Mutex<Vec<String>>,
    /// Transient errors to return before an action succeeds.
    transient: Mutex<u32>,
    /// VM whose complete fails for good (a stuck shutdown).
    stuck: Option<String>,
    in_flight: Mutex<(usize, usize)>,
    /// Observations made: of the whole world, of one VM.
    observed: Mutex<(u32, u32)>,
}

impl Fake {
    fn new(names: &[&str]) -> Self {
        let vms = names
            .iter()
            .map(|n| ObservedVm {
                name: (*n).to_owned(),
                state: Lifecycle::RunningInRecovery,
                failover_committed: true,
                has_recovery_point: true,
                recovery_exists: true,
                recovery_running: true,
                primary_exists: true,
                primary_host: Some("hv-01".into()),
                primary_running: false,
                sync_mode: None,
                days_in_recovery: 3,
                downtime_ms: None,
            })
            .collect();
        Fake {
            world: Mutex::new(vms),
            ..Fake::default()
        }
    }

    fn set(&self, vm: &str, f: impl FnOnce(&mut ObservedVm)) {
        let mut w = self.world.lock().unwrap();
        if let Some(v) = w.iter_mut().find(|v| v.name == vm) {
            f(v);
        }
    }

    fn state(&self, vm: &str) -> Lifecycle {
        self.world
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.name == vm)
            .unwrap()
            .state
    }

    async fn act(
        &self,
        call: String,
        f: impl FnOnce(&Self) -> ProviderResult<()>,
    ) -> ProviderResult<()> {
        {
            let mut t = self.transient.lock().unwrap();
            if *t > 0 {
                *t -= 1;
                return Err(ProviderError::Transient("service busy".into()));
            }
        }
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        tokio::task::yield_now().await;
        self.calls.lock().unwrap().push(call);
        let r = f(self);
        self.in_flight.lock().unwrap().0 -= 1;
        r
    }
}

impl Provider for Fake {
    fn observe<'a>(&'a self, _plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>> {
        self.observed.lock().unwrap().0 += 1;
        Box::pin(async move {
            Ok(World {
                primary_connected: true,
                hosts: vec![ObservedHost {
                    name: "hv-01".into(),
                    connected: true,
                    vswitches: Some(vec!["Production".into()]),
                }],
                vms: self.world.lock().unwrap().clone(),
            })
        })
    }

    fn observe_vm<'a>(
        &'a self,
        plan: &'a FailbackPlan,
        vm: &'a str,
    ) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async move {
            let mut world = self.observe(plan).await?;
            let mut observed = self.observed.lock().unwrap();
            *observed = (observed.0 - 1, observed.1 + 1);
            world.vms.retain(|v| v.name == vm);
            Ok(world)
        })
    }

    fn start_failback<'a>(
        &'a self,
        req: &'a FailbackRequest,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(self.act(format!("start {}", req.vm), move |s| {
            let full = req.sync == SyncMode::Full;
            s.set(&req.vm, |v| {
                v.sync_mode = Some(req.sync);
                v.state = if full {
                    Lifecycle::CommitPending
                } else {
                    Lifecycle::AwaitingCompletion
                };
                v.primary_running = full;
                v.downtime_ms = full.then_some(7);
            });
            Ok(())
        }))
    }

    fn complete<'a>(&'a self, vm: &'a str, _p: ProgressFn) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(self.act(format!("complete {vm}"), move |s| {
            if s.stuck.as_deref() == Some(vm) {
                return Err(ProviderError::Failed(format!(
                    "recovery VM '{vm}' did not confirm it is off"
                )));
            }
            s.set(vm, |v| {
                v.state = Lifecycle::CommitPending;
                v.primary_running = true;
                v.downtime_ms = Some(5);
            });
            Ok(())
        }))
    }

    fn commit<'a>(&'a self, vm: &'a str) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(self.act(format!("commit {vm}"), move |s| {
            s.set(vm, |v| v.state = Lifecycle::Committed);
            Ok(())
        }))
    }

    fn reverse_replicate<'a>(
        &'a self,
        vm: &'a str,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(self.act(format!("reprotect {vm}"), move |s| {
            s.set(vm, |v| v.state = Lifecycle::Protected);
            Ok(())
        }))
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl EventSink for Events {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

fn two_groups() -> FailbackPlan {
    let text = crate::validate::tests_support::MINIMAL.replace(
        "          networks: [{ vswitch: Production }]\n",
        "          networks: [{ vswitch: Production }]\n        - name: app-02\n          host: hv-01\n    - name: web\n      vms:\n        - name: web-01\n          host: hv-01\n",
    );
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    serde_json::from_value(v).unwrap()
}

fn options() -> RunOptions {
    let mut o = RunOptions::default();
    o.retry.first_backoff = Duration::from_millis(1);
    o.approvals.all.insert(Gate::Commit);
    o
}

async fn run(plan: FailbackPlan, fake: &Arc<Fake>, o: RunOptions) -> (RunReport, Vec<Event>) {
    let events = Arc::new(Events::default());
    let provider: Arc<dyn Provider> = Arc::clone(fake) as Arc<dyn Provider>;
    let report = apply(plan, provider, Arc::clone(&events) as Arc<dyn EventSink>, o).await;
    let evs = events.0.lock().unwrap().clone();
    (report, evs)
}

#[tokio::test]
async fn converges_group_by_group_and_a_second_run_changes_nothing() {
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    let (report, _) = run(two_groups(), &fake, options()).await;
    assert!(!report.failed() && !report.at_gate(), "{report:?}");
    for vm in ["app-01", "app-02", "web-01"] {
        assert_eq!(fake.state(vm), Lifecycle::Protected);
    }
    let calls = fake.calls.lock().unwrap().clone();
    let first_web = calls.iter().position(|c| c.ends_with("web-01")).unwrap();
    let last_app = calls.iter().rposition(|c| c.contains("app-0")).unwrap();
    assert!(
        last_app < first_web,
        "group app must finish before web starts: {calls:?}"
    );
    assert_eq!(calls.len(), 12);
    // The whole world once per group; after each of the 12 steps only the
    // VM that moved (a 10,000-VM plan would otherwise read every VM twice
    // per step).
    assert_eq!(*fake.observed.lock().unwrap(), (2, 12));

    let (again, events) = run(two_groups(), &fake, options()).await;
    assert!(!again.failed());
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        12,
        "a converged plan makes no call"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::StepStarted { .. }))
    );
}

#[tokio::test]
async fn gates_stop_and_let_later_groups_go_on() {
    let mut plan = two_groups();
    plan.spec.groups[0].vms[0].completion = Some(Completion::Manual);
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    let mut o = options();
    o.approvals.all.clear();
    let (report, events) = run(plan.clone(), &fake, o.clone()).await;
    assert!(report.at_gate() && !report.failed());
    assert_eq!(fake.state("app-01"), Lifecycle::AwaitingCompletion);
    assert_eq!(fake.state("app-02"), Lifecycle::CommitPending);
    assert_eq!(
        fake.state("web-01"),
        Lifecycle::CommitPending,
        "a gate does not hold back the next group"
    );
    assert!(events.iter().any(
        |e| matches!(e, Event::GateWaiting { vm, gate: Gate::Completion, .. } if vm == "app-01")
    ));

    o.approvals.vms.insert((Gate::Completion, "app-01".into()));
    o.approvals.all.insert(Gate::Commit);
    let (report, _) = run(plan, &fake, o).await;
    assert!(!report.at_gate() && !report.failed(), "{report:?}");
    assert_eq!(fake.state("app-01"), Lifecycle::Protected);
}

#[tokio::test]
async fn a_failure_names_vm_and_step_and_holds_back_later_groups() {
    let fake = Arc::new(Fake {
        stuck: Some("app-02".into()),
        ..Fake::new(&["app-01", "app-02", "web-01"])
    });
    let (report, events) = run(two_groups(), &fake, options()).await;
    assert!(report.failed());
    let app02 = report.vms.iter().find(|v| v.name == "app-02").unwrap();
    assert!(
        matches!(&app02.outcome, VmOutcome::Failed { step: "complete", cause } if cause.contains("app-02"))
    );
    assert_eq!(fake.state("app-02"), Lifecycle::AwaitingCompletion);
    assert_eq!(
        fake.state("web-01"),
        Lifecycle::RunningInRecovery,
        "later groups are held back"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::GroupHeldBack { group, .. } if group == "web"))
    );
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished { exit: 1, .. })
    ));
}

#[tokio::test]
async fn transient_errors_are_retried_after_re_observing() {
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    *fake.transient.lock().unwrap() = 3;
    let (report, _) = run(two_groups(), &fake, options()).await;
    assert!(!report.failed(), "{report:?}");
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        12,
        "no action is applied twice"
    );
}

#[tokio::test]
async fn parallelism_bounds_vms_in_flight() {
    let mut plan = two_groups();
    plan.spec.parallelism = 1;
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    let (report, _) = run(plan, &fake, options()).await;
    assert!(!report.failed());
    assert_eq!(fake.in_flight.lock().unwrap().1, 1);
}

#[tokio::test]
async fn a_failing_verify_never_commits() {
    let mut plan = two_groups();
    for vm in &mut plan.spec.groups[0].vms {
        vm.commit = Some(CommitPolicy::Auto);
        vm.verify = Some(crate::plan::Verify {
            command: vec![
                "sh".into(),
                "-c".into(),
                "test \"$FAILBACK_VM\" = app-01".into(),
            ],
            timeout: Duration::from_secs(10),
        });
    }
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    let mut o = options();
    o.approvals.all.clear();
    let (report, _) = run(plan, &fake, o).await;
    assert_eq!(
        fake.state("app-01"),
        Lifecycle::Protected,
        "verify passed for app-01"
    );
    assert_eq!(
        fake.state("app-02"),
        Lifecycle::CommitPending,
        "verify failed: not committed"
    );
    let app02 = report.vms.iter().find(|v| v.name == "app-02").unwrap();
    assert!(
        matches!(&app02.outcome, VmOutcome::Failed { step: "commit", cause } if cause.contains("verify"))
    );
}

#[tokio::test]
async fn full_sync_records_downtime() {
    let mut plan = two_groups();
    plan.spec.defaults.sync = Some(SyncMode::Full);
    let fake = Arc::new(Fake::new(&["app-01", "app-02", "web-01"]));
    let (report, events) = run(plan, &fake, options()).await;
    assert!(
        report.vms.iter().all(|v| v.downtime_ms == Some(7)),
        "{report:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::RunFinished { exit: 0, downtime_ms }) if downtime_ms.len() == 3)
    );
}
