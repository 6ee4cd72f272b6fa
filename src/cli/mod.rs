//! The command line: arguments (clap), one module per subcommand, output,
//! exit codes. All user-facing I/O of the binary lives here.

mod apply;
mod approve;
pub mod exit;
mod lab;
mod load;
pub mod output;
mod plan;
mod schema;
mod state;
mod status;
mod validate;
mod world;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use exit::Exit;

/// Declarative, idempotent failback of Hyper-V VMs protected by Azure Site Recovery.
#[derive(Debug, Parser)]
#[command(name = "failback", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Where the actual state lives.
    #[arg(long, global = true, env = "FAILBACK_PROVIDER", value_enum, default_value_t = ProviderKind::Lab)]
    pub provider: ProviderKind,
    /// The lab world (lab provider).
    #[arg(
        long,
        global = true,
        env = "FAILBACK_LAB",
        default_value = ".failback/lab"
    )]
    pub lab: PathBuf,
    /// Locks, approvals and run journals.
    #[arg(
        long,
        global = true,
        env = "FAILBACK_STATE_DIR",
        default_value = ".failback/state"
    )]
    pub state_dir: PathBuf,
    /// Output form: `json` is one JSON document, or one object per line for
    /// event streams; `github` (validate only) prints workflow annotations.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// When to use colour.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// Azure provider: resource ID of the Recovery Services vault (must
    /// agree with `spec.recovery.vault` when the plan sets it).
    #[arg(
        long,
        global = true,
        env = "FAILBACK_AZURE_VAULT",
        value_name = "ID",
        help_heading = "Azure options"
    )]
    pub vault: Option<String>,
    /// Azure provider: the Resource Manager endpoint (sovereign clouds, the
    /// emulator of `failback lab serve`).
    #[arg(
        long,
        global = true,
        env = "FAILBACK_ARM_ENDPOINT",
        value_name = "URL",
        default_value = crate::provider::azure::DEFAULT_ARM_ENDPOINT,
        help_heading = "Azure options"
    )]
    pub arm_endpoint: String,
    /// Azure provider: the Site Recovery api-version.
    #[arg(
        long,
        global = true,
        env = "FAILBACK_AZURE_API_VERSION",
        value_name = "VERSION",
        default_value = crate::provider::azure::DEFAULT_API_VERSION,
        help_heading = "Azure options"
    )]
    pub api_version: String,
    /// Azure provider: vSwitches of the hosts, exported with `Get-VMSwitch |
    /// Select Name, ComputerName | ConvertTo-Json` (Azure cannot read them;
    /// without it the vSwitch precondition is not checked).
    #[arg(
        long,
        global = true,
        env = "FAILBACK_HYPERV_INVENTORY",
        value_name = "FILE",
        help_heading = "Azure options"
    )]
    pub hyperv_inventory: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderKind {
    /// The embedded lab: both sites on this machine, with real disk images.
    Lab,
    /// Azure Site Recovery.
    Azure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl GlobalArgs {
    /// Whether output to stderr is coloured.
    pub fn stderr_color(&self) -> bool {
        match self.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check plan files against the schema and the rules of the format.
    Validate(validate::ValidateArgs),
    /// Print the plan JSON Schema.
    Schema,
    /// Show the steps `apply` would take, per group and VM. Changes nothing.
    Plan(plan::PlanArgs),
    /// Converge: take the steps, group by group, stopping at gates.
    Apply(apply::ApplyArgs),
    /// Record approval of a gate; the next `apply` goes on.
    Approve(approve::ApproveArgs),
    /// Per VM: site, lifecycle state, last step, waiting gate, downtime.
    Status(status::StatusArgs),
    /// The lab: both sites of a failback on this machine, with real disks.
    Lab(lab::LabArgs),
}

/// Logs go to stderr through `tracing`; `RUST_LOG` overrides `-v`/`-q`.
pub fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(global.stderr_color());
    let _ = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command line and returns the exit status.
pub fn run(cli: Cli) -> Exit {
    if cli.global.format == Format::Github && !matches!(cli.command, Command::Validate(_)) {
        output::err_line("error: `--format github` is only available for `failback validate`");
        return Exit::Usage;
    }
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, &args),
        Command::Schema => schema::run(),
        Command::Plan(args) => plan::run(&cli.global, &args),
        Command::Apply(args) => apply::run(&cli.global, &args),
        Command::Approve(args) => approve::run(&cli.global, &args),
        Command::Status(args) => status::run(&cli.global, &args),
        Command::Lab(args) => lab::run(&cli.global, &args),
    }
}
