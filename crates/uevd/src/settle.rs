//! `uevd settle`: wait until the daemon has processed everything queued.

use crate::cli::SettleArgs;
use crate::control::{Client, ClientError, Request};
use crate::exit;
use std::process::ExitCode;
use std::time::Duration;

/// Runs `uevd settle`.
pub fn run(args: &SettleArgs) -> ExitCode {
    // As `udevadm settle -t 0`: only ask whether everything is done, without waiting for it.
    let (request, timeout) = if args.timeout == 0.0 {
        (Request::SettleNow, Duration::from_secs(10))
    } else {
        (Request::Settle, Duration::from_secs_f64(args.timeout))
    };
    let result = Client::connect(&args.run).and_then(|mut c| c.call(&request, timeout));
    match result {
        Ok(_) => exit::code(exit::SUCCESS),
        Err(ClientError::Refused(_)) if request == Request::SettleNow => {
            eprintln!("uevd settle: events are still queued or being processed");
            exit::code(exit::TIMEOUT)
        }
        Err(ClientError::Timeout(t)) => {
            eprintln!("uevd settle: the queue did not empty within {t:?}");
            exit::code(exit::TIMEOUT)
        }
        Err(e) => {
            eprintln!("uevd settle: {e}");
            exit::code(exit::FAILURE)
        }
    }
}
