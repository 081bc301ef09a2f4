//! Exit codes, typed so that scripts can tell failures apart.

use std::process::ExitCode;

/// Everything worked (also: a monitor ended by SIGINT/SIGTERM or a closed pipe).
pub const SUCCESS: u8 = 0;
/// A runtime failure; the message on stderr names it.
pub const FAILURE: u8 = 1;
/// Bad usage (clap uses the same code for its own errors).
pub const USAGE: u8 = 2;
/// `settle` or `trigger --wait` gave up waiting.
pub const TIMEOUT: u8 = 3;

/// Converts a code above into an [`ExitCode`].
pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
