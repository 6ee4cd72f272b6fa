//! Opening the provider a command works against.

use std::sync::Arc;

use crate::plan::FailbackPlan;
use crate::provider::Provider;
use crate::provider::lab::{self, LabProvider};

use super::{Exit, GlobalArgs, ProviderKind, output};

/// The provider for `plan`. With the lab and no lab world yet, `create`
/// makes one from the plan (as `lab init PLAN` would) and says so.
pub fn open(
    global: &GlobalArgs,
    plan: &FailbackPlan,
    create: bool,
) -> Result<Arc<dyn Provider>, Exit> {
    match global.provider {
        ProviderKind::Lab => {
            if !lab::exists(&global.lab) {
                if !create {
                    output::err_line(&format!(
                        "error: no lab world at '{}'; create one with `failback lab init PLAN`",
                        global.lab.display()
                    ));
                    return Err(Exit::NoInput);
                }
                output::err_line(&format!(
                    "note: no lab world at '{}': creating one from plan '{}' (as `failback lab init` would)",
                    global.lab.display(),
                    plan.metadata.name
                ));
                if let Err(e) = lab::init(&global.lab, plan, &lab::InitOptions::default()) {
                    output::err_line(&format!("error: cannot create the lab: {e}"));
                    return Err(Exit::Failed);
                }
            }
            match LabProvider::open(&global.lab) {
                Ok(p) => Ok(Arc::new(p)),
                Err(e) => {
                    output::err_line(&format!(
                        "error: cannot open the lab at '{}': {e}",
                        global.lab.display()
                    ));
                    Err(Exit::Failed)
                }
            }
        }
        ProviderKind::Azure => {
            output::err_line(
                "error: the Azure Site Recovery provider is not available in this build yet; use `--provider lab`",
            );
            Err(Exit::Usage)
        }
    }
}

/// A runtime for the async engine and providers.
pub fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            output::err_line(&format!("error: cannot start the async runtime: {e}"));
            Exit::Failed
        })
}
