//! `uevd`: a Linux device manager and device-event bus.
#![forbid(unsafe_code)]

mod cli;
mod exit;
mod monitor;
mod signals;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Monitor(args) => monitor::run(&args),
    }
}
