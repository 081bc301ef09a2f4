//! `uevd settle`: wait until the daemon has processed everything queued.

use crate::cli::SettleArgs;
use crate::control::{Client, ClientError, Request};
use crate::exit;
use std::process::ExitCode;
use std::time::Duration;

/// Runs `uevd settle`.
pub fn run(args: &SettleArgs) -> ExitCode {
    let timeout = Duration::from_secs_f64(args.timeout);
    let result = Client::connect(&args.run).and_then(|mut c| c.call(&Request::Settle, timeout));
    match result {
        Ok(_) => exit::code(exit::SUCCESS),
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
