//! udev builtins: `kmod` now; each further builtin (`path_id`, `input_id`, `usb_id`, `blkid`,
//! `net_id`, `hwdb`) will be a small module behind the same [`Builtin`] dispatch in
//! `SystemHost`'s `Host::run_builtin` (`crate::host`).
//!
//! Module loading is the one builtin that must not hold up events: a coldplug asks for
//! hundreds of aliases at once. [`ModuleLoader`] queues the names and a background thread
//! hands them to `modprobe` in batches (one process for everything queued meanwhile).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use uevd_rules::ast::Builtin;

/// The message for a builtin the rules name but uevd does not provide yet.
pub fn not_implemented(builtin: Builtin, devpath: &str) -> String {
    format!(
        "builtin '{}' is not implemented in this uevd version; {devpath}: its properties are not imported",
        builtin.name()
    )
}

/// True the first time a missing builtin is reported in this process: the daemon logs it once
/// as an error (naming it) and at debug level afterwards, instead of once per device.
pub fn first_report(builtin: Builtin) -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    static REPORTED: AtomicU32 = AtomicU32::new(0);
    let bit = 1u32 << (builtin as u32);
    REPORTED.fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// Parses a `kmod` builtin command line: `kmod load [ALIAS…]`. Without aliases it loads the
/// device's `MODALIAS` (udev's behaviour; `80-drivers.rules` relies on it). Returns the names,
/// possibly none.
pub fn kmod_arguments(command: &str, modalias: Option<&str>) -> Result<Vec<String>, String> {
    let words = crate::spawn::split_command(command)
        .ok_or_else(|| format!("'{command}': cannot parse the kmod command line"))?;
    let mut words = words.into_iter();
    words.next(); // "kmod"
    match words.next().as_deref() {
        Some("load") => {
            let modules: Vec<String> = words.filter(|w| !w.is_empty()).collect();
            if modules.is_empty() {
                Ok(modalias.into_iter().map(str::to_owned).collect())
            } else {
                Ok(modules)
            }
        }
        Some(other) => Err(format!(
            "'{command}': unknown kmod command '{other}', only 'load' exists"
        )),
        None => Err(format!("'{command}': kmod needs a command (load)")),
    }
}

/// Loads kernel modules in the background, batched.
pub struct ModuleLoader {
    tx: Mutex<Option<Sender<Vec<String>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ModuleLoader {
    /// Starts the loader thread; it runs `program -b -q -a NAME…` (`-b` honours the
    /// blacklist, as udev's kmod builtin does). Each name is asked for once per daemon run.
    pub fn spawn(program: PathBuf) -> Arc<ModuleLoader> {
        let (tx, rx) = mpsc::channel::<Vec<String>>();
        let thread = std::thread::Builder::new()
            .name("uevd-kmod".into())
            .spawn(move || loader_thread(program, rx))
            .ok();
        Arc::new(ModuleLoader {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(thread),
        })
    }

    /// Queues names to load; returns at once.
    pub fn load(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        if let Ok(guard) = self.tx.lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.send(names);
            }
        }
    }

    /// Finishes what is queued and stops the thread.
    pub fn shutdown(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
        if let Ok(mut guard) = self.thread.lock() {
            if let Some(t) = guard.take() {
                let _ = t.join();
            }
        }
    }
}

fn loader_thread(program: PathBuf, rx: Receiver<Vec<String>>) {
    let mut seen = HashSet::new();
    // A system without modprobe (a container, a minimal image) would otherwise log an error
    // for every batch of every coldplug and hotplug.
    let mut unrunnable_reported = false;
    while let Ok(first) = rx.recv() {
        let mut batch: Vec<String> = Vec::new();
        let mut add = |names: Vec<String>, batch: &mut Vec<String>| {
            for n in names {
                if seen.insert(n.clone()) {
                    batch.push(n);
                }
            }
        };
        add(first, &mut batch);
        while let Ok(more) = rx.try_recv() {
            add(more, &mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        let status = crate::spawn::helper_command(&program)
            .args(["-b", "-q", "-a"])
            .args(&batch)
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => crate::debug!("kmod: loaded {}", batch.join(" ")),
            Ok(s) => crate::debug!(
                "kmod: {} {} exited with {s}",
                program.display(),
                batch.join(" ")
            ),
            Err(e) if !unrunnable_reported => {
                unrunnable_reported = true;
                crate::error!(
                    "kmod: cannot run {}: {e}; not loaded: {} (later failures to run it are \
                     logged at debug level)",
                    program.display(),
                    batch.join(" ")
                );
            }
            Err(e) => crate::debug!(
                "kmod: cannot run {}: {e}; not loaded: {}",
                program.display(),
                batch.join(" ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmod_arguments_parse() {
        assert_eq!(
            kmod_arguments("kmod load a 'b'", None),
            Ok(vec!["a".to_string(), "b".into()])
        );
        assert_eq!(
            kmod_arguments("kmod load", Some("pci:v1")),
            Ok(vec!["pci:v1".to_string()])
        );
        assert_eq!(kmod_arguments("kmod load", None), Ok(vec![]));
        assert_eq!(
            kmod_arguments("kmod unload x", None),
            Err("'kmod unload x': unknown kmod command 'unload', only 'load' exists".to_string())
        );
    }

    #[test]
    fn loader_batches_and_deduplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("calls");
        let script = dir.path().join("modprobe");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let loader = ModuleLoader::spawn(script);
        loader.load(vec!["usb:v1234".into(), "pci:v8086".into()]);
        loader.load(vec!["usb:v1234".into()]);
        loader.load(vec!["acpi:X".into()]);
        loader.shutdown();
        let calls = std::fs::read_to_string(&log).expect("modprobe ran");
        let names: Vec<&str> = calls
            .lines()
            .flat_map(|l| l.split_whitespace().filter(|w| !w.starts_with('-')))
            .collect();
        assert_eq!(
            names,
            ["usb:v1234", "pci:v8086", "acpi:X"],
            "each name once, in order: {calls}"
        );
        assert!(calls.lines().all(|l| l.starts_with("-b -q -a ")), "{calls}");
        assert!(calls.lines().count() <= 3);
    }
}
