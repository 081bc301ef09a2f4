//! The command line. Doc comments here are the `--help` text.

use clap::{Args, Parser, Subcommand};

/// uevd — a Linux device manager and device-event bus.
///
/// Listens to kernel uevents, manages /dev, and publishes processed device events.
#[derive(Debug, Parser)]
#[command(name = "uevd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print device events as they arrive (like `udevadm monitor`).
    Monitor(MonitorArgs),
}

/// Options of `uevd monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Print the kernel's uevents (the default, and for now the only source).
    #[arg(short, long)]
    pub kernel: bool,
    /// Also print every KEY=VALUE property of each event.
    #[arg(short, long)]
    pub property: bool,
    /// Print one JSON object per event and line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only events of SUBSYSTEM, optionally of DEVTYPE too (repeatable).
    #[arg(short, long, value_name = "SUBSYSTEM[/DEVTYPE]")]
    pub subsystem_match: Vec<String>,
    /// Socket receive buffer in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = uevd_netlink::DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
