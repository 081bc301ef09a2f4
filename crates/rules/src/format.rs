//! String substitutions (`%k`, `$attr{size}`, `%c{2+}` …), parsed once into a [`Template`].
//!
//! The syntax is udev's (udev(7), "string substitutions"): `%X` or `$name`, optionally followed
//! by `{argument}`; `%%` and `$$` are literal. An unknown substitution is kept literally at run
//! time, as udev does, and reported as a warning when the rule is read.

use std::fmt;

/// One substitution kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subst {
    /// `%N`/`$devnode`/`$tempnode`: the device node path (`/dev/…`).
    Devnode,
    /// `%s{attr}`/`$attr{attr}`/`$sysfs{attr}`: a sysfs attribute of the device (or of the
    /// parent selected by the line's parent matches).
    Attr,
    /// `%E{key}`/`$env{key}`: a property.
    Env,
    /// `%k`/`$kernel`: the sysname.
    Kernel,
    /// `%n`/`$number`: the trailing number of the sysname.
    Number,
    /// `%d`/`$driver`: the driver of the parent selected by the line's parent matches.
    Driver,
    /// `%p`/`$devpath`
    Devpath,
    /// `%b`/`$id`: the sysname of the parent selected by the line's parent matches.
    Id,
    /// `%M`/`$major`
    Major,
    /// `%m`/`$minor`
    Minor,
    /// `%c`/`$result`, with `{N}` or `{N+}` selecting words.
    Result,
    /// `%P`/`$parent`: the parent's node name.
    Parent,
    /// `%D`/`$name`: the node name.
    Name,
    /// `%L`/`$links`: the current symlinks, space separated.
    Links,
    /// `%r`/`$root`: `/dev`.
    Root,
    /// `%S`/`$sys`: `/sys`.
    Sys,
}

/// The `$name` and `%c` spellings, in udev's lookup order (first prefix match wins).
const TABLE: [(&str, u8, Subst); 18] = [
    ("devnode", b'N', Subst::Devnode),
    ("tempnode", b'N', Subst::Devnode),
    ("attr", b's', Subst::Attr),
    ("sysfs", b's', Subst::Attr),
    ("env", b'E', Subst::Env),
    ("kernel", b'k', Subst::Kernel),
    ("number", b'n', Subst::Number),
    ("driver", b'd', Subst::Driver),
    ("devpath", b'p', Subst::Devpath),
    ("id", b'b', Subst::Id),
    ("major", b'M', Subst::Major),
    ("minor", b'm', Subst::Minor),
    ("result", b'c', Subst::Result),
    ("parent", b'P', Subst::Parent),
    ("name", b'D', Subst::Name),
    ("links", b'L', Subst::Links),
    ("root", b'r', Subst::Root),
    ("sys", b'S', Subst::Sys),
];

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as is.
    Literal(Box<str>),
    /// A substitution with its optional `{argument}`.
    Subst(Subst, Option<Box<str>>),
}

/// A value with substitutions, split once into pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    pieces: Box<[Piece]>,
}

/// A problem in a template, with the 0-based byte offset of the substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatWarning {
    /// Byte offset in the value.
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for FormatWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "char {}: {}", self.offset + 1, self.what)
    }
}

impl Template {
    /// Parses a value; problems are returned as warnings. As udev 252 expands at run time, an
    /// unknown substitution (`%q`, `$foo`) stays literal text, while one whose `{argument}` is
    /// unterminated or empty (`$env{X`, `$env{}`) ends the value: what follows is dropped.
    pub fn parse(source: &str) -> (Template, Vec<FormatWarning>) {
        let bytes = source.as_bytes();
        let mut pieces = Vec::new();
        let mut warnings = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c != b'$' && c != b'%' {
                // Copy the run up to the next special character (keeps UTF-8 intact).
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'$' || b == b'%')
                    .map_or(bytes.len(), |p| i + p);
                literal.push_str(&source[i..end]);
                i = end;
                continue;
            }
            if bytes.get(i + 1) == Some(&c) {
                literal.push(c as char);
                i += 2;
                continue;
            }
            let found = if c == b'$' {
                TABLE
                    .iter()
                    .find(|(name, _, _)| source[i + 1..].starts_with(name))
                    .map(|(name, _, subst)| (*subst, i + 1 + name.len()))
            } else {
                bytes.get(i + 1).and_then(|&ch| {
                    TABLE
                        .iter()
                        .find(|(_, letter, _)| *letter == ch)
                        .map(|(_, _, subst)| (*subst, i + 2))
                })
            };
            let Some((subst, mut next)) = found else {
                warnings.push(FormatWarning {
                    offset: i,
                    what: "invalid substitution type",
                });
                literal.push(c as char);
                i += 1;
                continue;
            };
            let mut arg: Option<Box<str>> = None;
            if bytes.get(next) == Some(&b'{') {
                match source[next + 1..].find('}') {
                    Some(0) | None => {
                        warnings.push(FormatWarning {
                            offset: i,
                            what: "unterminated or empty argument",
                        });
                        break;
                    }
                    Some(len) => {
                        arg = Some(source[next + 1..next + 1 + len].into());
                        next += len + 2;
                    }
                }
            }
            if arg.is_none() && matches!(subst, Subst::Attr | Subst::Env) {
                warnings.push(FormatWarning {
                    offset: i,
                    what: "attribute value missing",
                });
            }
            if let (Subst::Result, Some(a)) = (subst, &arg) {
                if parse_result_index(a).is_none() {
                    warnings.push(FormatWarning {
                        offset: i,
                        what: "invalid number",
                    });
                }
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
            }
            pieces.push(Piece::Subst(subst, arg));
            i = next;
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        (
            Template {
                source: source.into(),
                pieces: pieces.into(),
            },
            warnings,
        )
    }

    /// A template with no substitutions.
    pub fn literal(text: &str) -> Template {
        Template {
            source: text.into(),
            pieces: if text.is_empty() {
                Box::new([])
            } else {
                Box::new([Piece::Literal(text.into())])
            },
        }
    }

    /// The value as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed pieces.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// True if nothing is substituted, so the value is [`Template::source`] with `%%`/`$$`
    /// collapsed.
    pub fn is_plain(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// Expands the template with `resolve` providing each substitution's text.
    pub fn expand_with(
        &self,
        out: &mut String,
        mut resolve: impl FnMut(Subst, Option<&str>, &mut String),
    ) {
        for piece in self.pieces.iter() {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Subst(subst, arg) => resolve(*subst, arg.as_deref(), out),
            }
        }
    }
}

/// Parses the `N` or `N+` argument of `%c{…}`: the 1-based word index and whether the rest of
/// the line follows.
pub fn parse_result_index(arg: &str) -> Option<(usize, bool)> {
    let (digits, rest) = match arg.strip_suffix('+') {
        Some(d) => (d, true),
        None => (arg, false),
    };
    let n: usize = digits.parse().ok()?;
    (n > 0).then_some((n, rest))
}

/// Picks words out of a `PROGRAM` result for `%c{N}` / `%c{N+}`.
pub fn select_result_words(result: &str, index: usize, rest: bool) -> &str {
    let mut remaining = result.trim_start_matches([' ', '\t', '\n']);
    for _ in 1..index {
        match remaining.find([' ', '\t', '\n']) {
            Some(end) => remaining = remaining[end..].trim_start_matches([' ', '\t', '\n']),
            None => return "",
        }
    }
    if rest {
        remaining
    } else {
        remaining
            .find([' ', '\t', '\n'])
            .map_or(remaining, |end| &remaining[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str) -> Vec<Piece> {
        let (t, w) = Template::parse(s);
        assert!(w.is_empty(), "{s}: {w:?}");
        t.pieces().to_vec()
    }

    fn lit(s: &str) -> Piece {
        Piece::Literal(s.into())
    }

    #[test]
    fn percent_and_dollar_forms() {
        assert_eq!(
            pieces("disk/by-id/%k-$kernel"),
            [
                lit("disk/by-id/"),
                Piece::Subst(Subst::Kernel, None),
                lit("-"),
                Piece::Subst(Subst::Kernel, None)
            ]
        );
        assert_eq!(
            pieces("%s{size}$attr{a/b}%E{ID_X}$env{Y}"),
            [
                Piece::Subst(Subst::Attr, Some("size".into())),
                Piece::Subst(Subst::Attr, Some("a/b".into())),
                Piece::Subst(Subst::Env, Some("ID_X".into())),
                Piece::Subst(Subst::Env, Some("Y".into())),
            ]
        );
        assert_eq!(pieces("100%% $$HOME"), [lit("100% $HOME")]);
        assert_eq!(
            pieces("%c{2+}"),
            [Piece::Subst(Subst::Result, Some("2+".into()))]
        );
        for (letter, subst) in [
            ('N', Subst::Devnode),
            ('n', Subst::Number),
            ('d', Subst::Driver),
            ('p', Subst::Devpath),
            ('b', Subst::Id),
            ('M', Subst::Major),
            ('m', Subst::Minor),
            ('c', Subst::Result),
            ('P', Subst::Parent),
            ('D', Subst::Name),
            ('L', Subst::Links),
            ('r', Subst::Root),
            ('S', Subst::Sys),
        ] {
            assert_eq!(pieces(&format!("%{letter}")), [Piece::Subst(subst, None)]);
        }
        // `$kernelx` is `$kernel` followed by "x" (prefix match, as in udev).
        assert_eq!(
            pieces("$kernelx"),
            [Piece::Subst(Subst::Kernel, None), lit("x")]
        );
    }

    #[test]
    fn problems_are_warnings_and_unknown_types_kept_literally() {
        let (t, w) = Template::parse("a%qb");
        assert_eq!(t.pieces(), [lit("a%qb")]);
        assert_eq!(w[0].to_string(), "char 2: invalid substitution type");
        let (_, w) = Template::parse("$foo");
        assert_eq!(w[0].to_string(), "char 1: invalid substitution type");
        let (_, w) = Template::parse("%s");
        assert_eq!(w[0].what, "attribute value missing");
        // A bad argument ends the value there (udev: "Invalid format string, ignoring").
        let (t, w) = Template::parse("x$attr{unterminated");
        assert_eq!(w[0].to_string(), "char 2: unterminated or empty argument");
        assert_eq!(t.pieces(), [lit("x")]);
        let (t, _) = Template::parse("a$env{}b%k");
        assert_eq!(t.pieces(), [lit("a")]);
        assert_eq!(
            t.source(),
            "a$env{}b%k",
            "the source stays whole, for messages"
        );
        let (t, _) = Template::parse("%s{");
        assert!(t.pieces().is_empty());
        let (_, w) = Template::parse("%c{x}");
        assert_eq!(w[0].what, "invalid number");
    }

    #[test]
    fn result_words() {
        assert_eq!(select_result_words("  a b\tc ", 1, false), "a");
        assert_eq!(select_result_words("a b c", 2, false), "b");
        assert_eq!(select_result_words("a b c", 2, true), "b c");
        assert_eq!(select_result_words("a b c", 4, false), "");
        assert_eq!(parse_result_index("3+"), Some((3, true)));
        assert_eq!(parse_result_index("0"), None);
    }
}
