//! The `failback` binary: parse arguments, set up logging, run, exit.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use failback::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are answers, not errors; a bad flag or
            // argument is a usage error (64), never clap's own 2, which
            // `plan --detailed-exitcode` gives a meaning.
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Success,
                _ => Exit::Usage,
            };
            let _ = e.print();
            return ExitCode::from(code.as_u8());
        }
    };
    cli::init_tracing(&cli.global);
    ExitCode::from(cli::run(cli).as_u8())
}
