//! The rule-language policy: udev rules (or a compiled mdev.conf) decide each event.
//!
//! The compiled [`Rules`] are shared read-only by all workers; `reload` builds a new set and
//! swaps the whole policy, so an event never sees half of two rule sets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uevd_rules::ast::{Builtin, ExistingNode, Key};
use uevd_rules::eval::{evaluate, EvalOptions, EventState, LogLevel, Properties, RunItem};
use uevd_rules::load::{self, Loaded, Stamp};
use uevd_rules::mdev::Interpreter;
use uevd_rules::static_nodes::{static_nodes, StaticNode};
use uevd_rules::{Rules, Severity};
use uevd_sysfs::Sysfs;
use uevd_wire::Uevent;

use super::db::DeviceRecord;
use super::helpers::HelperJob;
use super::policy::{Context, Decision, Policy};
use crate::builtins::{self, ModuleLoader};
use crate::host::{Accounts, SystemHost};
use crate::{debug, error, warn};

/// Where a daemon's rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// udev's directories if they hold rules, else the built-in set.
    Default,
    /// Only the built-in set.
    Builtin,
    /// These files and directories (`--rules`), replacing udev's directory list.
    Paths(Vec<PathBuf>),
    /// A busybox mdev.conf (`--mdev-conf`).
    Mdev(PathBuf),
}

impl RuleSource {
    /// Reads and compiles the rules; diagnostics are in the result.
    pub fn load_quiet(&self, accounts: &Accounts) -> Loaded {
        match self {
            RuleSource::Default => load::load_default(accounts),
            RuleSource::Builtin => load::load_builtin(accounts),
            RuleSource::Paths(paths) => load::load(paths, accounts),
            RuleSource::Mdev(path) => load::load_mdev(path, accounts),
        }
    }

    /// Reads and compiles the rules, logging every diagnostic. Errors drop their lines only.
    pub fn load(&self, accounts: &Accounts) -> Loaded {
        let loaded = self.load_quiet(accounts);
        for d in &loaded.diagnostics {
            match d.severity {
                Severity::Error => error!("{d}"),
                Severity::Warning => warn!("{d}"),
            }
        }
        loaded
    }
}

/// Applies compiled rules to events.
pub struct RulesPolicy {
    rules: Arc<Rules>,
    description: String,
    sysfs: Sysfs,
    accounts: Arc<Accounts>,
    modules: Option<Arc<ModuleLoader>>,
    helper_timeout: Duration,
    /// Some line reads parents' records (`IMPORT{parent}`, `TAGS`).
    reads_ancestors: bool,
    /// Some line reads parent devices (`KERNELS`, `ATTRS`, `IMPORT{parent}` …).
    reads_parents: bool,
    /// What the `static_node=` lines ask for.
    static_nodes: Vec<StaticNode>,
    /// How the rule files looked when read.
    stamp: Stamp,
}

impl RulesPolicy {
    /// A policy from loaded rules; `modules` serves the `kmod` builtin.
    pub fn new(
        loaded: Loaded,
        sysfs: Sysfs,
        accounts: Arc<Accounts>,
        modules: Option<Arc<ModuleLoader>>,
    ) -> RulesPolicy {
        let errors = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let description = format!(
            "rules: {} files, {} lines{}",
            loaded.files.len(),
            loaded.rules.lines.len(),
            if errors > 0 {
                format!(", {errors} errors (those lines dropped)")
            } else {
                String::new()
            }
        );
        let any_key = |f: &dyn Fn(&Key) -> bool| {
            loaded
                .rules
                .lines
                .iter()
                .any(|line| line.tokens.iter().any(|t| f(&t.key)))
        };
        let reads_ancestors = any_key(&|k| matches!(k, Key::ImportParent(_) | Key::ParentTag(_)));
        let reads_parents = any_key(&|k| k.is_parent_match() || matches!(k, Key::ImportParent(_)));
        let static_nodes = static_nodes(&loaded.rules);
        RulesPolicy {
            static_nodes,
            stamp: loaded.stamp,
            rules: Arc::new(loaded.rules),
            description,
            sysfs,
            accounts,
            modules,
            helper_timeout: Duration::from_secs(30),
            reads_ancestors,
            reads_parents,
        }
    }

    /// The deadline for helpers run while evaluating (`PROGRAM`, `IMPORT{program}`).
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }
}

/// The rule engine's starting state for an event.
pub fn event_state(event: &Uevent, previous: Option<&DeviceRecord>) -> EventState {
    // One allocation for the text, one for the entries. The text is the datagram's fields
    // without `=` and NUL, plus `/dev/`: what most events keep (their list becomes the
    // device's record), with little to spare.
    let text = event.as_bytes().len() - event.header().len() - 2 * event.len() + "/dev/".len();
    let mut properties = Properties::with_capacity(event.len(), text);
    for (k, v) in event.iter_text() {
        // The kernel's DEVNAME is relative; rules (and udev's database) see /dev/NAME.
        if k == "DEVNAME" && !v.starts_with('/') {
            properties.set_joined(k, &["/dev/", &v]);
        } else {
            properties.set(k, v);
        }
    }
    let (tags, db_properties) = match previous {
        Some(p) => (p.tags.clone(), p.properties.clone()),
        None => (Vec::new(), Properties::default()),
    };
    EventState::new(properties, tags, db_properties)
}

impl Policy for RulesPolicy {
    fn decide(&self, event: &Uevent, context: &Context) -> Decision {
        let mut state = event_state(event, context.previous);
        let mut host = SystemHost::new(&self.sysfs, &self.accounts, self.modules.as_ref())
            .with_helper_timeout(self.helper_timeout)
            .with_ancestors(context.ancestors);
        if let Some(snapshot) = context.snapshot {
            host = host.with_snapshot(snapshot, event.devpath());
        }
        evaluate(&self.rules, &mut state, &mut host, EvalOptions::default());
        for m in &host.messages {
            match m.level {
                LogLevel::Error => error!("{} {}: {}", event.action(), event.devpath(), m.text),
                LogLevel::Warning => warn!("{} {}: {}", event.action(), event.devpath(), m.text),
                LogLevel::Debug => debug!("{} {}: {}", event.action(), event.devpath(), m.text),
            }
        }
        // udev: a group without a mode means 0660; then the kernel's DEVMODE; then 0600.
        let mode = state.mode.or_else(|| {
            event
                .get("DEVMODE")
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .filter(|m| *m <= 0o7777)
                .or(state.gid.filter(|g| *g > 0).map(|_| 0o660))
        });
        // The state ends here: its lists move into the decision.
        Decision {
            name: state.name,
            mode,
            uid: state
                .uid
                .or_else(|| event.get("DEVUID").and_then(|u| u.parse().ok())),
            gid: state
                .gid
                .or_else(|| event.get("DEVGID").and_then(|g| g.parse().ok())),
            symlinks: state.symlinks,
            properties: state.properties,
            properties_complete: true,
            tags: state.all_tags,
            run: state.run,
            no_node: state.no_node,
            watch: state.watch.unwrap_or(false),
            link_priority: state.link_priority,
            seclabels: state.seclabels,
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn rules_changed(&self) -> bool {
        self.stamp.changed()
    }

    fn static_nodes(&self) -> &[StaticNode] {
        &self.static_nodes
    }

    fn reads_ancestors(&self) -> bool {
        self.reads_ancestors
    }

    fn reads_parents(&self) -> bool {
        self.reads_parents
    }

    fn plan_helpers(
        &self,
        event: &Uevent,
        decision: &Decision,
        env: &[(String, String)],
        node_existed: bool,
    ) -> (Vec<HelperJob>, Vec<String>) {
        let mut jobs = Vec::new();
        let ctx = format!("{} {}", event.action(), event.devpath());
        let mut errors = Vec::new();
        for item in &decision.run {
            match item {
                RunItem::Program(command, policy) => {
                    if node_existed {
                        match policy {
                            ExistingNode::Run => {}
                            ExistingNode::Skip => {
                                debug!("{ctx}: node existed before the event; skipping RUN '{command}'");
                                continue;
                            }
                            ExistingNode::Error => {
                                errors.push(format!(
                                    "{ctx}: node existed before the event; not running '{command}' (if_exists=error)"
                                ));
                                continue;
                            }
                        }
                    }
                    debug!("{ctx}: RUN '{command}'");
                    jobs.push(HelperJob {
                        command: command.clone(),
                        env: env.to_vec(),
                        timeout: self.helper_timeout,
                    });
                }
                RunItem::Builtin(Builtin::Kmod, command) => {
                    match builtins::kmod_arguments(
                        command,
                        decision
                            .properties
                            .get("MODALIAS")
                            .or(event.get("MODALIAS")),
                    ) {
                        Ok(names) => match &self.modules {
                            Some(loader) => loader.load(names),
                            None => {
                                debug!("{ctx}: kmod {} (module loading disabled)", names.join(" "))
                            }
                        },
                        Err(e) => errors.push(format!("{ctx}: RUN{{builtin}}: {e}")),
                    }
                }
                RunItem::Builtin(other, _) => {
                    let message = builtins::not_implemented(*other, event.devpath());
                    if builtins::first_report(*other) {
                        errors.push(format!("{ctx}: RUN{{builtin}}: {message} (reported once)"));
                    } else {
                        debug!("{ctx}: RUN{{builtin}}: {message}");
                    }
                }
                RunItem::Mdev(command, mdev) => {
                    if !command.when.applies_to(event.action().as_str()) {
                        continue;
                    }
                    let mut env = env.to_vec();
                    env.push(("MDEV".into(), mdev.clone()));
                    let quoted = command.command.replace('\'', "'\\''");
                    let line = match command.interpreter {
                        Interpreter::Shell => format!("/bin/sh -c '{quoted}'"),
                        Interpreter::Execline => format!("execlineb -Pc '{quoted}'"),
                    };
                    jobs.push(HelperJob {
                        command: line,
                        env,
                        timeout: self.helper_timeout,
                    });
                }
            }
        }
        (jobs, errors)
    }
}
