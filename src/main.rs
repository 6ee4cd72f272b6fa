//! The `failback` binary: parse arguments, set up logging, run, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = failback::cli::Cli::parse();
    failback::cli::init_tracing(&cli.global);
    let code = failback::cli::run(cli);
    ExitCode::from(code.as_u8())
}
