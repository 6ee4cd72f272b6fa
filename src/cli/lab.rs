//! `failback lab ...`: create, inspect and disturb the lab world.

use clap::{Args, Subcommand};

use super::{Exit, GlobalArgs};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Show the lab world.
    Show,
}

pub fn run(_global: &GlobalArgs, _args: &LabArgs) -> Exit {
    Exit::Failed
}
