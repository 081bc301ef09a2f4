//! Fake sysfs trees, declared device by device, in a temporary directory.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Subsystems that live under `bus/` in a real sysfs (the rest are classes).
const BUSES: &[&str] = &[
    "usb", "pci", "platform", "scsi", "serio", "i2c", "acpi", "virtio",
];

/// A sysfs tree in a temporary directory, removed on drop. Each device is a directory with a
/// `uevent` file and a `subsystem` link, like the real thing.
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    /// An empty tree (with `devices/` and `kernel/uevent_seqnum`).
    pub fn new() -> io::Result<FakeSysfs> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("devices"))?;
        fs::create_dir_all(dir.path().join("kernel"))?;
        fs::write(dir.path().join("kernel/uevent_seqnum"), "1000\n")?;
        Ok(FakeSysfs { dir })
    }

    /// The root to pass as `--sysfs`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn dir_of(&self, devpath: &str) -> PathBuf {
        self.root().join(devpath.trim_start_matches('/'))
    }

    /// Adds (or rewrites) a device: its directory and parents, `uevent` with `vars`, and a
    /// `subsystem` link to `class/<subsystem>` (or `bus/<subsystem>` for buses).
    pub fn device(&self, devpath: &str, subsystem: &str, vars: &[(&str, &str)]) -> io::Result<()> {
        let dir = self.dir_of(devpath);
        fs::create_dir_all(&dir)?;
        let mut uevent = String::new();
        for (k, v) in vars {
            uevent.push_str(&format!("{k}={v}\n"));
        }
        fs::write(dir.join("uevent"), uevent)?;
        let kind = if BUSES.contains(&subsystem) {
            "bus"
        } else {
            "class"
        };
        let target = self.root().join(kind).join(subsystem);
        fs::create_dir_all(&target)?;
        let link = dir.join("subsystem");
        let _ = fs::remove_file(&link);
        symlink(&target, &link)
    }

    /// Adds a device bound to `driver` (a `driver` link, and `DRIVER=` in its uevent file).
    pub fn device_with_driver(
        &self,
        devpath: &str,
        subsystem: &str,
        driver: &str,
        vars: &[(&str, &str)],
    ) -> io::Result<()> {
        let mut all = vec![("DRIVER", driver)];
        all.extend_from_slice(vars);
        self.device(devpath, subsystem, &all)?;
        let target = self
            .root()
            .join("bus")
            .join(subsystem)
            .join("drivers")
            .join(driver);
        fs::create_dir_all(&target)?;
        symlink(&target, self.dir_of(devpath).join("driver"))
    }

    /// Writes attribute file `name` of a device.
    pub fn attr(&self, devpath: &str, name: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir_of(devpath).join(name), format!("{value}\n"))
    }

    /// Removes a device and everything below it, as when hardware goes away.
    pub fn remove_device(&self, devpath: &str) -> io::Result<()> {
        fs::remove_dir_all(self.dir_of(devpath))
    }

    /// Adds `n` character devices spread over buses of 100 (`/devices/virtual/uevd-fake/
    /// busB/devN`, node `fake/N`, major 240 + N / 2^20), with one parent device per bus: a
    /// realistic shape for coldplug benchmarks.
    pub fn many(&self, n: usize) -> io::Result<()> {
        for i in 0..n {
            let bus = format!("/devices/virtual/uevd-fake/bus{}", i / 100);
            if i % 100 == 0 {
                self.device(&bus, "uevd-fake-bus", &[])?;
            }
            let major = (240 + i / (1 << 20)).to_string();
            let minor = (i % (1 << 20)).to_string();
            let name = format!("fake/{i}");
            self.device(
                &format!("{bus}/dev{i}"),
                "uevd-fake",
                &[("MAJOR", &major), ("MINOR", &minor), ("DEVNAME", &name)],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_a_walk_finds() {
        let sys = FakeSysfs::new().unwrap();
        sys.device_with_driver(
            "/devices/pci0000:00/0000:00:02.0",
            "pci",
            "i915",
            &[("PCI_ID", "8086:1234")],
        )
        .unwrap();
        sys.many(250).unwrap();
        sys.attr("/devices/pci0000:00/0000:00:02.0", "vendor", "0x8086")
            .unwrap();
        let mut devices = Vec::new();
        let stats = uevd_sysfs::Sysfs::new(sys.root())
            .walk(|d| devices.push(d))
            .unwrap();
        assert_eq!(stats.devices, 1 + 250 + 3);
        let pci = devices.iter().find(|d| d.subsystem == "pci").unwrap();
        assert_eq!(pci.driver.as_deref(), Some("i915"));
        assert_eq!(pci.get("DRIVER"), Some("i915"));
        sys.remove_device("/devices/virtual/uevd-fake/bus2")
            .unwrap();
        let stats = uevd_sysfs::Sysfs::new(sys.root()).walk(|_| {}).unwrap();
        assert_eq!(stats.devices, 1 + 200 + 2);
    }
}
