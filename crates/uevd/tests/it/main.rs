//! Integration tests: the real `uevd` binary (and, where a test policy is needed, the daemon
//! library) against injected and real kernel events, each test in its own private network
//! namespace (needs root, as CI has).

// Test helpers panic on failure by design; unwrap() is how they fail.
#![allow(clippy::unwrap_used)]

mod cli;
mod daemon;
mod monitor;
mod oracle;
mod ordering;
mod rules;
mod util;
