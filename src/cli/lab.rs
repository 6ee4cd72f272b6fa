//! `failback lab ...`: create, inspect and disturb the lab world (lab.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::provider::lab::{self, Fault, InitOptions, LabError, LabWorld};

use super::load::load_plan;
use super::{Exit, Format, GlobalArgs, output};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create a world in which every VM of the plan failed over, was
    /// committed, and runs in the recovery site, with a stale copy of each
    /// disk on its primary host.
    Init(InitArgs),
    /// Write random blocks into the recovery disks of a running VM, as its
    /// guest would (safe while `apply` runs).
    Write(WriteArgs),
    /// Inject (or clear) a failure.
    Fault {
        #[command(subcommand)]
        fault: FaultCommand,
    },
    /// Show the lab world.
    Show,
    /// Serve the lab world through the Azure Site Recovery REST API (an
    /// emulator for `--provider azure --arm-endpoint URL`); prints its URL.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub listen: std::net::SocketAddr,
    /// Listen on a non-loopback address too (the emulator accepts any token).
    #[arg(long)]
    pub allow_remote: bool,
    /// `Retry-After` seconds sent with 202 answers (Azure sends 30 or so).
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub retry_after: u64,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The plan whose VMs the world holds.
    pub plan: PathBuf,
    /// Size of each disk (`KiB`, `MiB`, `GiB`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_disk_size)]
    pub disk_size: u64,
    /// Disks per VM.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub disks: u32,
    /// Share of the 4 KiB blocks of each primary disk that differ from the
    /// recovery disk.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub drift: f64,
    /// A VM without a primary-side VM (deleted on-premises); repeatable.
    #[arg(long, value_name = "VM")]
    pub missing: Vec<String>,
    /// How long the VMs have run in the recovery site.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub days_in_recovery: u32,
    /// Delay added to every simulated site operation, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,
    /// Everything random in the world follows it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing world.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The VM whose guest writes.
    pub vm: String,
    /// Number of 4 KiB blocks to write.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub blocks: u64,
    /// Seed of the blocks' positions and content (default: new blocks on
    /// every call, following the world's seed).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Disconnect the primary site (or only HOST).
    Disconnect { host: Option<String> },
    /// Reconnect the primary site (or only HOST).
    Connect { host: Option<String> },
    /// Remove the vSwitch NAME from HOST.
    RemoveVswitch { host: String, name: String },
    /// Make the recovery VM of VM never confirm it is off.
    StuckShutdown { vm: String },
    /// Clear every fault: connect everything, restore removed vSwitches, no
    /// stuck shutdown.
    Clear,
}

fn parse_disk_size(text: &str) -> Result<u64, String> {
    lab::parse_size(text)
}

pub fn run(global: &GlobalArgs, args: &LabArgs) -> Exit {
    match &args.command {
        LabCommand::Init(init) => run_init(global, init),
        LabCommand::Write(write) => run_write(global, write),
        LabCommand::Fault { fault } => run_fault(global, fault),
        LabCommand::Show => run_show(global),
        LabCommand::Serve(serve) => run_serve(global, serve),
    }
}

fn run_serve(global: &GlobalArgs, args: &ServeArgs) -> Exit {
    use crate::provider::azure::emulator::{self, EmulatorOptions};
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        output::err_line(&format!(
            "error: --listen {} is not a loopback address; the emulator accepts any bearer token, so \
             it listens on loopback only unless --allow-remote is given",
            args.listen
        ));
        return Exit::Usage;
    }
    if !lab::exists(&global.lab) {
        output::err_line(&format!(
            "error: no lab world at '{}'; create one with `failback lab init PLAN`",
            global.lab.display()
        ));
        return Exit::NoInput;
    }
    let rt = match super::world::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let options = EmulatorOptions {
        lab: global.lab.clone(),
        retry_after: args.retry_after,
    };
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the listening address: {e}"))?;
        match global.format {
            Format::Json => output::out_json(&json!({
                "version": 1,
                "url": format!("http://{addr}"),
                "lab": global.lab.display().to_string(),
            })),
            _ => output::out_line(&format!("listening on http://{addr}")),
        }
        emulator::serve(listener, options, shutdown_signal()).await
    });
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            output::err_line(&format!("error: {e}"));
            Exit::Failed
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

fn run_init(global: &GlobalArgs, args: &InitArgs) -> Exit {
    let plan = match load_plan(global, &args.plan) {
        Ok(plan) => plan,
        Err(exit) => return exit,
    };
    let opts = InitOptions {
        disk_size: args.disk_size,
        disks: args.disks,
        drift_percent: args.drift,
        missing: args.missing.clone(),
        days_in_recovery: args.days_in_recovery,
        latency_ms: args.latency,
        seed: args.seed,
        force: args.force,
    };
    if let Err(e) = lab::init(&global.lab, &plan, &opts) {
        return fail(&e);
    }
    let vms = plan.vms().count();
    match global.format {
        Format::Json => output::out_json(&json!({
            "version": 1,
            "lab": global.lab.display().to_string(),
            "plan": plan.metadata.name.to_string(),
            "vms": vms,
            "missing": opts.missing,
            "disksPerVm": opts.disks,
            "diskSize": opts.disk_size,
        })),
        _ => {
            let missing = if opts.missing.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} without a primary-side VM: {})",
                    opts.missing.len(),
                    opts.missing.join(", ")
                )
            };
            output::out_line(&format!(
                "created the lab world in {} from plan '{}': {vms} VMs running in the recovery site{missing}, {} disk(s) of {} each",
                global.lab.display(),
                plan.metadata.name,
                opts.disks,
                human_bytes(opts.disk_size),
            ));
        }
    }
    Exit::Success
}

fn run_write(global: &GlobalArgs, args: &WriteArgs) -> Exit {
    let write = match lab::write_guest_blocks(&global.lab, &args.vm, args.blocks, args.seed) {
        Ok(write) => write,
        Err(e) => return fail(&e),
    };
    match global.format {
        Format::Json => {
            let mut value = json!({ "version": 1 });
            if let (Some(map), Ok(serde_json::Value::Object(fields))) =
                (value.as_object_mut(), serde_json::to_value(&write))
            {
                map.extend(fields);
            }
            output::out_json(&value);
        }
        _ => output::out_line(&format!(
            "wrote {} block(s) ({}) into the recovery disks of VM '{}'{}",
            write.blocks,
            human_bytes(write.bytes),
            write.vm,
            if write.tracked {
                " (recorded in the change maps)"
            } else {
                ""
            },
        )),
    }
    Exit::Success
}

fn run_fault(global: &GlobalArgs, command: &FaultCommand) -> Exit {
    let (fault, name, said) = match command {
        FaultCommand::Disconnect { host } => (
            Fault::Disconnect { host: host.clone() },
            "disconnect",
            match host {
                Some(h) => format!("host '{h}' disconnected"),
                None => "primary site disconnected".to_owned(),
            },
        ),
        FaultCommand::Connect { host } => (
            Fault::Connect { host: host.clone() },
            "connect",
            match host {
                Some(h) => format!("host '{h}' connected"),
                None => "primary site connected".to_owned(),
            },
        ),
        FaultCommand::RemoveVswitch { host, name } => (
            Fault::RemoveVswitch {
                host: host.clone(),
                vswitch: name.clone(),
            },
            "remove-vswitch",
            format!("vSwitch '{name}' removed from host '{host}'"),
        ),
        FaultCommand::StuckShutdown { vm } => (
            Fault::StuckShutdown { vm: vm.clone() },
            "stuck-shutdown",
            format!("the recovery VM of '{vm}' will not confirm it is off"),
        ),
        FaultCommand::Clear => (Fault::Clear, "clear", "all faults cleared".to_owned()),
    };
    if let Err(e) = lab::inject_fault(&global.lab, &fault) {
        return fail(&e);
    }
    match global.format {
        Format::Json => output::out_json(&json!({ "version": 1, "fault": name, "message": said })),
        _ => output::out_line(&said),
    }
    Exit::Success
}

fn run_show(global: &GlobalArgs) -> Exit {
    let world = match lab::show(&global.lab) {
        Ok(world) => world,
        Err(e) => return fail(&e),
    };
    match global.format {
        Format::Json => match serde_json::to_value(&world) {
            Ok(value) => output::out_json(&value),
            Err(e) => {
                output::err_line(&format!("error: cannot render the lab world: {e}"));
                return Exit::Failed;
            }
        },
        _ => output::out(&render_world(&global.lab, &world)),
    }
    Exit::Success
}

/// Prints the error; returns the exit status it maps to.
fn fail(e: &LabError) -> Exit {
    output::err_line(&format!("error: {e}"));
    match e {
        LabError::NoWorld { .. } => Exit::NoInput,
        LabError::InvalidOption(_) => Exit::Usage,
        _ => Exit::Failed,
    }
}

/// `lab show` for people: the sites, then one table of hosts and one of VMs.
fn render_world(dir: &std::path::Path, world: &LabWorld) -> String {
    let yes_no = |b: bool| if b { "connected" } else { "DISCONNECTED" };
    let mut out = format!(
        "lab {}\nprimary site '{}': {}    recovery site '{}'",
        dir.display(),
        world.primary.site,
        yes_no(world.primary.connected),
        world.recovery.site,
    );
    if world.latency_ms > 0 {
        out.push_str(&format!("    latency {} ms", world.latency_ms));
    }
    out.push_str("\n\n");

    let mut hosts = vec![row(&["HOST", "STATUS", "VSWITCHES"])];
    for host in &world.primary.hosts {
        let mut switches = host.vswitches.join(", ");
        if !host.removed_vswitches.is_empty() {
            switches.push_str(&format!(
                " (removed: {})",
                host.removed_vswitches.join(", ")
            ));
        }
        hosts.push(vec![
            host.name.clone(),
            yes_no(host.connected).to_owned(),
            switches,
        ]);
    }
    out.push_str(&table(&hosts));
    out.push('\n');

    let mut vms = vec![row(&[
        "VM",
        "STATE",
        "ACTIVE",
        "RECOVERY VM",
        "PRIMARY VM",
        "DISKS",
        "PROTECTION",
        "DAYS",
        "DOWNTIME",
        "FAULTS",
    ])];
    for vm in &world.vms {
        let recovery = match (vm.recovery.exists, vm.recovery.running) {
            (false, _) => "deleted".to_owned(),
            (true, true) => "running".to_owned(),
            (true, false) => "off".to_owned(),
        };
        let primary = match (&vm.primary.host, vm.primary.exists) {
            (Some(host), true) => format!(
                "{} on {host}",
                if vm.primary.running { "running" } else { "off" }
            ),
            _ => "missing".to_owned(),
        };
        let disks = match vm.recovery.disks.first().or(vm.primary.disks.first()) {
            Some(first) => {
                let count = vm.recovery.disks.len().max(vm.primary.disks.len());
                format!("{count} x {}", human_bytes(first.size))
            }
            None => "-".to_owned(),
        };
        let mut state = vm.state.to_string();
        if let Some(mode) = vm.sync_mode {
            let mode = match mode {
                crate::plan::SyncMode::Delta => "delta",
                crate::plan::SyncMode::Full => "full",
            };
            state.push_str(&format!(" ({mode})"));
        }
        vms.push(vec![
            vm.name.clone(),
            state,
            vm.active.as_str().to_owned(),
            recovery,
            primary,
            disks,
            vm.protection.as_str().to_owned(),
            vm.days_in_recovery.to_string(),
            vm.downtime_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            if vm.faults.stuck_shutdown {
                "stuck-shutdown".to_owned()
            } else {
                "-".to_owned()
            },
        ]);
    }
    out.push_str(&table(&vms));
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns separated by two spaces, no trailing blanks.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            let pad = widths
                .get(c)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.push_str(&" ".repeat(pad + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes with the largest binary unit that keeps a whole number, else one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
