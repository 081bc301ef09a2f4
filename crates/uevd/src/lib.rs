//! uevd: a Linux device manager and device-event bus.
//!
//! The binary is a thin `main` over this library, so integration tests can run the daemon
//! in-process with a test policy. Modules follow the flow of an event: [`monitor`] prints
//! kernel events, [`daemon`] processes them (queue → policy → nodes/db → processed), and
//! [`control`], [`settle`] and [`trigger`] talk to a running daemon.
// One module (`memory`) calls into the C library; everything else is safe Rust.
#![deny(unsafe_code)]

pub mod log;

pub mod builtins;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod exit;
mod glob;
pub mod host;
pub mod memory;
pub mod monitor;
pub mod rule_test;
pub mod settle;
pub mod signals;
pub mod spawn;
pub mod trigger;
