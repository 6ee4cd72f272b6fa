//! `failback apply PLAN`: converge, group by group, stopping at gates.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::engine::Gate;
use crate::engine::run::{self, Event, EventSink, RunOptions, RunReport, VmOutcome};

use super::state::{Journal, LockError, RecordedApprovals, RunLock};
use super::{Exit, Format, GlobalArgs, load, output, world};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Pre-approve a gate for every VM in this run (repeatable).
    #[arg(long = "approve", value_enum)]
    pub approve: Vec<Gate>,
}

pub fn run(global: &GlobalArgs, args: &ApplyArgs) -> Exit {
    let plan = match load::load_plan(global, &args.plan) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let name = plan.metadata.name.to_string();
    let _lock = match RunLock::acquire(&global.state_dir, &name) {
        Ok(lock) => lock,
        Err(LockError::Held(owner)) => {
            let who = owner.map_or_else(|| "another process".to_owned(), |o| o.to_string());
            output::err_line(&format!(
                "error: plan '{name}' is being applied by {who}; wait for it to finish, or stop it"
            ));
            return Exit::Locked;
        }
        Err(LockError::Io(e)) => {
            output::err_line(&format!("error: {e}"));
            return Exit::Failed;
        }
    };
    let mut approvals = match RecordedApprovals::load(&global.state_dir, &name) {
        Ok(a) => a.to_approvals(),
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            return Exit::Failed;
        }
    };
    approvals.all.extend(args.approve.iter().copied());
    let rt = match world::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let provider = match world::open(global, &plan, true) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let journal = Journal::open(&global.state_dir, &name);
    let sink: Arc<dyn EventSink> = match global.format {
        Format::Json => Arc::new(JsonSink { journal }),
        _ => Arc::new(HumanSink::new(journal, std::io::stderr().is_terminal())),
    };
    let options = RunOptions {
        approvals,
        ..RunOptions::default()
    };
    let report = rt.block_on(run::apply(plan, provider, Arc::clone(&sink), options));
    if global.format != Format::Json {
        output::out(&summary(&report));
    }
    if report.failed() {
        Exit::Failed
    } else if report.at_gate() {
        Exit::AtGate
    } else {
        Exit::Success
    }
}

fn event_json(event: &Event) -> serde_json::Value {
    let mut value = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    if let Some(map) = value.as_object_mut() {
        map.insert("version".into(), json!(1));
        map.insert(
            "time".into(),
            json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
    }
    value
}

/// One JSON object per line on stdout (progress events are journaled only
/// every few per step, to keep the stream readable).
struct JsonSink {
    journal: Journal,
}

impl EventSink for JsonSink {
    fn emit(&self, event: Event) {
        let line = event_json(&event);
        if !matches!(event, Event::StepProgress { .. }) {
            self.journal.append(&line.to_string());
        }
        output::out_json(&line);
    }
}

/// Progress bars on a terminal, plain lines otherwise; both on stderr.
struct HumanSink {
    journal: Journal,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl HumanSink {
    fn new(journal: Journal, terminal: bool) -> Self {
        let bars = terminal.then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        HumanSink { journal, bars }
    }

    fn bar(&self, vm: &str) -> Option<ProgressBar> {
        let (multi, bars) = self.bars.as_ref()?;
        let mut bars = bars.lock().ok()?;
        Some(
            bars.entry(vm.to_owned())
                .or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>16} {msg:<18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(vm.to_owned());
                    bar
                })
                .clone(),
        )
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => output::err_line(&text),
        }
    }
}

impl EventSink for HumanSink {
    fn emit(&self, event: Event) {
        if !matches!(event, Event::StepProgress { .. }) {
            self.journal.append(&event_json(&event).to_string());
        }
        match event {
            Event::RunStarted { plan, vms } => self.line(format!("applying plan '{plan}' ({vms} VMs)")),
            Event::StepStarted { vm, group, step } => {
                if let Some(bar) = self.bar(&vm) {
                    bar.set_message(step.to_owned());
                    bar.set_position(0);
                } else {
                    self.line(format!("[{group}/{vm}] {step} …"));
                }
            }
            Event::StepProgress { vm, bytes_done, bytes_total } => {
                if let Some(bar) = self.bar(&vm) {
                    bar.set_length(bytes_total);
                    bar.set_position(bytes_done);
                }
            }
            Event::StepFinished { vm, group, step, state } => self.line(format!("[{group}/{vm}] {step} done → {state}")),
            Event::StepFailed { vm, group, step, cause } => self.line(format!("[{group}/{vm}] {step} FAILED: {cause}")),
            Event::GateWaiting { vm, group, gate } => self.line(format!(
                "[{group}/{vm}] waits at the {} gate: approve with `failback approve PLAN --gate {} --vm {vm}`",
                gate.as_str(),
                gate.as_str()
            )),
            Event::VmConverged { vm, group, state } => {
                if let Some(bar) = self.bar(&vm) {
                    bar.finish_and_clear();
                }
                self.line(format!("[{group}/{vm}] converged: {state}"));
            }
            Event::GroupHeldBack { group, because } => self.line(format!("group {group} held back: {because}")),
            Event::RunFinished { .. } => {
                if let Some((multi, _)) = &self.bars {
                    let _ = multi.clear();
                }
            }
        }
    }
}

fn summary(report: &RunReport) -> String {
    let mut out = format!(
        "\n{:<20} {:<12} {:<40} {:>10}\n",
        "VM", "GROUP", "OUTCOME", "DOWNTIME"
    );
    for vm in &report.vms {
        let outcome = match &vm.outcome {
            VmOutcome::Converged { state } => state.to_string(),
            VmOutcome::AtGate { gate } => format!("waiting at {} gate", gate.as_str()),
            VmOutcome::Blocked { code, .. } => format!("blocked: {code}"),
            VmOutcome::Failed { step, .. } => format!("failed at {step}"),
            VmOutcome::HeldBack => "held back".to_owned(),
        };
        let downtime = vm
            .downtime_ms
            .map_or_else(|| "-".to_owned(), |d| format!("{d} ms"));
        out.push_str(&format!(
            "{:<20} {:<12} {:<40} {:>10}\n",
            vm.name, vm.group, outcome, downtime
        ));
    }
    for vm in &report.vms {
        match &vm.outcome {
            VmOutcome::Blocked { message: cause, .. } | VmOutcome::Failed { cause, .. } => {
                out.push_str(&format!("\n{}: {cause}", vm.name));
            }
            _ => {}
        }
    }
    if report.failed() {
        out.push('\n');
    }
    out
}
