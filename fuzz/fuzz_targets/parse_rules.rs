//! Fuzzes the udev rule parser and evaluator: arbitrary text never panics, every diagnostic
//! names a line of the input, and whatever parsed can be evaluated against a fixed device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uevd_rules::eval::{evaluate, DeviceInfo, EvalOptions, EventState, Host, LogLevel, Properties};
use uevd_rules::{NameResolver, Rules};

struct Fixed;
impl NameResolver for Fixed {
    fn user(&self, n: &str) -> Option<u32> {
        (n == "root").then_some(0)
    }
    fn group(&self, n: &str) -> Option<u32> {
        (n == "disk").then_some(6)
    }
}
impl Host for Fixed {
    fn device(&mut self, devpath: &str) -> Option<DeviceInfo> {
        (devpath == "/devices/virtual/block").then(|| DeviceInfo { devpath: devpath.into(), ..DeviceInfo::default() })
    }
    fn attr(&mut self, _: &str, name: &str) -> Option<String> {
        (name == "size").then(|| "8\n".into())
    }
    fn find_device(&mut self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn sysctl(&mut self, _: &str) -> Option<String> {
        None
    }
    fn file_mode(&mut self, _: &str) -> Option<u32> {
        None
    }
    fn read_file(&mut self, _: &str) -> Option<String> {
        Some("A=1\n".into())
    }
    fn cmdline(&mut self) -> Option<String> {
        Some("quiet x=1".into())
    }
    fn constant(&mut self, _: &str) -> Option<String> {
        None
    }
    fn user(&mut self, n: &str) -> Option<u32> {
        NameResolver::user(self, n)
    }
    fn group(&mut self, n: &str) -> Option<u32> {
        NameResolver::group(self, n)
    }
    fn run_program(&mut self, _: &str, _: &Properties) -> Result<String, String> {
        Ok("a b c\nK=V\n".into())
    }
    fn run_builtin(&mut self, _: uevd_rules::ast::Builtin, _: &str, _: &EventState) -> Result<Vec<(String, String)>, String> {
        Err("no".into())
    }
    fn write_attr(&mut self, _: &str, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn write_sysctl(&mut self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn log(&mut self, _: LogLevel, _: &str) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut rules = Rules::default();
    let diags = uevd_rules::parse::parse_into(&mut rules, "fuzz.rules", text, &Fixed);
    let lines = text.split('\n').count() as u32;
    for d in &diags {
        assert!(d.line <= lines, "{d}");
    }
    let mut state = EventState::new(
        Properties::from_pairs([
            ("ACTION", "add"),
            ("DEVPATH", "/devices/virtual/block/loop0"),
            ("SUBSYSTEM", "block"),
            ("MAJOR", "7"),
            ("MINOR", "0"),
            ("DEVNAME", "/dev/loop0"),
        ]),
        vec![],
        Properties::default(),
    );
    evaluate(&rules, &mut state, &mut Fixed, EvalOptions { trace: true });
});
