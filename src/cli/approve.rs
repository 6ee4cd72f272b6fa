//! `failback approve PLAN --gate GATE [--vm NAME]...`: records approval.

use std::path::PathBuf;

use clap::Args;

use crate::engine::{Decision, Gate, decide};

use super::state::RecordedApprovals;
use super::{Exit, GlobalArgs, load, output, world};

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The plan file.
    pub plan: PathBuf,
    /// The gate to approve.
    #[arg(long, value_enum)]
    pub gate: Gate,
    /// The VMs to approve (default: every VM waiting at the gate now).
    #[arg(long = "vm")]
    pub vms: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &ApproveArgs) -> Exit {
    let plan = match load::load_plan(global, &args.plan) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let name = plan.metadata.name.to_string();
    let mut recorded = match RecordedApprovals::load(&global.state_dir, &name) {
        Ok(a) => a,
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            return Exit::Failed;
        }
    };
    let vms: Vec<String> = if args.vms.is_empty() {
        let observed = match world::observe(global, &plan, false) {
            Ok(w) => w,
            Err(code) => return code,
        };
        let approvals = recorded.to_approvals();
        plan.vms()
            .filter(|(_, vm)| decide(&plan, vm, &observed, &approvals) == Decision::Wait(args.gate))
            .map(|(_, vm)| vm.name.to_string())
            .collect()
    } else {
        for vm in &args.vms {
            if !plan.vms().any(|(_, v)| v.name.as_str() == vm) {
                output::err_line(&format!("error: VM '{vm}' is not in plan '{name}'"));
                return Exit::Usage;
            }
        }
        args.vms.clone()
    };
    if vms.is_empty() {
        output::out_line(&format!(
            "no VM of plan '{name}' waits at the {} gate",
            args.gate.as_str()
        ));
        return Exit::Success;
    }
    for vm in &vms {
        recorded.add(args.gate, vm);
    }
    if let Err(e) = recorded.save(&global.state_dir, &name) {
        output::err_line(&format!("error: {e}"));
        return Exit::Failed;
    }
    output::out_line(&format!(
        "approved the {} gate for: {}",
        args.gate.as_str(),
        vms.join(", ")
    ));
    Exit::Success
}
