//! Opening the provider a command works against.

use std::sync::Arc;

use crate::plan::FailbackPlan;
use crate::provider::Provider;
use crate::provider::azure::{AzureConfig, AzureProvider};
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
        ProviderKind::Azure => open_azure(global, plan),
    }
}

/// The Azure Site Recovery provider for `plan` (docs/azure.md).
fn open_azure(global: &GlobalArgs, plan: &FailbackPlan) -> Result<Arc<dyn Provider>, Exit> {
    let config = match AzureConfig::new(
        plan.spec.recovery.vault.as_deref(),
        global.vault.as_deref(),
        &global.arm_endpoint,
        &global.api_version,
        global.hyperv_inventory.clone(),
    ) {
        Ok(c) => c,
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            return Err(Exit::Usage);
        }
    };
    if let Some(path) = &config.hyperv_inventory
        && !path.is_file()
    {
        output::err_line(&format!(
            "error: the Hyper-V inventory '{}' does not exist or is not a file",
            path.display()
        ));
        return Err(Exit::NoInput);
    }
    match AzureProvider::from_config(&config, plan, None) {
        Ok(p) => Ok(Arc::new(p)),
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            Err(if config.hyperv_inventory.is_some() {
                Exit::Invalid
            } else {
                Exit::Failed
            })
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

/// The world as the plan's provider observes it now (creating the lab
/// first when `create` allows it).
pub fn observe(
    global: &GlobalArgs,
    plan: &FailbackPlan,
    create: bool,
) -> Result<crate::provider::World, Exit> {
    let rt = runtime()?;
    let provider = open(global, plan, create)?;
    rt.block_on(provider.observe(plan)).map_err(|e| {
        output::err_line(&format!("error: observing the world failed: {e}"));
        Exit::Failed
    })
}
