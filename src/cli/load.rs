//! Reading plan files: the file system side of validation.

use std::io::Read;
use std::path::Path;

use crate::diagnostics::render::{self, HumanStyle};
use crate::plan::FailbackPlan;
use crate::validate::{self, Checked, MAX_PLAN_BYTES, Origin};

use super::{Exit, GlobalArgs, output};

/// Reads at most one byte more than a plan may have: a larger file is
/// reported as too large without being read whole.
pub fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Loads and checks the plan a command operates on. Problems are printed
/// to stderr; warnings are printed and the plan is returned.
pub fn load_plan(global: &GlobalArgs, path: &Path) -> Result<FailbackPlan, Exit> {
    let shown = path.display().to_string();
    let bytes = match read_capped(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            output::err_line(&format!("error: cannot read plan '{shown}': {e}"));
            return Err(Exit::NoInput);
        }
    };
    match validate::check(&shown, &bytes, Origin::Named) {
        Checked::Plan(report, plan) => {
            if !report.diagnostics.is_empty() {
                let style = HumanStyle {
                    color: global.stderr_color(),
                    unicode: true,
                    width: 100,
                };
                output::err(&render::human(&report, style));
            }
            match plan {
                Some(plan) => Ok(*plan),
                None => {
                    output::err_line(&format!(
                        "error: {}; run `failback validate {shown}` for details",
                        render::summary_line(&report, false)
                    ));
                    Err(Exit::Invalid)
                }
            }
        }
        Checked::NotAPlan => Err(Exit::Invalid),
    }
}
