//! Integration tests: the real `uevd` binary against injected and real kernel events, each test
//! in its own private network namespace (needs root, as CI has).

mod cli;
mod monitor;
mod util;
