//! `lab fault`: the failures a failback must survive.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::LabError;
use super::store::Lab;
use crate::provider::{ProviderError, ProviderResult};

/// A fault to inject into (or clear from) the lab world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The primary site (or, with a host, only that host) stops answering.
    Disconnect { host: Option<String> },
    /// Reconnects the primary site (or one host).
    Connect { host: Option<String> },
    /// A vSwitch disappears from a host.
    RemoveVswitch { host: String, vswitch: String },
    /// The recovery VM of a VM never confirms it is off.
    StuckShutdown { vm: String },
    /// Everything back to normal: site and hosts connected, removed vSwitches
    /// restored, no stuck shutdown.
    Clear,
}

/// Applies `fault` to the world in `dir`, under the world lock.
///
/// Errors: no world; an unknown host, vSwitch or VM.
pub fn inject_fault(dir: &Path, fault: &Fault) -> Result<(), LabError> {
    let lab = Lab::open(dir)?;
    let mut locked = lab.lock()?;
    match fault {
        Fault::Disconnect { host: None } => locked.primary_mut().connected = false,
        Fault::Connect { host: None } => locked.primary_mut().connected = true,
        Fault::Disconnect { host: Some(host) } => {
            locked.primary_mut().host_mut(host)?.connected = false;
        }
        Fault::Connect { host: Some(host) } => {
            locked.primary_mut().host_mut(host)?.connected = true
        }
        Fault::RemoveVswitch { host, vswitch } => {
            let h = locked.primary_mut().host_mut(host)?;
            let Some(at) = h.vswitches.iter().position(|v| v == vswitch) else {
                return Err(LabError::UnknownVswitch {
                    host: host.clone(),
                    vswitch: vswitch.clone(),
                });
            };
            let removed = h.vswitches.remove(at);
            h.removed_vswitches.push(removed);
        }
        Fault::StuckShutdown { vm } => locked.vm_mut(vm)?.faults.stuck_shutdown = true,
        Fault::Clear => {
            let primary = locked.primary_mut();
            primary.connected = true;
            for host in &mut primary.hosts {
                host.connected = true;
                let removed = std::mem::take(&mut host.removed_vswitches);
                host.vswitches.extend(removed);
            }
            let stuck: Vec<String> = (locked.world().vms.iter())
                .filter(|vm| vm.faults.stuck_shutdown)
                .map(|vm| vm.name.clone())
                .collect();
            for vm in stuck {
                locked.vm_mut(&vm)?.faults.stuck_shutdown = false;
            }
        }
    }
    locked.save()
}

/// Test-only fault point (debug builds only; release builds ignore it):
/// `FAILBACK_TEST_LOSE_REPLY=ACTION[:N][,ACTION[:N]…]`, `ACTION` one of
/// `start-failback`, `complete`, `commit`, `reverse-replicate`. The N-th
/// (default: the first) call of that action in the process that succeeds
/// takes its full effect, world saved, and then returns
/// [`ProviderError::Transient`] as if its reply had timed out: an
/// indeterminate outcome. Never set it otherwise.
pub const TEST_LOSE_REPLY_ENV: &str = "FAILBACK_TEST_LOSE_REPLY";

/// The actions whose reply [`TEST_LOSE_REPLY_ENV`] can lose.
const ACTIONS: [&str; 4] = ["start-failback", "complete", "commit", "reverse-replicate"];

/// Passes `result` through, unless it is a success whose reply the
/// [`TEST_LOSE_REPLY_ENV`] hook loses: then a timeout.
pub(super) fn lose_reply(
    action: &'static str,
    vm: &str,
    result: ProviderResult<()>,
) -> ProviderResult<()> {
    static CALLS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    if !cfg!(debug_assertions) || result.is_err() {
        return result;
    }
    let Ok(spec) = std::env::var(TEST_LOSE_REPLY_ENV) else {
        return result;
    };
    let Some(index) = ACTIONS.iter().position(|a| *a == action) else {
        return result;
    };
    let n = CALLS[index].fetch_add(1, Ordering::Relaxed) + 1;
    let lost = spec.split(',').any(|item| {
        let item = item.trim();
        let (name, at) = item.split_once(':').unwrap_or((item, "1"));
        name == action && at.trim().parse::<u64>().ok() == Some(n)
    });
    if lost {
        tracing::warn!(
            vm,
            action,
            "{TEST_LOSE_REPLY_ENV} is set: losing the reply of an action that took effect"
        );
        return Err(ProviderError::Transient(format!(
            "{action} of VM '{vm}': timed out waiting for the lab's reply; the action may or may not have taken effect (reply lost, injected by {TEST_LOSE_REPLY_ENV})"
        )));
    }
    result
}
