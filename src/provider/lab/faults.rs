//! `lab fault`: the failures a failback must survive.

use std::path::Path;

use super::LabError;
use super::world::Lab;

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
    let world = &mut locked.world;
    match fault {
        Fault::Disconnect { host: None } => world.primary.connected = false,
        Fault::Connect { host: None } => world.primary.connected = true,
        Fault::Disconnect { host: Some(host) } => world.host_mut(host)?.connected = false,
        Fault::Connect { host: Some(host) } => world.host_mut(host)?.connected = true,
        Fault::RemoveVswitch { host, vswitch } => {
            let h = world.host_mut(host)?;
            let Some(at) = h.vswitches.iter().position(|v| v == vswitch) else {
                return Err(LabError::UnknownVswitch {
                    host: host.clone(),
                    vswitch: vswitch.clone(),
                });
            };
            let removed = h.vswitches.remove(at);
            h.removed_vswitches.push(removed);
        }
        Fault::StuckShutdown { vm } => world.vm_mut(vm)?.faults.stuck_shutdown = true,
        Fault::Clear => {
            world.primary.connected = true;
            for host in &mut world.primary.hosts {
                host.connected = true;
                let removed = std::mem::take(&mut host.removed_vswitches);
                host.vswitches.extend(removed);
            }
            for vm in &mut world.vms {
                vm.faults.stuck_shutdown = false;
            }
        }
    }
    locked.save()
}
