//! The real system as the rules see it: sysfs, `/proc`, helpers, the user database.
//!
//! [`SystemHost`] implements the rule engine's [`Host`] trait. In the daemon it does what the
//! rules ask; for `uevd test` it runs in *dry-run* mode, reading everything but recording
//! attribute and sysctl writes instead of doing them (`PROGRAM` and `IMPORT{program}` still
//! run, as with `udevadm test`, because their output decides the outcome).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use uevd_rules::ast::Builtin;
use uevd_rules::eval::{DeviceInfo, EventState, Host, LogLevel, Properties};
use uevd_rules::NameResolver;
use uevd_sysfs::{is_below, Sysfs};

use crate::builtins::{self, ModuleLoader};
use crate::daemon::db::DeviceRecord;
use crate::daemon::hash::FastHash;
use crate::spawn;

/// Users and groups from `/etc/passwd` and `/etc/group`, read once. (A device manager starts
/// before any NSS service is reachable, so it reads the files, as mdev does.)
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: HashMap<String, (u32, u32)>,
    groups: HashMap<String, u32>,
}

impl Accounts {
    /// Reads the system's files; missing files give an empty table (root still resolves).
    pub fn system() -> Accounts {
        Accounts::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// Reads given passwd/group files.
    pub fn from_files(passwd: &Path, group: &Path) -> Accounts {
        // name:password:id[:gid…]
        let table = |path: &Path| -> HashMap<String, (u32, u32)> {
            fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let mut fields = l.split(':');
                    let name = fields.next()?;
                    let id = fields.nth(1)?.parse().ok()?;
                    let gid = fields.next().and_then(|g| g.parse().ok()).unwrap_or(0);
                    Some((name.to_owned(), (id, gid)))
                })
                .collect()
        };
        Accounts {
            users: table(passwd),
            groups: table(group)
                .into_iter()
                .map(|(k, (id, _))| (k, id))
                .collect(),
        }
    }
}

impl NameResolver for Accounts {
    fn user(&self, name: &str) -> Option<u32> {
        self.users
            .get(name)
            .map(|u| u.0)
            .or((name == "root").then_some(0))
    }
    fn primary_group(&self, user: &str) -> Option<u32> {
        self.users.get(user).map(|u| u.1)
    }
    fn group(&self, name: &str) -> Option<u32> {
        self.groups
            .get(name)
            .copied()
            .or((name == "root").then_some(0))
    }
}

/// A message the rules produced for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMessage {
    /// How bad.
    pub level: LogLevel,
    /// The text, naming the rule and the culprit.
    pub text: String,
}

/// The devices of one sysfs walk, as the rules see them when they look at parents.
///
/// A coldplug or resync synthesizes its events from one walk, and the rules of each event
/// walk up its ancestors (`KERNELS`, `SUBSYSTEMS`, `DRIVERS`, `ATTRS`, `IMPORT{parent}`):
/// reading them from sysfs again, for every descendant, was a fifth of a coldplug's time
/// with Debian's rules. The walk read them already; its events see them as it found them.
/// The walk hands its devices in as it reads them, parents first, and its events are
/// processed meanwhile: by the time a device's event is, its ancestors are all here.
/// Kernel events never use this: a driver may have bound since.
#[derive(Debug, Default)]
pub struct SysfsSnapshot {
    devices: RwLock<HashSet<ByDevpath, FastHash>>,
}

/// A walked device, found in the snapshot by its devpath: the set needs no copy of the path
/// as a separate key (an allocation per device of a 100 000-device coldplug).
#[derive(Debug)]
struct ByDevpath(uevd_sysfs::Device);

impl std::borrow::Borrow<str> for ByDevpath {
    fn borrow(&self) -> &str {
        &self.0.devpath
    }
}

impl PartialEq for ByDevpath {
    fn eq(&self, other: &Self) -> bool {
        self.0.devpath == other.0.devpath
    }
}

impl Eq for ByDevpath {}

impl std::hash::Hash for ByDevpath {
    // As `str` hashes: `Borrow<str>` lookups must find what this inserted.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.devpath.as_str().hash(state);
    }
}

impl SysfsSnapshot {
    /// Adds walked devices (after their ancestors).
    pub fn extend(&self, walked: impl IntoIterator<Item = uevd_sysfs::Device>) {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        devices.extend(walked.into_iter().map(ByDevpath));
    }

    /// The walked device at `devpath`, if the walk found one there.
    fn get(&self, devpath: &str) -> Option<DeviceInfo> {
        let devices = self.devices.read().unwrap_or_else(|p| p.into_inner());
        devices.get(devpath).map(|d| device_info(&d.0))
    }
}

/// A device as sd-device sees one read from sysfs: DEVPATH and SUBSYSTEM are properties too
/// (so `IMPORT{parent}="*"` copies them, as in udev).
fn device_info(device: &uevd_sysfs::Device) -> DeviceInfo {
    DeviceInfo {
        devpath: device.devpath.clone(),
        subsystem: (!device.subsystem.is_empty()).then(|| device.subsystem.clone()),
        driver: device.driver.clone(),
        properties: Properties::from_pairs(
            [
                ("DEVPATH", device.devpath.as_str()),
                ("SUBSYSTEM", device.subsystem.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .chain(device.vars.iter()),
        ),
        tags: Vec::new(),
    }
}

/// udev's `attr_subst_subdir`, for `TEST` and `ATTR{}=`: the first `/*/` in `path` stands
/// for the first entry of that directory (in directory order, dot-names skipped) under which
/// the rest of the path exists, so rules can name an attribute of a child whose name they do
/// not know (`device/*/power/wakeup`). `None` if no entry has it; a path without `/*/` is
/// returned as it is.
fn subst_subdir(path: PathBuf) -> Option<PathBuf> {
    let text = path.as_os_str().as_bytes();
    let Some(at) = text.windows(3).position(|w| w == b"/*/") else {
        return Some(path);
    };
    let dir = Path::new(std::ffi::OsStr::from_bytes(&text[..=at]));
    let rest = Path::new(std::ffi::OsStr::from_bytes(&text[at + 3..]));
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        if name.as_bytes().starts_with(b".") {
            return None;
        }
        let candidate = dir.join(&name).join(rest);
        candidate.exists().then_some(candidate)
    })
}

/// The system, for one event's evaluation.
pub struct SystemHost<'a> {
    sysfs: &'a Sysfs,
    accounts: &'a Accounts,
    /// The records of the event device's processed ancestors (`IMPORT{parent}`, `TAGS`).
    ancestors: &'a [Arc<DeviceRecord>],
    /// For an event synthesized from a walk: the walk's parents, and the event's devpath
    /// (the snapshot answers for that device's ancestors only).
    snapshot: Option<(&'a SysfsSnapshot, &'a str)>,
    modules: Option<&'a Arc<ModuleLoader>>,
    dry_run: bool,
    helper_timeout: Duration,
    /// Devices and attributes read during this event (sysfs reads are the bulk of rule
    /// evaluation; a parent walk asks for the same ones on many lines).
    devices: HashMap<String, Option<DeviceInfo>>,
    attrs: HashMap<(String, String), Option<String>>,
    /// Writes recorded in dry-run mode (`path = value`).
    pub writes: Vec<String>,
    /// Messages for the daemon's log or `uevd test`'s output.
    pub messages: Vec<HostMessage>,
}

impl<'a> SystemHost<'a> {
    /// A host over `sysfs`. `modules` loads kernel modules for the `kmod` builtin (without
    /// it, `kmod` calls are only recorded).
    pub fn new(
        sysfs: &'a Sysfs,
        accounts: &'a Accounts,
        modules: Option<&'a Arc<ModuleLoader>>,
    ) -> SystemHost<'a> {
        SystemHost {
            sysfs,
            accounts,
            ancestors: &[],
            snapshot: None,
            modules,
            dry_run: false,
            helper_timeout: Duration::from_secs(30),
            devices: HashMap::new(),
            attrs: HashMap::new(),
            writes: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// Gives the rules the records uevd keeps of the device's ancestors (tags and the
    /// properties rules set, for `TAGS` and `IMPORT{parent}`).
    pub fn with_ancestors(mut self, ancestors: &'a [Arc<DeviceRecord>]) -> Self {
        self.ancestors = ancestors;
        self
    }

    /// Answers parent lookups for `devpath`'s ancestors from `snapshot`, the walk that
    /// `devpath`'s event was synthesized from.
    pub fn with_snapshot(mut self, snapshot: &'a SysfsSnapshot, devpath: &'a str) -> Self {
        self.snapshot = Some((snapshot, devpath));
        self
    }

    /// Records writes instead of doing them.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// The deadline for `PROGRAM`/`IMPORT{program}` helpers.
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// Maps a `/sys/…` path to the configured sysfs root.
    fn sys_path(&self, path: &str) -> PathBuf {
        match path.strip_prefix("/sys/") {
            Some(rest) => self.sysfs.root().join(rest),
            None if path == "/sys" => self.sysfs.root().to_path_buf(),
            None => PathBuf::from(path),
        }
    }

    fn record_of(&self, info: &DeviceInfo) -> Option<&DeviceRecord> {
        self.ancestors
            .iter()
            .find(|r| r.devpath == info.devpath)
            .map(|r| &**r)
    }
}

impl Host for SystemHost<'_> {
    fn device(&mut self, devpath: &str) -> Option<DeviceInfo> {
        if let Some((snapshot, below)) = self.snapshot {
            // Every device above a walked device was walked: a miss is not a device.
            if is_below(below, devpath) {
                return snapshot.get(devpath);
            }
        }
        if let Some(cached) = self.devices.get(devpath) {
            return cached.clone();
        }
        let info = self
            .sysfs
            .device(devpath)
            .ok()
            .flatten()
            .map(|d| device_info(&d));
        self.devices.insert(devpath.to_owned(), info.clone());
        info
    }

    fn attr(&mut self, devpath: &str, name: &str) -> Option<String> {
        let key = (devpath.to_owned(), name.to_owned());
        if let Some(cached) = self.attrs.get(&key) {
            return cached.clone();
        }
        let value = self.sysfs.attr(devpath, name);
        self.attrs.insert(key, value.clone());
        value
    }

    fn device_record(&mut self, device: &DeviceInfo) -> Option<(Properties, Vec<String>)> {
        let record = self.record_of(device)?;
        Some((record.properties.clone(), record.tags.clone()))
    }

    fn find_device(&mut self, subsystem: &str, sysname: &str) -> Option<String> {
        if [subsystem, sysname]
            .iter()
            .any(|s| s.is_empty() || s.contains('/') || *s == "..")
        {
            return None;
        }
        let root = self.sysfs.root();
        let candidates = [
            root.join("class").join(subsystem).join(sysname),
            root.join("bus")
                .join(subsystem)
                .join("devices")
                .join(sysname),
        ];
        let root = fs::canonicalize(root).ok()?;
        candidates.iter().find_map(|p| {
            let real = fs::canonicalize(p).ok()?;
            let rel = real.strip_prefix(&root).ok()?;
            Some(format!("/{}", rel.to_str()?))
        })
    }

    fn sysctl(&mut self, name: &str) -> Option<String> {
        let path = sysctl_path(name)?;
        fs::read_to_string(path).ok()
    }

    fn file_mode(&mut self, path: &str) -> Option<u32> {
        fs::metadata(subst_subdir(self.sys_path(path))?)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    fn read_file(&mut self, path: &str) -> Option<String> {
        fs::read_to_string(self.sys_path(path)).ok()
    }

    fn cmdline(&mut self) -> Option<String> {
        // As systemd: inside a container the "kernel command line" is PID 1's.
        if matches!(
            virtualization().as_str(),
            "docker" | "podman" | "lxc" | "systemd-nspawn"
        ) {
            let raw = fs::read("/proc/1/cmdline").ok()?;
            return Some(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
        fs::read_to_string("/proc/cmdline").ok()
    }

    fn constant(&mut self, name: &str) -> Option<String> {
        match name {
            "arch" => Some(architecture().to_owned()),
            "virt" => Some(virtualization()),
            _ => None,
        }
    }

    fn user(&mut self, name: &str) -> Option<u32> {
        self.accounts.user(name)
    }

    fn group(&mut self, name: &str) -> Option<u32> {
        self.accounts.group(name)
    }

    fn run_program(&mut self, command: &str, env: &Properties) -> Result<String, String> {
        spawn::run(command, env.iter(), self.helper_timeout).map_err(|e| e.to_string())
    }

    fn run_builtin(
        &mut self,
        builtin: Builtin,
        command: &str,
        event: &EventState,
    ) -> Result<Vec<(String, String)>, String> {
        match builtin {
            Builtin::Kmod => {
                let modules = builtins::kmod_arguments(command, event.properties.get("MODALIAS"))?;
                match self.modules {
                    Some(loader) if !self.dry_run => loader.load(modules),
                    _ => self.writes.push(format!("kmod load {}", modules.join(" "))),
                }
                Ok(Vec::new())
            }
            other => {
                let message = builtins::not_implemented(other, event.devpath());
                // Named once as an error, then quietly (it would repeat for every device).
                if builtins::first_report(other) {
                    self.log(
                        LogLevel::Error,
                        &format!("IMPORT{{builtin}}: {message} (reported once)"),
                    );
                }
                Err(message)
            }
        }
    }

    fn write_attr(&mut self, devpath: &str, name: &str, value: &str) -> Result<(), String> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == "..") {
            return Err(format!("refusing attribute name {name:?}"));
        }
        let path = self
            .sysfs
            .root()
            .join(devpath.trim_start_matches('/'))
            .join(name);
        let path = subst_subdir(path)
            .ok_or_else(|| format!("no file matches {devpath}/{name}; not written"))?;
        if self.dry_run {
            self.writes
                .push(format!("{} = \"{value}\"", path.display()));
            return Ok(());
        }
        fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn write_sysctl(&mut self, name: &str, value: &str) -> Result<(), String> {
        let path = sysctl_path(name).ok_or_else(|| format!("refusing sysctl name {name:?}"))?;
        if self.dry_run {
            self.writes
                .push(format!("{} = \"{value}\"", path.display()));
            return Ok(());
        }
        fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        self.messages.push(HostMessage {
            level,
            text: message.to_owned(),
        });
    }
}

/// `/proc/sys/<name>`, with `.` as separator when the name has no `/` (systemd's rule).
fn sysctl_path(name: &str) -> Option<PathBuf> {
    let name = name.trim_start_matches('/');
    let normalized = if name.contains('/') {
        name.to_owned()
    } else {
        name.replace('.', "/")
    };
    if normalized.is_empty() || normalized.split('/').any(|c| c.is_empty() || c == "..") {
        return None;
    }
    Some(Path::new("/proc/sys").join(normalized))
}

/// systemd's architecture name for this build (`CONST{arch}`).
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loongarch64",
        "mips64" => "mips64",
        other => other,
    }
}

/// A best-effort `systemd-detect-virt`: containers first, then the DMI vendor, then the CPU's
/// hypervisor flag (`CONST{virt}`).
pub fn virtualization() -> String {
    if Path::new("/.dockerenv").exists() {
        return "docker".into();
    }
    if Path::new("/run/.containerenv").exists() {
        return "podman".into();
    }
    let vendor = ["sys_vendor", "product_name", "bios_vendor"]
        .iter()
        .filter_map(|f| fs::read_to_string(Path::new("/sys/class/dmi/id").join(f)).ok())
        .collect::<Vec<_>>()
        .join(" ");
    for (needle, name) in [
        ("KVM", "kvm"),
        ("QEMU", "qemu"),
        ("VMware", "vmware"),
        ("Microsoft", "microsoft"),
        ("innotek", "oracle"),
        ("VirtualBox", "oracle"),
        ("Xen", "xen"),
        ("Amazon EC2", "amazon"),
        ("Parallels", "parallels"),
        ("Google Compute Engine", "google"),
    ] {
        if vendor.contains(needle) {
            return name.into();
        }
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"))
    {
        return "vm-other".into();
    }
    "none".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\nbroken\n",
        )
        .expect("write");
        fs::write(&group, "root:x:0:\ndisk:x:6:\n").expect("write");
        let a = Accounts::from_files(&passwd, &group);
        assert_eq!(a.user("alice"), Some(1000));
        assert_eq!(a.user("nobody-here"), None);
        assert_eq!(a.group("disk"), Some(6));
        let empty = Accounts::from_files(Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert_eq!(empty.user("root"), Some(0));
    }

    #[test]
    fn a_walk_snapshot_answers_for_a_walked_devices_ancestors() {
        const USB: &str = "/devices/pci0000:00/0000:00:14.0/usb1";
        const IFACE: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-0:1.0";
        const TTY: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-0:1.0/tty/ttyUSB0";
        const OTHER: &str = "/devices/virtual/misc/other";
        let sys = uevd_testkit::FakeSysfs::new().expect("fake sysfs");
        sys.device_with_driver(USB, "usb", "usb", &[("DEVTYPE", "usb_device")])
            .expect("usb");
        sys.device(IFACE, "usb", &[("DEVTYPE", "usb_interface")])
            .expect("iface");
        sys.device(TTY, "tty", &[("MAJOR", "188"), ("MINOR", "0")])
            .expect("tty");
        sys.device(OTHER, "misc", &[]).expect("other");
        let sysfs = Sysfs::new(sys.root());
        let snapshot = SysfsSnapshot::default();
        sysfs.walk(|d| snapshot.extend([d])).expect("walk");

        // Afterwards sysfs changes: the walk's events still see what the walk saw.
        sys.device(IFACE, "usb", &[("DEVTYPE", "changed")])
            .expect("rewrite");
        let accounts = Accounts::default();
        let mut host = SystemHost::new(&sysfs, &accounts, None).with_snapshot(&snapshot, TTY);
        let iface = host.device(IFACE).expect("the interface");
        assert_eq!(iface.properties.get("DEVTYPE"), Some("usb_interface"));
        assert_eq!(iface.properties.get("SUBSYSTEM"), Some("usb"));
        let usb = host.device(USB).expect("the usb device");
        assert_eq!(usb.driver.as_deref(), Some("usb"));
        assert!(
            host.device(&format!("{IFACE}/tty")).is_none(),
            "a directory the walk did not report is not a device"
        );
        // Not an ancestor of the event's device: read live.
        let mut other = SystemHost::new(&sysfs, &accounts, None).with_snapshot(&snapshot, OTHER);
        let iface = other.device(IFACE).expect("the interface, live");
        assert_eq!(iface.properties.get("DEVTYPE"), Some("changed"));
    }

    #[test]
    fn a_star_component_is_the_first_entry_under_which_the_rest_exists() {
        let sys = uevd_testkit::FakeSysfs::new().expect("fake sysfs");
        const SCSI: &str = "/devices/platform/host0/target0:0:0/0:0:0:0";
        sys.device(SCSI, "scsi", &[("DEVTYPE", "scsi_device")])
            .expect("scsi");
        sys.device(&format!("{SCSI}/block/sda"), "block", &[])
            .expect("sda");
        let dir = sys.root().join(&SCSI[1..]);
        std::fs::create_dir_all(dir.join("block/.hidden/deep")).expect("hidden");
        std::fs::create_dir_all(dir.join("block/a")).expect("a");
        let sysfs = Sysfs::new(sys.root());
        let accounts = Accounts::default();
        let mut host = SystemHost::new(&sysfs, &accounts, None).dry_run();
        // Debian's 60-block.rules: ATTR{block/*/uevent}="change" on a SCSI device.
        host.write_attr(SCSI, "block/*/uevent", "change")
            .expect("the block device's uevent");
        assert_eq!(
            host.writes,
            [format!("{}/block/sda/uevent = \"change\"", dir.display())]
        );
        assert!(host.write_attr(SCSI, "block/*/nothing", "x").is_err());
        // Dot-names are skipped; only the first /*/ is an entry.
        let at = |p: &str| format!("/sys{SCSI}/{p}");
        assert!(host.file_mode(&at("block/*/deep")).is_none());
        assert!(host.file_mode(&at("block/*/uevent")).is_some());
        assert!(host.file_mode(&at("*/*/uevent")).is_none());
        // A rest longer than the part before it (udev 252 cuts it to that length, so finds
        // nothing there): found.
        assert!(host
            .file_mode("/sys/*/platform/host0/target0:0:0/0:0:0:0/uevent")
            .is_some());
    }

    #[test]
    fn sysctl_names() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/rp_filter"),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/rp_filter"))
        );
        assert_eq!(sysctl_path("../../etc/passwd"), None);
    }
}
