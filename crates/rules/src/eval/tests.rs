use std::collections::HashMap;

use super::*;
use crate::ast::{ExistingNode, Guard};
use crate::parse::{parse_into, NameResolver};

#[derive(Default)]
struct FakeHost {
    devices: HashMap<String, DeviceInfo>,
    attrs: HashMap<(String, String), String>,
    programs: HashMap<String, Result<String, String>>,
    files: HashMap<String, (u32, String)>,
    cmdline: String,
    writes: Vec<String>,
    logs: Vec<String>,
    ran: Vec<String>,
}

impl FakeHost {
    fn device(
        &mut self,
        devpath: &str,
        subsystem: &str,
        driver: Option<&str>,
        props: &[(&str, &str)],
    ) {
        self.devices.insert(
            devpath.into(),
            DeviceInfo {
                devpath: devpath.into(),
                subsystem: Some(subsystem.into()),
                driver: driver.map(Into::into),
                properties: Properties::from_pairs(props.iter().copied()),
                tags: vec![],
            },
        );
    }
    fn attr(&mut self, devpath: &str, name: &str, value: &str) {
        self.attrs
            .insert((devpath.into(), name.into()), value.into());
    }
}

impl NameResolver for FakeHost {
    fn user(&self, name: &str) -> Option<u32> {
        (name == "alice").then_some(1000)
    }
    fn group(&self, name: &str) -> Option<u32> {
        match name {
            "disk" => Some(6),
            "video" => Some(44),
            _ => None,
        }
    }
}

impl Host for FakeHost {
    fn device(&mut self, devpath: &str) -> Option<DeviceInfo> {
        self.devices.get(devpath).cloned()
    }
    fn attr(&mut self, devpath: &str, name: &str) -> Option<String> {
        self.attrs
            .get(&(devpath.to_owned(), name.to_owned()))
            .cloned()
    }
    fn device_record(&mut self, device: &DeviceInfo) -> Option<(Properties, Vec<String>)> {
        let d = self.devices.get(&device.devpath)?;
        Some((Properties::from_pairs([("FROM_DB", "yes")]), d.tags.clone()))
    }
    fn find_device(&mut self, subsystem: &str, sysname: &str) -> Option<String> {
        self.devices
            .values()
            .find(|d| d.subsystem.as_deref() == Some(subsystem) && d.sysname() == sysname)
            .map(|d| d.devpath.clone())
    }
    fn sysctl(&mut self, name: &str) -> Option<String> {
        (name == "kernel/hostname").then(|| "box\n".into())
    }
    fn file_mode(&mut self, path: &str) -> Option<u32> {
        self.files.get(path).map(|f| f.0)
    }
    fn read_file(&mut self, path: &str) -> Option<String> {
        self.files.get(path).map(|f| f.1.clone())
    }
    fn cmdline(&mut self) -> Option<String> {
        Some(self.cmdline.clone())
    }
    fn constant(&mut self, name: &str) -> Option<String> {
        match name {
            "arch" => Some("x86-64".into()),
            "virt" => Some("kvm".into()),
            _ => None,
        }
    }
    fn user(&mut self, name: &str) -> Option<u32> {
        NameResolver::user(self, name)
    }
    fn group(&mut self, name: &str) -> Option<u32> {
        NameResolver::group(self, name)
    }
    fn run_program(&mut self, command: &str, _env: &Properties) -> Result<String, String> {
        self.ran.push(command.into());
        self.programs
            .get(command)
            .cloned()
            .unwrap_or_else(|| Err(format!("{command}: not found")))
    }
    fn run_builtin(
        &mut self,
        builtin: Builtin,
        command: &str,
        _event: &EventState,
    ) -> Result<Vec<(String, String)>, String> {
        self.ran.push(format!("builtin {command}"));
        match builtin {
            Builtin::PathId => Ok(vec![("ID_PATH".into(), "pci-0000:00:01.0".into())]),
            _ => Err(format!("builtin {} not available", builtin.name())),
        }
    }
    fn write_attr(&mut self, devpath: &str, name: &str, value: &str) -> Result<(), String> {
        self.writes.push(format!("{devpath}/{name}={value}"));
        Ok(())
    }
    fn write_sysctl(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.writes.push(format!("sysctl {name}={value}"));
        Ok(())
    }
    fn log(&mut self, _level: LogLevel, message: &str) {
        self.logs.push(message.into());
    }
}

const DISK: &str =
    "/devices/pci0000:00/0000:00:01.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb";

/// A USB stick: usb device → interface → scsi host … → block disk.
fn usb_host() -> FakeHost {
    let mut h = FakeHost::default();
    h.device(
        "/devices/pci0000:00/0000:00:01.0",
        "pci",
        Some("xhci_hcd"),
        &[("PCI_ID", "8086:1234")],
    );
    h.device(
        "/devices/pci0000:00/0000:00:01.0/usb1",
        "usb",
        Some("usb"),
        &[("DEVTYPE", "usb_device")],
    );
    h.device(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1",
        "usb",
        Some("usb"),
        &[
            ("DEVTYPE", "usb_device"),
            ("ID_VENDOR_FROM_DB", "Acme"),
            ("DEVNAME", "bus/usb/001/002"),
        ],
    );
    h.device(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1/1-1:1.0",
        "usb",
        Some("usb-storage"),
        &[("DEVTYPE", "usb_interface")],
    );
    h.device(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0",
        "scsi",
        Some("sd"),
        &[],
    );
    h.attr(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1",
        "idVendor",
        "abcd\n",
    );
    h.attr(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1",
        "serial",
        "SN 42 x\n",
    );
    h.attr(
        "/devices/pci0000:00/0000:00:01.0/usb1",
        "idVendor",
        "1d6b\n",
    );
    h.attr(DISK, "size", "2048\n");
    h.attr(DISK, "removable", "1\n");
    h
}

fn disk_event(action: &str) -> EventState {
    EventState::new(
        Properties::from_pairs([
            ("ACTION", action),
            ("DEVPATH", DISK),
            ("SUBSYSTEM", "block"),
            ("DEVNAME", "sdb"),
            ("DEVTYPE", "disk"),
            ("MAJOR", "8"),
            ("MINOR", "16"),
        ]),
        vec![],
        Properties::default(),
    )
}

fn run(rules_text: &str, host: &mut FakeHost, state: &mut EventState) -> Trace {
    let mut rules = Rules::default();
    let diags = parse_into(&mut rules, "t.rules", rules_text, host);
    assert!(diags.is_empty(), "{diags:?}");
    evaluate(&rules, state, host, EvalOptions { trace: true })
}

fn outcome(rules_text: &str) -> (EventState, FakeHost) {
    let mut host = usb_host();
    let mut state = disk_event("add");
    run(rules_text, &mut host, &mut state);
    (state, host)
}

fn prop(state: &EventState, key: &str) -> Option<String> {
    state.properties.get(key).map(str::to_owned)
}

#[test]
fn device_matches() {
    let (s, _) = outcome(
        r#"ACTION=="add", DEVPATH=="*/block/sd*", KERNEL=="sd[a-z]", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", ATTR{size}=="2048", ATTR{removable}=="1", ENV{OK}="1"
ACTION=="remove", ENV{BAD1}="1"
KERNEL!="sdb", ENV{BAD2}="1"
ATTR{missing}=="", ENV{BAD3}="1"
ATTR{missing}!="x", ENV{BAD6}="a missing attribute fails either way"
ENV{UNSET}=="", ENV{OK3}="1"
ENV{UNSET}=="*", ENV{OK4}="1"
SUBSYSTEM=="subsystem", ENV{BAD4}="1"
CONST{arch}=="x86-64", CONST{virt}=="kvm|qemu", ENV{OK5}="1"
SYSCTL{kernel/hostname}=="box", ENV{OK6}="1"
DRIVER=="?*", ENV{BAD5}="1"
"#,
    );
    for k in ["OK", "OK3", "OK4", "OK5", "OK6"] {
        assert_eq!(prop(&s, k).as_deref(), Some("1"), "{k}");
    }
    for k in ["BAD1", "BAD2", "BAD3", "BAD4", "BAD5", "BAD6"] {
        assert_eq!(prop(&s, k), None, "{k}");
    }
}

#[test]
fn parent_keys_match_on_one_device() {
    let (s, _) = outcome(
        r#"SUBSYSTEMS=="usb", ATTRS{idVendor}=="abcd", ENV{ONE}="%b %d $attr{serial}"
SUBSYSTEMS=="usb", ATTRS{idVendor}=="1d6b", KERNELS=="usb1", ENV{ROOT}="%b"
SUBSYSTEMS=="scsi", ATTRS{idVendor}=="abcd", ENV{BAD}="split across devices"
KERNELS=="sdb", SUBSYSTEMS=="block", ENV{SELF}="the device itself counts"
DRIVERS=="usb-storage", ENV{DRV}="%d"
"#,
    );
    assert_eq!(prop(&s, "ONE").as_deref(), Some("1-1 usb SN 42 x"));
    assert_eq!(prop(&s, "ROOT").as_deref(), Some("usb1"));
    assert_eq!(prop(&s, "BAD"), None);
    assert!(prop(&s, "SELF").is_some());
    assert_eq!(prop(&s, "DRV").as_deref(), Some("usb-storage"));
}

#[test]
fn substitutions() {
    let (s, _) = outcome(
        r#"ENV{A}="%k|$kernel|%n|$number|%p|%M:%m|$major:$minor|%N|$devnode|%D|$name|%r|%S|%%|$$"
ENV{B}="%s{size}|$attr{size}|%E{DEVTYPE}|$env{DEVTYPE}|%P|$parent"
ENV{C}="$attr{[usb/1-1]idVendor}"
"#,
    );
    assert_eq!(
        prop(&s, "A").as_deref(),
        Some(&*format!(
            "sdb|sdb|||{DISK}|8:16|8:16|/dev/sdb|/dev/sdb|sdb|sdb|/dev|/sys|%|$"
        ))
    );
    // The parent device has no DEVNAME, so %P is empty.
    assert_eq!(prop(&s, "B").as_deref(), Some("2048|2048|disk|disk||"));
    assert_eq!(prop(&s, "C").as_deref(), Some("abcd"));
}

#[test]
fn program_and_result() {
    let mut host = usb_host();
    host.programs
        .insert("/bin/ask sdb".into(), Ok("first second third\n".into()));
    host.programs
        .insert("/bin/fail".into(), Err("exit 1".into()));
    let mut state = disk_event("add");
    run(
        r#"PROGRAM=="/bin/ask %k", RESULT=="first *", ENV{R}="%c|%c{2}|%c{2+}|$result"
PROGRAM=="/bin/fail", ENV{BAD}="1"
PROGRAM!="/bin/fail", ENV{NOT}="1"
RESULT=="nothing", ENV{BAD2}="1"
"#,
        &mut host,
        &mut state,
    );
    assert_eq!(
        prop(&state, "R").as_deref(),
        Some("first second third|second|second third|first second third")
    );
    assert_eq!(prop(&state, "BAD"), None);
    assert_eq!(prop(&state, "NOT").as_deref(), Some("1"));
    assert_eq!(prop(&state, "BAD2"), None);
}

#[test]
fn imports() {
    let mut host = usb_host();
    host.programs.insert(
        "/bin/id-it sdb".into(),
        Ok("ID_A=1\n# comment\nID_B=\"two words\"\n\nbroken line\nID_C='3'\n".into()),
    );
    host.files
        .insert("/etc/x.env".into(), (0o644, "FROM_FILE=yes\n".into()));
    host.cmdline = "quiet root=/dev/sda1 uevd.flag".into();
    let mut state = disk_event("change");
    state.db_properties = Properties::from_pairs([("ID_OLD", "kept")]);
    run(
        r#"IMPORT{program}="/bin/id-it %k"
IMPORT{file}="/etc/x.env"
IMPORT{file}="/etc/missing", ENV{BAD}="1"
IMPORT{db}="ID_OLD"
IMPORT{db}="ID_NOPE", ENV{BAD2}="1"
IMPORT{cmdline}="root"
IMPORT{cmdline}="uevd.flag"
IMPORT{cmdline}="absent", ENV{BAD3}="1"
IMPORT{builtin}="path_id"
IMPORT{builtin}="usb_id", ENV{BAD4}="1"
"#,
        &mut host,
        &mut state,
    );
    assert_eq!(prop(&state, "ID_A").as_deref(), Some("1"));
    assert_eq!(prop(&state, "ID_B").as_deref(), Some("two words"));
    assert_eq!(prop(&state, "ID_C").as_deref(), Some("3"));
    assert_eq!(prop(&state, "FROM_FILE").as_deref(), Some("yes"));
    assert_eq!(prop(&state, "ID_OLD").as_deref(), Some("kept"));
    assert_eq!(prop(&state, "root").as_deref(), Some("/dev/sda1"));
    assert_eq!(prop(&state, "uevd.flag").as_deref(), Some("1"));
    assert_eq!(prop(&state, "ID_PATH").as_deref(), Some("pci-0000:00:01.0"));
    for k in ["BAD", "BAD2", "BAD3", "BAD4"] {
        assert_eq!(prop(&state, k), None, "{k}");
    }
}

#[test]
fn import_parent_copies_matching_properties() {
    let mut host = usb_host();
    // The disk's direct parent is the scsi device; give it properties.
    host.device(
        "/devices/pci0000:00/0000:00:01.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0",
        "scsi",
        Some("sd"),
        &[("ID_SERIAL", "x1"), ("ID_MODEL", "m"), ("OTHER", "no")],
    );
    let mut state = disk_event("add");
    run(r#"IMPORT{parent}="ID_*""#, &mut host, &mut state);
    assert_eq!(prop(&state, "ID_SERIAL").as_deref(), Some("x1"));
    assert_eq!(prop(&state, "ID_MODEL").as_deref(), Some("m"));
    assert_eq!(prop(&state, "OTHER"), None);
}

#[test]
fn test_key() {
    let mut host = usb_host();
    host.files
        .insert("/etc/present".into(), (0o644, String::new()));
    host.files
        .insert(format!("/sys{DISK}/queue"), (0o755, String::new()));
    let mut state = disk_event("add");
    run(
        r#"TEST=="/etc/present", ENV{A}="1"
TEST=="/etc/absent", ENV{BAD}="1"
TEST!="/etc/absent", ENV{B}="1"
TEST=="queue", ENV{C}="relative to the device"
TEST{0111}=="/etc/present", ENV{BAD2}="not executable"
TEST{0100}=="queue", ENV{D}="1"
"#,
        &mut host,
        &mut state,
    );
    for k in ["A", "B", "C", "D"] {
        assert!(prop(&state, k).is_some(), "{k}");
    }
    assert_eq!(prop(&state, "BAD"), None);
    assert_eq!(prop(&state, "BAD2"), None);
}

#[test]
fn assignments_and_operators() {
    let (s, host) = outcome(
        r#"ENV{L}="a", ENV{L}+="b", ENV{L}+="c"
ENV{GONE}="x", ENV{GONE}=""
ENV{F}:="final"
OWNER="alice", GROUP="disk", MODE="0640"
GROUP:="video", MODE="0660"
GROUP="disk", MODE="0600"
OWNER="$env{NOBODY}nobody"
TAG+="t1", TAG+="t2", TAG-="t1", TAG+="t-3_ok", TAG+="bad tag"
ATTR{queue/scheduler}="none", SYSCTL{vm/x}="1"
SECLABEL{selinux}="dev_t"
SECLABEL{apparmor}="gone", SECLABEL{selinux}="disk_t", SECLABEL{smack}+="s", SECLABEL{smack}+="later"
"#,
    );
    assert_eq!(prop(&s, "L").as_deref(), Some("a b c"));
    assert_eq!(prop(&s, "GONE"), None);
    assert_eq!(s.uid, Some(1000));
    assert_eq!(s.gid, Some(44), "GROUP:= is final");
    assert_eq!(s.mode, Some(0o600));
    assert_eq!(s.current_tags, ["t2", "t-3_ok"]);
    assert_eq!(
        host.writes,
        [
            format!("{DISK}/queue/scheduler=none"),
            "sysctl vm/x=1".into()
        ]
    );
    // `=` clears every module's label; the last label of a module is the one set (udev
    // keeps both in a list keyed by pointer and applies them in order).
    assert_eq!(
        s.seclabels,
        [
            ("selinux".to_string(), "disk_t".to_string()),
            ("smack".to_string(), "later".to_string())
        ]
    );
    assert!(
        host.logs
            .iter()
            .any(|l| l.contains("unknown user 'nobody'")),
        "{:?}",
        host.logs
    );
    assert!(host
        .logs
        .iter()
        .any(|l| l.contains("invalid tag name 'bad tag'")));
}

#[test]
fn symlinks_escaping_and_priority() {
    let (s, _) = outcome(
        r#"SUBSYSTEMS=="usb", ATTRS{idVendor}=="abcd", SYMLINK+="disk/by-id/usb-$attr{serial}", SYMLINK+="a b"
SYMLINK+="disk//by-x/./%k/", OPTIONS+="link_priority=10"
SUBSYSTEMS=="usb", ATTRS{idVendor}=="abcd", OPTIONS+="string_escape=replace", SYMLINK+="esc/$attr{serial}"
OPTIONS+="string_escape=none", SYMLINK+="raw x"
SYMLINK=="a", ENV{HAS_A}="1"
"#,
    );
    assert_eq!(
        s.symlinks,
        [
            "disk/by-id/usb-SN_42_x",
            "a",
            "b",
            "disk/by-x/sdb",
            "esc/SN_42_x",
            "raw",
            "x"
        ]
    );
    assert_eq!(s.link_priority, 10);
    assert_eq!(prop(&s, "HAS_A").as_deref(), Some("1"));
    let (s, _) =
        outcome("SYMLINK+=\"one\"\nSYMLINK=\"two\"\nSYMLINK:=\"three\"\nSYMLINK+=\"four\"\n");
    assert_eq!(s.symlinks, ["three"]);
}

#[test]
fn run_list() {
    let (s, _) = outcome(
        r#"RUN+="/bin/a %k", RUN+="/bin/a %k", RUN{builtin}+="kmod load x"
RUN+="/bin/b"
RUN="/bin/c"
RUN+="/bin/d"
"#,
    );
    assert_eq!(
        s.run,
        [
            RunItem::Program("/bin/c".into(), ExistingNode::Run),
            RunItem::Program("/bin/d".into(), ExistingNode::Run)
        ]
    );
    let (s, _) = outcome("RUN+=\"/bin/a\", RUN{builtin}+=\"kmod load x\"\nRUN:=\"/bin/final\"\nRUN+=\"/bin/ignored\"\n");
    assert_eq!(
        s.run,
        [RunItem::Program("/bin/final".into(), ExistingNode::Run)]
    );
}

#[test]
fn goto_and_label() {
    let (s, _) = outcome(
        r#"KERNEL=="sd*", GOTO="skip"
ENV{SKIPPED}="1"
LABEL="skip"
ENV{AFTER}="1"
KERNEL=="nomatch", GOTO="end"
ENV{NOT_SKIPPED}="1"
LABEL="end"
"#,
    );
    assert_eq!(prop(&s, "SKIPPED"), None);
    assert!(prop(&s, "AFTER").is_some());
    assert!(prop(&s, "NOT_SKIPPED").is_some());
}

#[test]
fn matches_run_before_assignments_on_a_line() {
    // udev sorts match tokens first: the ENV match sees the value from before the line.
    let (s, _) = outcome("ENV{X}=\"1\", ENV{X}==\"1\", ENV{Y}=\"after\"\n");
    assert_eq!(prop(&s, "X"), None);
    assert_eq!(prop(&s, "Y"), None);
}

#[test]
fn lines_for_nodes_are_skipped_on_remove_and_for_devices_without_nodes() {
    let mut host = usb_host();
    let mut state = disk_event("remove");
    run("MODE=\"0666\"\nENV{X}=\"1\"\n", &mut host, &mut state);
    assert_eq!(state.mode, None);
    assert!(prop(&state, "X").is_some());
    let mut state = EventState::new(
        Properties::from_pairs([
            ("ACTION", "add"),
            ("DEVPATH", "/devices/virtual/net/lo"),
            ("SUBSYSTEM", "net"),
            ("IFINDEX", "1"),
        ]),
        vec![],
        Properties::default(),
    );
    run(
        "SYMLINK+=\"x\", MODE=\"0666\"\nNAME=\"lo0\"\n",
        &mut host,
        &mut state,
    );
    assert!(state.symlinks.is_empty());
    assert_eq!(state.mode, None);
    assert_eq!(state.name.as_deref(), Some("lo0"));
}

#[test]
fn name_only_for_network_interfaces() {
    let (s, host) = outcome("NAME=\"mydisk\", ENV{X}=\"1\"\n");
    assert_eq!(s.name, None);
    assert!(host
        .logs
        .iter()
        .any(|l| l.contains("only network interfaces can be renamed")));
}

#[test]
fn interface_names_lose_what_an_interface_name_cannot_have() {
    // udev's udev_replace_ifname: per byte, substituted whitespace not collapsed first.
    assert_eq!(replace_ifname("n:x y!(é)%q/z"), "n_x_y!(__)_q_z");
    assert_eq!(replace_ifname("eth0"), "eth0");
    assert_eq!(replace_ifname("a\tb"), "a_b");
}

#[test]
fn trace_names_lines() {
    let mut host = usb_host();
    let mut state = disk_event("add");
    let trace = run("KERNEL==\"sdb\", ENV{X}=\"1\"\n", &mut host, &mut state);
    assert_eq!(trace.entries, ["t.rules:1: ENV{X}=\"1\": X=1"]);
}

#[test]
fn helpers() {
    assert_eq!(sysnum("sda12"), "12");
    assert_eq!(sysnum("lo"), "");
    assert_eq!(replace_chars("a b/c$d\u{e9}", "/"), "a_b/c_d\u{e9}");
    assert_eq!(replace_chars("a\tb", "/ "), "a b");
    assert_eq!(cmdline_value("a=1 b a=2", "a"), Some(Some("2")));
    assert_eq!(cmdline_value("a=1 b", "b"), Some(None));
    assert_eq!(cmdline_value("a=1 b", "c"), None);
}

#[test]
fn if_exists_applies_to_run_on_its_line() {
    let (s, _) = outcome(
        "OPTIONS+=\"if_exists=skip\", RUN+=\"/bin/a\"\nRUN+=\"/bin/b\"\nOPTIONS+=\"if_exists=error\", RUN+=\"/bin/c\"\n",
    );
    assert_eq!(
        s.run,
        [
            RunItem::Program("/bin/a".into(), ExistingNode::Skip),
            RunItem::Program("/bin/b".into(), ExistingNode::Run),
            RunItem::Program("/bin/c".into(), ExistingNode::Error),
        ]
    );
}

#[test]
fn parent_tags_and_recorded_properties_come_from_the_database() {
    let mut host = usb_host();
    if let Some(d) = host
        .devices
        .get_mut("/devices/pci0000:00/0000:00:01.0/usb1/1-1")
    {
        d.tags = vec!["seat".into()];
    }
    let mut state = disk_event("add");
    state.all_tags = vec!["own".into()];
    run(
        "TAGS==\"seat\", ENV{T1}=\"%b\"\nTAGS==\"own\", ENV{T2}=\"%b\"\nTAGS==\"nope\", ENV{T3}=\"1\"\nIMPORT{parent}=\"FROM_DB\"\n",
        &mut host,
        &mut state,
    );
    assert_eq!(prop(&state, "T1").as_deref(), Some("1-1"));
    assert_eq!(
        prop(&state, "T2").as_deref(),
        Some("sdb"),
        "the device's own tags count first"
    );
    assert_eq!(prop(&state, "T3"), None);
    assert_eq!(prop(&state, "FROM_DB").as_deref(), Some("yes"));
}

#[test]
fn guards_come_from_literal_subsystems_and_kernel_first_bytes() {
    let mut rules = Rules::default();
    let text = r#"SUBSYSTEM=="tty|vc", KERNEL=="x*", GROUP="disk"
KERNEL=="tty[0-9]*|pppox*|rfcomm", GROUP="disk"
SUBSYSTEM=="usb*", KERNEL=="sd*", GROUP="disk"
KERNEL=="*x", GROUP="disk"
SUBSYSTEM!="tty", GROUP="disk"
SUBSYSTEM=="subsystem", GROUP="disk"
KERNEL=="|a", GROUP="disk"
"#;
    let diags = parse_into(&mut rules, "t.rules", text, &FakeHost::default());
    assert!(diags.is_empty(), "{diags:?}");
    let guards: Vec<&Guard> = rules.lines.iter().map(|l| &l.guard).collect();
    assert_eq!(
        guards,
        [
            &Guard::Subsystem(["tty".into(), "vc".into()].into()),
            &Guard::KernelFirstByte((*b"prt").into()),
            &Guard::KernelFirstByte((*b"s").into()),
            &Guard::None,
            &Guard::None,
            &Guard::None,
            &Guard::None,
        ]
    );
    let tty = &rules.lines[0].guard;
    assert!(tty.admits(Some("vc"), "x"));
    assert!(!tty.admits(Some("ttyx"), "x"));
    assert!(!tty.admits(None, "x"));
    let kernel = &rules.lines[1].guard;
    assert!(kernel.admits(None, "rfcomm"));
    assert!(!kernel.admits(Some("tty"), "sda"));
    assert!(!kernel.admits(Some("tty"), ""));
}

mod guard_equivalence {
    use super::*;
    use proptest::prelude::*;

    const SUBSYSTEMS: [&str; 4] = ["tty", "block", "usb", "vc"];
    const NAMES: [&str; 6] = ["tty1", "ttyS0", "sda", "sdb1", "vcs", "x"];

    fn line() -> impl Strategy<Value = String> {
        let subsystem = prop_oneof![
            Just(String::new()),
            Just("SUBSYSTEM==\"tty\", ".to_string()),
            Just("SUBSYSTEM==\"block|usb\", ".to_string()),
            Just("SUBSYSTEM==\"bl*\", ".to_string()),
            Just("SUBSYSTEM!=\"tty\", ".to_string()),
        ];
        let kernel = prop_oneof![
            Just(String::new()),
            Just("KERNEL==\"tty*\", ".to_string()),
            Just("KERNEL==\"sd[a-z]|vcs\", ".to_string()),
            Just("KERNEL==\"*1\", ".to_string()),
            Just("KERNEL!=\"sda\", ".to_string()),
        ];
        let effect = prop_oneof![
            Just("ENV{HIT}+=\"%k\"".to_string()),
            Just("GROUP=\"disk\"".to_string()),
            Just("TAG+=\"t\"".to_string()),
            Just("GOTO=\"end\"".to_string()),
        ];
        (subsystem, kernel, effect).prop_map(|(s, k, e)| format!("{s}{k}{e}"))
    }

    proptest! {
        /// Skipping lines by their guard never changes an evaluation's outcome.
        #[test]
        fn guards_change_nothing(
            lines in proptest::collection::vec(line(), 1..12),
            subsystem in 0..SUBSYSTEMS.len(),
            name in 0..NAMES.len(),
        ) {
            let text = format!("{}\nLABEL=\"end\"\n", lines.join("\n"));
            let mut guarded = Rules::default();
            let host = FakeHost::default();
            let diags = parse_into(&mut guarded, "t.rules", &text, &host);
            prop_assert!(diags.is_empty(), "{:?}", diags);
            let mut unguarded = guarded.clone();
            for line in &mut unguarded.lines {
                line.guard = Guard::None;
            }
            let devpath = format!("/devices/virtual/{}/{}", SUBSYSTEMS[subsystem], NAMES[name]);
            let start = EventState::new(
                Properties::from_pairs([
                    ("ACTION", "add"),
                    ("DEVPATH", devpath.as_str()),
                    ("SUBSYSTEM", SUBSYSTEMS[subsystem]),
                    ("MAJOR", "8"),
                    ("MINOR", "1"),
                ]),
                vec![],
                Properties::default(),
            );
            let outcome = |rules: &Rules| {
                let mut state = start.clone();
                let mut host = FakeHost::default();
                evaluate(rules, &mut state, &mut host, EvalOptions::default());
                (state.properties.get("HIT").map(str::to_owned), state.gid, state.all_tags)
            };
            prop_assert_eq!(outcome(&guarded), outcome(&unguarded));
        }
    }
}

#[test]
fn import_lines_parse_as_udev_and_report_the_bad_ones() {
    let mut props = Properties::default();
    let text =
        "A=1\n  B = two \nC=\"q\"\nD='x'\nE=\"bad\nF=\n=G\nnoeq\n#H=1\nI=x=y\nK=\"\nN=  \n\n";
    let bad = super::import_lines(text, &mut props);
    assert_eq!(bad, ["E=\"bad", "F=", "=G", "noeq", "K=\"", "N=  "]);
    let got: Vec<(String, String)> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let want = [
        ("A", "1"),
        ("B", "two"),
        ("C", "q"),
        ("D", "x"),
        ("I", "x=y"),
    ];
    assert_eq!(
        got,
        want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    );
}

#[test]
fn the_event_identity_keeps_each_value_and_each_absence() {
    let state = disk_event("add");
    assert_eq!(
        (
            state.action(),
            state.devpath(),
            state.subsystem(),
            state.driver()
        ),
        ("add", DISK, Some("block"), None)
    );
    assert_eq!(state.sysname(), "sdb");
    // A gap before a later value: the driver is found past the missing subsystem.
    let state = EventState::new(
        Properties::from_pairs([("DEVPATH", "/devices/x"), ("DRIVER", "drv")]),
        vec![],
        Properties::default(),
    );
    assert_eq!(
        (
            state.action(),
            state.devpath(),
            state.subsystem(),
            state.driver()
        ),
        ("", "/devices/x", None, Some("drv"))
    );
}
