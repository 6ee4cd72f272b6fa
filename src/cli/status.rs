//! `failback status PLAN`: per VM, where it is.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::engine::{Decision, decide};

use super::state::{Journal, RecordedApprovals};
use super::{Exit, Format, GlobalArgs, load, output, world};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The plan file.
    pub plan: PathBuf,
}

pub fn run(global: &GlobalArgs, args: &StatusArgs) -> Exit {
    let plan = match load::load_plan(global, &args.plan) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let name = plan.metadata.name.to_string();
    let approvals = RecordedApprovals::load(&global.state_dir, &name)
        .unwrap_or_default()
        .to_approvals();
    let observed = match world::observe(global, &plan, false) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let last = Journal::last_steps(&global.state_dir, &name);
    let rows: Vec<_> = plan
        .vms()
        .map(|(group, vm)| {
            let o = observed.vm(vm.name.as_str());
            let waiting = match decide(&plan, vm, &observed, &approvals) {
                Decision::Wait(g) => Some(g.as_str()),
                _ => None,
            };
            let site = o.map(|o| {
                if o.primary_running || o.state >= crate::provider::Lifecycle::CommitPending {
                    "primary"
                } else {
                    "recovery"
                }
            });
            json!({
                "name": vm.name, "group": group.name,
                "site": site,
                "state": o.map(|o| o.state.as_str()),
                "lastStep": last.get(vm.name.as_str()),
                "waiting": waiting,
                "downtimeMs": o.and_then(|o| o.downtime_ms),
            })
        })
        .collect();
    match global.format {
        Format::Json => output::out_json(&json!({"version": 1, "plan": name, "vms": rows})),
        _ => {
            let mut out = format!(
                "{:<20} {:<10} {:<9} {:<20} {:<22} {:<10} {:>9}\n",
                "VM", "GROUP", "SITE", "STATE", "LAST STEP", "WAITING", "DOWNTIME"
            );
            for r in &rows {
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                let downtime = r
                    .get("downtimeMs")
                    .and_then(serde_json::Value::as_u64)
                    .map_or_else(|| "-".to_owned(), |d| format!("{d} ms"));
                out.push_str(&format!(
                    "{:<20} {:<10} {:<9} {:<20} {:<22} {:<10} {:>9}\n",
                    s("name"),
                    s("group"),
                    s("site"),
                    s("state"),
                    s("lastStep"),
                    s("waiting"),
                    downtime
                ));
            }
            output::out(&out);
        }
    }
    Exit::Success
}
