//! The command line. Doc comments here are the `--help` text.

use crate::log::Level;
use crate::{control, daemon, exit, monitor, rule_test, settle, trigger};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Run the device manager in the foreground.
    Daemon(DaemonArgs),
    /// Print device events as they arrive (like `udevadm monitor`).
    Monitor(MonitorArgs),
    /// Wait until the daemon has processed every queued event.
    Settle(SettleArgs),
    /// Make the kernel re-announce devices; with --wait, return once they are processed.
    Trigger(TriggerArgs),
    /// Send one request to the daemon: ping, stats, reload, log-level LEVEL, exit.
    Control(ControlArgs),
    /// Show what the rules would do for one device, changing nothing (like `udevadm test`).
    Test(TestArgs),
    /// Check rule files for errors without running anything (exit status tells).
    VerifyRules(VerifyArgs),
    /// Print device records from the daemon's database (like `udevadm info`), read-only.
    Info(InfoArgs),
}

/// Where rules come from (shared by `daemon` and `test`).
#[derive(Debug, Args, Default, Clone)]
pub struct RuleArgs {
    /// A rules file or a directory of *.rules files (repeatable). When given, replaces udev's
    /// directory list (/etc/udev/rules.d, /run/udev/rules.d, /usr/lib/udev/rules.d,
    /// /lib/udev/rules.d). Without it those are used, or uevd's built-in rules if they hold none.
    #[arg(long = "rules", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Use only uevd's built-in default rules.
    #[arg(long, conflicts_with = "paths")]
    pub builtin_rules: bool,
    /// Use a busybox mdev.conf instead of udev rules.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["paths", "builtin_rules"])]
    pub mdev_conf: Option<PathBuf>,
}

impl RuleArgs {
    /// The rule source these options select.
    pub fn source(&self) -> daemon::rules::RuleSource {
        if let Some(conf) = &self.mdev_conf {
            daemon::rules::RuleSource::Mdev(conf.clone())
        } else if self.builtin_rules {
            daemon::rules::RuleSource::Builtin
        } else if self.paths.is_empty() {
            daemon::rules::RuleSource::Default
        } else {
            daemon::rules::RuleSource::Paths(self.paths.clone())
        }
    }
}

/// Options of `uevd test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// The action to simulate.
    #[arg(short, long, default_value = "add")]
    pub action: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Rules to use.
    #[command(flatten)]
    pub rules: RuleArgs,
    /// The device: /sys/devices/… or /devices/….
    #[arg(value_name = "DEVPATH")]
    pub devpath: String,
}

/// Options of `uevd verify-rules`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Treat warnings as errors too.
    #[arg(long)]
    pub strict: bool,
    /// Rule files or directories (default: udev's directories, else the built-in rules).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `uevd: level: message`.
    Plain,
    /// `<N>uevd[pid]: message`, for stderr redirected to /dev/kmsg.
    Kmsg,
}

/// A number of seconds for a timeout: finite, not negative, at most a year.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=31_536_000.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0 to 31536000"
        )),
    }
}

/// Options of `uevd daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Where device nodes are created.
    #[arg(long, value_name = "DIR", default_value = "/dev")]
    pub dev: PathBuf,
    /// Where the device database and the control socket live.
    #[arg(long, value_name = "DIR", default_value = "/run/uevd")]
    pub run: PathBuf,
    /// Worker threads processing events; 0 processes them on the event-loop thread.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub children: usize,
    /// Do not walk sysfs at start (only handle new kernel events).
    #[arg(long)]
    pub no_coldplug: bool,
    /// Most verbose log level printed.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: Level,
    /// Log line format.
    #[arg(long, value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Write a newline to this inherited descriptor once ready (s6-style readiness).
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<u32>,
    /// Kernel uevent socket receive buffer in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = uevd_netlink::DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
    /// Events read and queued at most; the rest of a burst waits in the kernel's receive
    /// buffer, which holds each in about 832 bytes against about 530 here.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_queued: usize,
    /// Rules to apply.
    #[command(flatten)]
    pub rules: RuleArgs,
    /// The program the `kmod` builtin runs to load modules ("none" disables module loading).
    #[arg(long, value_name = "PATH", default_value = "/sbin/modprobe")]
    pub modprobe: PathBuf,
    /// Kill helpers (PROGRAM, IMPORT{program}, RUN) that run longer than this.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
    pub helper_timeout: f64,
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

/// Options of `uevd info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The daemon's run directory.
    #[arg(long, value_name = "DIR", default_value = "/run/uevd")]
    pub run: PathBuf,
    /// Devices to show: a record id (`b7:0`, `c13:67`, `n2`), a devpath (`/devices/…`, also
    /// with a leading `/sys`) or a node (`/dev/loop0` or `loop0`). None: every record.
    #[arg(value_name = "DEVICE")]
    pub devices: Vec<String>,
}

/// Options of `uevd settle`.
#[derive(Debug, Args)]
pub struct SettleArgs {
    /// The daemon's run directory.
    #[arg(long, value_name = "DIR", default_value = "/run/uevd")]
    pub run: PathBuf,
    /// Give up after this many seconds (exit status 3).
    #[arg(short, long, value_name = "SECS", default_value_t = 120.0, value_parser = seconds)]
    pub timeout: f64,
}

/// Options of `uevd trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// Where sysfs is mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// The daemon's run directory (for --wait).
    #[arg(long, value_name = "DIR", default_value = "/run/uevd")]
    pub run: PathBuf,
    /// The action to write.
    #[arg(short = 'c', long, default_value = "change")]
    pub action: String,
    /// Only devices of a matching subsystem (pattern, repeatable: any may match).
    #[arg(short, long, value_name = "PATTERN")]
    pub subsystem_match: Vec<String>,
    /// Skip devices of a matching subsystem (pattern, repeatable).
    #[arg(short = 'S', long, value_name = "PATTERN")]
    pub subsystem_nomatch: Vec<String>,
    /// Only devices with a matching name (pattern, repeatable: any may match).
    #[arg(short = 'y', long, value_name = "PATTERN")]
    pub sysname_match: Vec<String>,
    /// Only devices whose sysfs attribute matches, or (ATTR alone) has it (repeatable: all
    /// must match).
    #[arg(short, long, value_name = "ATTR[=PATTERN]")]
    pub attr_match: Vec<String>,
    /// Only devices with a matching property, as udev sees them: DEVPATH, SUBSYSTEM, DRIVER,
    /// DEVNAME as /dev/NAME and the uevent file's (repeatable: any may match).
    #[arg(short, long, value_name = "KEY=PATTERN")]
    pub property_match: Vec<String>,
    /// List what would be triggered, write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print each triggered device's sysfs path.
    #[arg(short, long)]
    pub verbose: bool,
    /// The transaction's UUID (default: a fresh random one).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Return only when the daemon has fully processed every triggered device's event.
    #[arg(short, long)]
    pub wait: bool,
    /// With --wait, give up after this many seconds (exit status 3) and list the missing.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
    pub timeout: f64,
    /// Add KEY=VALUE to the events (they carry SYNTH_ARG_KEY=VALUE; repeatable). The kernel
    /// takes letters and digits only, in both.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

/// Options of `uevd control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The daemon's run directory.
    #[arg(long, value_name = "DIR", default_value = "/run/uevd")]
    pub run: PathBuf,
    /// Give up after this many seconds.
    #[arg(short, long, value_name = "SECS", default_value_t = 60.0, value_parser = seconds)]
    pub timeout: f64,
    /// The request: ping | stats | reload | log-level LEVEL | exit.
    #[arg(required = true, num_args = 1..=2)]
    pub request: Vec<String>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Daemon(args) => run_daemon(&args),
        Command::Monitor(args) => monitor::run(&args),
        Command::Settle(args) => settle::run(&args),
        Command::Trigger(args) => trigger::run(&args),
        Command::Control(args) => run_control(&args),
        Command::Test(args) => rule_test::test(&args),
        Command::VerifyRules(args) => rule_test::verify(&args),
        Command::Info(args) => run_info(&args),
    }
}

fn run_daemon(args: &DaemonArgs) -> ExitCode {
    // Whatever the daemon's parent left open stays with the daemon: helpers get stdio only.
    crate::spawn::keep_inherited_fds_from_helpers();
    crate::memory::use_one_heap();
    crate::log::set_level(args.log_level);
    crate::log::set_kmsg(args.log_format == LogFormat::Kmsg);
    let config = daemon::Config {
        sysfs: args.sysfs.clone(),
        dev: args.dev.clone(),
        run: args.run.clone(),
        workers: args.children,
        coldplug: !args.no_coldplug,
        recv_buffer: args.recv_buffer,
        max_queued: args.max_queued,
        ready_fd: args.ready_fd,
        handle_signals: true,
    };
    let accounts = Arc::new(crate::host::Accounts::system());
    let modules = (args.modprobe != std::path::Path::new("none"))
        .then(|| crate::builtins::ModuleLoader::spawn(args.modprobe.clone()));
    // Kept to finish the queued module loads on exit: the loader thread would die with the
    // process, dropping names that events already asked for.
    let loader = modules.clone();
    let source = args.rules.source();
    let sysfs = uevd_sysfs::Sysfs::new(&args.sysfs);
    let timeout = std::time::Duration::from_secs_f64(args.helper_timeout.max(0.001));
    let build = move || -> Arc<dyn daemon::policy::Policy> {
        let loaded = source.load(&accounts);
        Arc::new(
            daemon::rules::RulesPolicy::new(
                loaded,
                sysfs.clone(),
                Arc::clone(&accounts),
                modules.clone(),
            )
            .with_helper_timeout(timeout),
        )
    };
    let first = build.clone();
    let reload: daemon::Reload = Box::new(move || Ok(build()));
    let result = daemon::run(config, Box::new(first), reload);
    if let Some(loader) = loader {
        loader.shutdown();
    }
    match result {
        Ok(()) => exit::code(exit::SUCCESS),
        Err(e) => {
            crate::error!("{e}");
            exit::code(exit::FAILURE)
        }
    }
}

/// Whether `record` is the device `wanted` names (see [`InfoArgs::devices`]).
fn names_record(wanted: &str, record: &daemon::db::DeviceRecord) -> bool {
    let devpath = wanted.strip_prefix("/sys").unwrap_or(wanted);
    let node = wanted.strip_prefix("/dev/").unwrap_or(wanted);
    record.id() == wanted
        || record.devpath == devpath
        || record
            .node
            .as_ref()
            .is_some_and(|n| n.spec.path.as_str() == node)
}

fn run_info(args: &InfoArgs) -> ExitCode {
    let (records, problems) = match daemon::db::read(&args.run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uevd info: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    // A torn tail is what a daemon writing right now looks like; say so, show the rest.
    for p in &problems {
        eprintln!("uevd info: {p}");
    }
    // Every record comes parents first; named ones in the order asked.
    let shown: Vec<&daemon::db::DeviceRecord> = if args.devices.is_empty() {
        records.iter().collect()
    } else {
        let mut shown = Vec::new();
        for wanted in &args.devices {
            match records.iter().find(|r| names_record(wanted, r)) {
                Some(r) => shown.push(r),
                None => {
                    eprintln!(
                        "uevd info: no record for {wanted:?} in {}",
                        args.run.join("db").display()
                    );
                    return exit::code(exit::FAILURE);
                }
            }
        }
        shown
    };
    let mut out = String::new();
    for (i, r) in shown.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&r.to_text());
    }
    print!("{out}");
    exit::code(exit::SUCCESS)
}

fn run_control(args: &ControlArgs) -> ExitCode {
    let line = args.request.join(" ");
    let request = match control::Request::parse(&line) {
        Ok(control::Request::WatchUuid(_)) => {
            eprintln!("uevd control: watch-uuid is for `uevd trigger --wait`");
            return exit::code(exit::USAGE);
        }
        Ok(r) => r,
        Err(e) => {
            eprintln!("uevd control: {e}");
            return exit::code(exit::USAGE);
        }
    };
    let timeout = std::time::Duration::from_secs_f64(args.timeout);
    match control::Client::connect(&args.run).and_then(|mut c| c.call(&request, timeout)) {
        Ok((lines, text)) => {
            for l in lines {
                println!("{l}");
            }
            if !text.is_empty() {
                println!("{text}");
            }
            exit::code(exit::SUCCESS)
        }
        Err(control::ClientError::Timeout(t)) => {
            eprintln!("uevd control: no answer within {t:?}");
            exit::code(exit::TIMEOUT)
        }
        Err(e) => {
            eprintln!("uevd control: {e}");
            exit::code(exit::FAILURE)
        }
    }
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
