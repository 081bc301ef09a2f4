//! Device rules: udev's rule language and busybox's `mdev.conf`, compiled to one form.
//!
//! This crate is policy-free and side-effect free: it parses rule files into a compact
//! program ([`ast::Rules`]) and evaluates it against a device seen through a small trait,
//! returning what *should* happen (node name, mode, owner, symlinks, properties, programs to
//! run). The daemon performs the side effects; `uevd test` just prints them.
//!
//! Reading order: [`parse`] (text → [`ast`]), [`pattern`] and [`fnmatch`] (match values),
//! [`format`] (substitutions), [`load`] (rule directories), [`eval`] (one event).

pub mod ast;
pub mod eval;
pub mod fnmatch;
pub mod format;
pub mod load;
pub mod mdev;
pub mod parse;
pub mod pattern;
pub mod properties;
pub mod static_nodes;

pub use ast::Rules;
pub use parse::{Diagnostic, NameResolver, Severity};
