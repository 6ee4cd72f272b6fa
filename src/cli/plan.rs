//! `failback plan PLAN`: what `apply` would do, per group and VM. Changes nothing.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::engine::{Decision, decide, remaining_steps};
use crate::plan::FailbackPlan;
use crate::provider::World;

use super::state::RecordedApprovals;
use super::{Exit, Format, GlobalArgs, load, output, world};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// Exit 2 when there are changes pending, 0 when converged.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// One VM's line of the plan.
pub struct PlannedVm {
    pub name: String,
    pub group: String,
    pub state: String,
    pub steps: Vec<&'static str>,
    pub waiting: Option<&'static str>,
    pub blocked: Option<(&'static str, String)>,
}

pub fn compute(
    plan: &FailbackPlan,
    world: &World,
    approvals: &crate::engine::Approvals,
) -> Vec<PlannedVm> {
    plan.vms()
        .map(|(group, vm)| {
            let observed = world.vm(vm.name.as_str());
            let decision = decide(plan, vm, world, approvals);
            let (waiting, blocked) = match &decision {
                Decision::Wait(g) => (Some(g.as_str()), None),
                Decision::Blocked(b) => (None, Some((b.code, b.message.clone()))),
                _ => (None, None),
            };
            PlannedVm {
                name: vm.name.to_string(),
                group: group.name.to_string(),
                state: observed.map_or_else(|| "unknown".to_owned(), |o| o.state.to_string()),
                steps: if matches!(decision, Decision::Done) {
                    Vec::new()
                } else {
                    remaining_steps(plan, vm, observed)
                },
                waiting,
                blocked,
            }
        })
        .collect()
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> Exit {
    let plan = match load::load_plan(global, &args.plan) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let approvals = match RecordedApprovals::load(&global.state_dir, plan.metadata.name.as_str()) {
        Ok(a) => a.to_approvals(),
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            return Exit::Failed;
        }
    };
    let observed = match world::observe(global, &plan, true) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let planned = compute(&plan, &observed, &approvals);
    let converged = planned
        .iter()
        .all(|p| p.steps.is_empty() && p.blocked.is_none());
    let blocked = planned.iter().any(|p| p.blocked.is_some());
    match global.format {
        Format::Json => {
            let vms: Vec<_> = planned
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name, "group": p.group, "state": p.state, "steps": p.steps,
                        "waiting": p.waiting,
                        "blocked": p.blocked.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
                    })
                })
                .collect();
            output::out_json(
                &json!({"version": 1, "plan": plan.metadata.name, "converged": converged, "vms": vms}),
            );
        }
        _ => output::out(&human(&plan, &planned, converged)),
    }
    if blocked {
        Exit::Failed
    } else if args.detailed_exitcode && !converged {
        Exit::ChangesPending
    } else {
        Exit::Success
    }
}

fn human(plan: &FailbackPlan, planned: &[PlannedVm], converged: bool) -> String {
    let mut out = format!("plan '{}'\n", plan.metadata.name);
    let mut group = "";
    for p in planned {
        if p.group != group {
            group = &p.group;
            out.push_str(&format!("\ngroup {group}\n"));
        }
        let what = match (&p.blocked, p.waiting, p.steps.is_empty()) {
            (Some((code, message)), _, _) => format!("BLOCKED [{code}] {message}"),
            (None, _, true) => "nothing to do".to_owned(),
            (None, Some(gate), false) => format!(
                "waits for approval of the {gate} gate, then: {}",
                p.steps.join(" → ")
            ),
            (None, None, false) => p.steps.join(" → "),
        };
        out.push_str(&format!("  {:<20} {:<20} {what}\n", p.name, p.state));
    }
    let pending = planned
        .iter()
        .filter(|p| !p.steps.is_empty() || p.blocked.is_some())
        .count();
    if converged {
        out.push_str("\nconverged: nothing to do\n");
    } else {
        out.push_str(&format!(
            "\n{pending} of {} VMs have steps pending\n",
            planned.len()
        ));
    }
    out
}
