use super::*;

struct Names;
impl NameResolver for Names {
    fn user(&self, name: &str) -> Option<u32> {
        match name {
            "root" => Some(0),
            "alice" => Some(1000),
            _ => None,
        }
    }
    fn group(&self, name: &str) -> Option<u32> {
        match name {
            "root" => Some(0),
            "disk" => Some(6),
            "video" => Some(44),
            _ => None,
        }
    }
}

fn parse(text: &str) -> (Rules, Vec<Diagnostic>) {
    let mut rules = Rules::default();
    let diags = parse_into(&mut rules, "t.rules", text, &Names);
    (rules, diags)
}

fn messages(text: &str) -> Vec<String> {
    parse(text).1.iter().map(|d| d.to_string()).collect()
}

#[test]
fn every_match_key_parses() {
    let text = r#"ACTION=="add", DEVPATH=="/devices/*", KERNEL=="sd*", SYMLINK=="disk/*", NAME=="eth0", ENV{ID_BUS}=="usb", CONST{arch}=="x86-64", CONST{virt}=="kvm", TAG=="systemd", SUBSYSTEM=="block", DRIVER=="sd", ATTR{size}=="0", SYSCTL{kernel/hostname}=="h", KERNELS=="1-1", SUBSYSTEMS=="usb", DRIVERS=="usb", ATTRS{idVendor}=="abcd", TAGS=="seat", TEST=="/sys", TEST{0644}=="x", PROGRAM=="/bin/true", RESULT=="ok", IMPORT{file}="/etc/x", IMPORT{program}="/bin/id", IMPORT{builtin}="usb_id", IMPORT{db}="ID_X", IMPORT{cmdline}="quiet", IMPORT{parent}="ID_*""#;
    let (rules, diags) = parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    let line = &rules.lines[0];
    assert_eq!(line.tokens.len(), 28);
    // Sorted into evaluation order: ACTION first, RESULT last.
    let ranks: Vec<u8> = line
        .tokens
        .iter()
        .filter_map(|t| t.key.match_rank())
        .collect();
    let mut sorted = ranks.clone();
    sorted.sort();
    assert_eq!(ranks, sorted);
    assert!(matches!(line.tokens[0].key, Key::Action(_)));
    assert!(matches!(
        line.tokens.last().map(|t| &t.key),
        Some(Key::Result(_))
    ));
    assert!(
        line.flags.updates_something,
        "PROGRAM and IMPORT update something"
    );
}

#[test]
fn every_assignment_key_parses() {
    let text = r#"NAME="eth%n", SYMLINK+="disk/by-x/%k", OWNER="alice", GROUP="disk", MODE="0660", SECLABEL{selinux}="x_t", ATTR{queue/scheduler}="none", SYSCTL{net/ipv4/ip_forward}="1", ENV{FOO}="bar", TAG+="uaccess", RUN+="/bin/echo %k", RUN{builtin}+="kmod load $env{MODALIAS}", OPTIONS+="watch", OPTIONS+="link_priority=-100", OPTIONS+="string_escape=replace", OPTIONS+="db_persist", OPTIONS+="static_node=kvm", OPTIONS:="nowatch", OPTIONS+="log_level=debug", GOTO="end"
LABEL="end""#;
    let (rules, diags) = parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    let keys: Vec<&Key> = rules.lines[0].tokens.iter().map(|t| &t.key).collect();
    // Sorted by kind as udev 252 sorts them, each kind in written order.
    assert_eq!(keys[0], &Key::StringEscape(Escape::Replace));
    assert_eq!(keys[1], &Key::DbPersist);
    assert_eq!(keys[2], &Key::Watch(true));
    assert_eq!(keys[3], &Key::Watch(false));
    assert_eq!(rules.lines[0].tokens[3].op, Op::AssignFinal);
    assert_eq!(keys[4], &Key::LinkPriority(-100));
    assert_eq!(keys[6], &Key::OwnerId(1000));
    assert_eq!(keys[7], &Key::GroupId(6));
    assert_eq!(keys[8], &Key::ModeId(0o660));
    assert!(matches!(keys[9], Key::TagAssign(_)));
    assert!(matches!(keys[10], Key::StaticNode(_)));
    assert!(matches!(keys[11], Key::Seclabel(..)));
    assert!(matches!(keys[12], Key::EnvAssign(..)));
    assert!(matches!(keys[13], Key::NameAssign(_)));
    assert!(matches!(keys[14], Key::SymlinkAssign(_)));
    assert!(matches!(keys[15], Key::AttrAssign(..)));
    assert!(matches!(keys[16], Key::SysctlAssign(..)));
    assert!(matches!(keys[17], Key::RunBuiltin(Builtin::Kmod, _)));
    assert!(matches!(keys[18], Key::RunProgram(_)));
    assert_eq!(rules.lines[0].goto_line, Some(1));
    assert_eq!(rules.lines[1].label.as_deref(), Some("end"));
    let flags = rules.lines[0].flags;
    assert!(flags.has_name && flags.has_devlink && flags.has_static_node && flags.has_goto);
}

#[test]
fn operators() {
    let (rules, diags) = parse(r#"KERNEL!="a", ENV{A}="1", ENV{B}+="2", TAG-="t", ENV{C}:="3""#);
    assert!(diags.is_empty(), "{diags:?}");
    let ops: Vec<Op> = rules.lines[0].tokens.iter().map(|t| t.op).collect();
    // TAG sorts before ENV (udev's order of kinds); the ENVs keep theirs.
    assert_eq!(
        ops,
        [
            Op::NoMatch,
            Op::Remove,
            Op::Assign,
            Op::Add,
            Op::AssignFinal
        ]
    );
}

#[test]
fn continuation_and_comments() {
    let text = "# comment\nKERNEL==\"a\", \\\n   # inside\n   ENV{X}=\"1\"\n\n  \t# indented comment\nKERNEL==\"b\"\n";
    let (rules, diags) = parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(rules.lines.len(), 2);
    assert_eq!(rules.lines[0].number, 2);
    assert_eq!(rules.lines[0].tokens.len(), 2);
    assert_eq!(rules.lines[1].number, 7);
}

#[test]
fn quotes_and_escapes() {
    let (rules, diags) =
        parse(r#"ENV{A}="say \"hi\"", ENV{B}=e"tab\there\x41\101\u00e9", ENV{C}="back\slash""#);
    assert!(diags.is_empty(), "{diags:?}");
    let values: Vec<&str> = rules.lines[0]
        .tokens
        .iter()
        .map(|t| match &t.key {
            Key::EnvAssign(_, v) => v.source(),
            _ => "",
        })
        .collect();
    assert_eq!(values, ["say \"hi\"", "tab\thereAAé", "back\\slash"]);
}

#[test]
fn errors_name_file_line_column_and_drop_the_line() {
    let text = "KERNEL==\"a\", ENV{Z}=\"1\", BADKEY=\"2\"\nKERNEL==\"ok\", ENV{Y}=\"1\"\n";
    let (rules, diags) = parse(text);
    assert_eq!(diags.len(), 1);
    assert_eq!(
        diags[0].to_string(),
        "t.rules:1:26: error: invalid key 'BADKEY'"
    );
    assert_eq!(
        rules.lines.len(),
        1,
        "the good line is kept, the bad one dropped whole"
    );
    assert_eq!(rules.lines[0].number, 2);
}

#[test]
fn error_messages() {
    let cases = [
        ("ACTION=\"add\"", "t.rules:1:1: error: invalid operator '=' for ACTION, only == and != match"),
        ("KERNEL{x}==\"a\"", "t.rules:1:1: error: invalid attribute for KERNEL"),
        ("ENV==\"a\"", "t.rules:1:1: error: ENV needs an attribute, as in ENV{name}"),
        ("ENV{DEVNAME}=\"x\"", "t.rules:1:1: error: ENV{DEVNAME} cannot be set: the kernel or udev owns it"),
        ("KERNEL==a", "t.rules:1:9: error: KERNEL: the value must be in double quotes"),
        ("KERNEL==\"a", "t.rules:1:9: error: KERNEL: unterminated value"),
        ("KERNEL", "t.rules:1:1: error: invalid key/value pair 'KERNEL': no operator"),
        ("KERNEL ~ \"a\"", "t.rules:1:8: error: KERNEL: expected an operator (==, !=, =, +=, -=, :=)"),
        ("ATTR{x\"=\"1\"", "t.rules:1:5: error: ATTR: unterminated '{' in attribute"),
        ("MODE=\"rw\"", "t.rules:1:1: warning: invalid mode 'rw': expected octal, as in 0660; ignoring"),
        ("OWNER=\"nobody-here\"", "t.rules:1:1: warning: unknown user 'nobody-here', ignoring"),
        ("GROUP=\"nogroup-here\"", "t.rules:1:1: warning: unknown group 'nogroup-here', ignoring"),
        ("RUN{builtin}=\"frobnicate\"", "t.rules:1:1: error: unknown builtin command: frobnicate"),
        ("IMPORT{nope}=\"x\"", "t.rules:1:1: error: unknown IMPORT{nope}: use file, program, builtin, db, cmdline or parent"),
        ("OPTIONS+=\"link_priority=high\"", "t.rules:1:1: error: invalid link priority 'high'"),
        ("SYMLINK-=\"x\"", "t.rules:1:1: error: invalid operator '-=' for SYMLINK"),
        ("CONST{cpu}==\"x\"", "t.rules:1:1: error: unknown CONST{cpu}: only arch and virt exist"),
        ("TEST{9}==\"x\"", "t.rules:1:1: error: TEST{9}: the attribute must be an octal mode"),
        ("ENV{A}=e\"\\q\"", "t.rules:1:10: error: ENV: unknown escape '\\q'"),
        ("GOTO=\"nowhere\"", "t.rules:1:1: error: GOTO=\"nowhere\" has no matching LABEL later in this file, ignoring the GOTO"),
    ];
    for (text, expected) in cases {
        assert_eq!(messages(text), [expected], "for {text}");
    }
}

#[test]
fn an_unknown_owner_or_group_or_a_bad_mode_drops_only_its_key() {
    // As udev 252: the rest of the line still applies.
    let (rules, diags) = parse(
        r#"KERNEL=="null", GROUP="nosuchgroupzz", OWNER="-1", MODE="010000", MODE="0640", SYMLINK+="still""#,
    );
    assert_eq!(diags.len(), 3, "{diags:?}");
    let keys: Vec<&Key> = rules.lines[0].tokens.iter().map(|t| &t.key).collect();
    // An unknown name stays as "no id" (it unsets the owner or group, as in udev).
    assert!(
        matches!(
            keys[..],
            [
                Key::Kernel(_),
                Key::OwnerId(NO_ID),
                Key::GroupId(NO_ID),
                Key::ModeId(0o640),
                Key::SymlinkAssign(_)
            ]
        ),
        "{keys:?}"
    );
    // Numeric ids, but not the "no id" values udev refuses as numbers.
    let (rules, diags) = parse(r#"OWNER="1", GROUP="4294967295", OWNER="65535""#);
    assert_eq!(diags.len(), 2, "{diags:?}");
    let keys: Vec<&Key> = rules.lines[0].tokens.iter().map(|t| &t.key).collect();
    assert_eq!(
        keys,
        [&Key::OwnerId(1), &Key::OwnerId(NO_ID), &Key::GroupId(NO_ID)]
    );
}

#[test]
fn warnings_keep_the_token() {
    let (rules, diags) = parse(r#"KERNEL=="a", OPTIONS+="frob", ENV{X}="%q", SUBSYSTEM=="bus""#);
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text,
        [
            "t.rules:1:14: warning: invalid value for OPTIONS, ignoring: 'frob'",
            "t.rules:1:31: warning: invalid value \"%q\" for ENV (char 1: invalid substitution type)",
            "t.rules:1:44: warning: \"bus\" is deprecated, use \"subsystem\"",
        ]
    );
    assert_eq!(rules.lines[0].tokens.len(), 3);
}

#[test]
fn columns_map_through_continuations() {
    let text = "KERNEL==\"a\", \\\n    BAD=\"1\"\n";
    assert_eq!(messages(text), ["t.rules:2:5: error: invalid key 'BAD'"]);
}

#[test]
fn goto_resolves_forward_within_the_file() {
    let text = "LABEL=\"x\"\nGOTO=\"x\"\nKERNEL==\"a\"\nLABEL=\"x\"\n";
    let (rules, diags) = parse(text);
    assert!(diags.is_empty());
    assert_eq!(rules.lines[1].goto_line, Some(3));
    // A second file cannot see the first file's labels.
    let mut rules2 = rules.clone();
    let diags = parse_into(&mut rules2, "u.rules", "GOTO=\"x\"\n", &Names);
    assert_eq!(diags.len(), 1);
}

#[test]
fn program_and_import_with_assign_become_matches() {
    let (rules, diags) = parse(r#"PROGRAM="/bin/x", IMPORT{program}="y""#);
    assert!(diags.is_empty(), "{diags:?}");
    assert!(rules.lines[0].tokens.iter().all(|t| t.op == Op::Match));
    let (rules, diags) = parse(r#"IMPORT{program}="path_id %p""#);
    assert_eq!(
        diags.len(),
        1,
        "a builtin named in IMPORT{{program}} is a warning"
    );
    assert!(matches!(
        rules.lines[0].tokens[0].key,
        Key::ImportBuiltin(Builtin::PathId, _)
    ));
}

#[test]
fn attr_names() {
    let (rules, _) = parse(r#"ATTR{a}=="1", ATTR{%k}=="2", ATTR{[dmi/id]product_name}=="3""#);
    let names: Vec<&AttrName> = rules.lines[0]
        .tokens
        .iter()
        .filter_map(|t| match &t.key {
            Key::Attr(n, _) => Some(n),
            _ => None,
        })
        .collect();
    assert!(matches!(names[0], AttrName::Plain(_)));
    assert!(matches!(names[1], AttrName::Format(_)));
    assert!(matches!(names[2], AttrName::OtherDevice(_)));
}

#[test]
fn keys_without_separators_and_odd_spacing() {
    let (rules, diags) = parse("KERNEL==\"a\"SUBSYSTEM==\"b\" ,, ENV{X} = \"1\"");
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(rules.lines[0].tokens.len(), 3);
}

#[test]
fn options_numbers_and_levels_as_udev_reads_them() {
    for (text, want) in [
        (" 5", Some(5)),
        ("-3", Some(-3)),
        ("0x10", Some(16)),
        ("010", Some(8)),
        ("0", Some(0)),
        ("5x", None),
        ("", None),
        ("high", None),
    ] {
        assert_eq!(parse_c_int(text), want, "{text:?}");
    }
    let (rules, diags) = parse(r#"OPTIONS+="log_level=bogus", ENV{A}="1""#);
    assert!(rules.lines.is_empty(), "the line is dropped");
    assert!(
        diags[0].to_string().contains("invalid log level 'bogus'"),
        "{diags:?}"
    );
    for ok in ["debug", "reset", "7"] {
        let (rules, diags) = parse(&format!("OPTIONS+=\"log_level={ok}\""));
        assert!(
            diags.is_empty() && rules.lines.len() == 1,
            "{ok}: {diags:?}"
        );
    }
}
