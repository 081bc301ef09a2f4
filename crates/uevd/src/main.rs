//! `uevd`: a Linux device manager and device-event bus.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    uevd::cli::run(uevd::cli::Cli::parse())
}
