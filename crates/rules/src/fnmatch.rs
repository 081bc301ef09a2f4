//! glibc's `fnmatch(pattern, string, 0)` in the C locale, byte for byte.
//!
//! udev matches every `|` alternative of a rule value with glibc's `fnmatch` and no flags, so
//! the corner cases are part of the rule language: `*` and `?` match `/` and a leading `.`;
//! brackets take `!` and `^` for negation, a `]` first in the set is literal, POSIX classes
//! (`[[:digit:]]`, ASCII only), `[=c=]` and `[.c.]` for single characters, ranges by byte
//! value; a backslash escapes the next character (a trailing one never matches); an
//! unterminated `[` is an ordinary character; `{a,b}` is not special. The bracket code follows
//! the structure of glibc's `fnmatch_loop.c` so that its odd cases come out the same; the
//! `tests/fnmatch_libc.rs` property test compares against the C library itself.
//!
//! Every pattern element consumes exactly one byte, so a `*` needs only one backtracking point
//! (the classic linear-space algorithm): no exponential blow-up on `*a*a*a*b`, no allocation.

/// Does `text` match `pattern` as glibc's `fnmatch(pattern, text, 0)` does (C locale)?
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after a mismatch: the pattern just after the last `*` run, and the text
    // position that run will absorb one more byte of.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        match pattern.get(p) {
            Some(b'*') => {
                while pattern.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pattern.len() {
                    return true;
                }
                resume = Some((p, t));
                continue;
            }
            None if t == text.len() => return true,
            _ => {}
        }
        let step = match (pattern.get(p), text.get(t)) {
            (Some(_), Some(&x)) => element(pattern, p, x),
            _ => None,
        };
        match step {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match resume {
                // The `*` takes one more byte; the text after it must still hold at least one
                // byte for the element that follows (glibc never tries the end).
                Some((rp, rt)) if rt + 1 < text.len() => {
                    resume = Some((rp, rt + 1));
                    p = rp;
                    t = rt + 1;
                }
                _ => return false,
            },
        }
    }
}

/// Matches the pattern element at `p` (not `*`) against byte `x`; the index after it, or
/// `None` if it does not match.
fn element(pattern: &[u8], p: usize, x: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' => {
            // A trailing backslash never matches.
            let c = *pattern.get(p + 1)?;
            (c == x).then_some(p + 2)
        }
        b'[' => match bracket(pattern, p + 1, x) {
            Bracket::Match(next) => Some(next),
            Bracket::NoMatch => None,
            // Unterminated: `[` is an ordinary character.
            Bracket::Literal => (x == b'[').then_some(p + 1),
        },
        c => (c == x).then_some(p + 1),
    }
}

enum Bracket {
    /// Matched; the pattern continues here.
    Match(usize),
    /// Did not match (or the expression is ill-formed, which glibc treats as no match).
    NoMatch,
    /// No closing `]`: the `[` is an ordinary character.
    Literal,
}

/// The C locale's character classes (ASCII only: bytes ≥ 0x80 belong to none).
fn in_class(name: &[u8], x: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => x.is_ascii_alphanumeric(),
        b"alpha" => x.is_ascii_alphabetic(),
        b"blank" => x == b' ' || x == b'\t',
        b"cntrl" => x.is_ascii_control(),
        b"digit" => x.is_ascii_digit(),
        b"graph" => x.is_ascii_graphic(),
        b"lower" => x.is_ascii_lowercase(),
        b"print" => x.is_ascii_graphic() || x == b' ',
        b"punct" => x.is_ascii_punctuation(),
        b"space" => matches!(x, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c),
        b"upper" => x.is_ascii_uppercase(),
        b"xdigit" => x.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// Longest class name glibc looks at.
const CHAR_CLASS_MAX_LENGTH: usize = 256;

/// A bracket expression starting at `start` (just after `[`), against byte `x`.
fn bracket(pat: &[u8], start: usize, x: u8) -> Bracket {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let mut p = start;
    let negate = matches!(at(p), b'!' | b'^');
    if negate {
        p += 1;
    }
    let mut c = at(p);
    p += 1;
    loop {
        // Each member: `Some(true)` matched `x`, `Some(false)` did not, `None` ill-formed
        // (glibc then fails the whole match).
        let hit = if c == b'\\' {
            if at(p) == 0 {
                return Bracket::NoMatch;
            }
            let escaped = at(p);
            p += 1;
            normal(pat, &mut p, escaped, x)
        } else if c == b'[' && at(p) == b':' {
            let startp = p;
            match class_name(pat, &mut p) {
                ClassName::Found(name) => match in_class(name, x) {
                    Some(hit) => Some(hit),
                    None => return Bracket::NoMatch,
                },
                ClassName::TooLong => return Bracket::NoMatch,
                // Not a class name: `[` is an ordinary member.
                ClassName::NotAName => {
                    p = startp;
                    normal(pat, &mut p, b'[', x)
                }
            }
        } else if c == b'[' && at(p) == b'=' {
            let eq = at(p + 1);
            if eq == 0 || at(p + 2) != b'=' || at(p + 3) != b']' {
                normal(pat, &mut p, b'[', x)
            } else {
                p += 4;
                Some(x == eq)
            }
        } else if c == 0 {
            return Bracket::Literal;
        } else if c == b'[' && at(p) == b'.' {
            // A collating symbol: only single characters exist in the C locale.
            let Some(sym) = collating_symbol(pat, &mut p) else {
                return Bracket::NoMatch;
            };
            let is_range = at(p) == b'-' && at(p + 1) != 0;
            if !is_range && x == sym {
                Some(true)
            } else {
                range(pat, &mut p, sym, x)
            }
        } else {
            normal(pat, &mut p, c, x)
        };
        match hit {
            Some(true) => return skip_rest(pat, p, negate),
            Some(false) => {}
            None => return Bracket::NoMatch,
        }
        c = at(p);
        p += 1;
        if c == b']' {
            return if negate {
                Bracket::Match(p)
            } else {
                Bracket::NoMatch
            };
        }
    }
}

enum ClassName<'a> {
    Found(&'a [u8]),
    NotAName,
    TooLong,
}

/// Reads `[:name:]` with `p` at the `:`; on success `p` is after `:]`. glibc stops at any
/// character outside `a..=y` (its test is `c < 'a' || c >= 'z'`, so no `z` — no class has one).
fn class_name<'a>(pat: &'a [u8], p: &mut usize) -> ClassName<'a> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let start = *p + 1;
    let mut len = 0;
    loop {
        if len == CHAR_CLASS_MAX_LENGTH {
            return ClassName::TooLong;
        }
        *p += 1;
        let ch = at(*p);
        if ch == b':' && at(*p + 1) == b']' {
            let name = &pat[start..*p];
            *p += 2;
            return ClassName::Found(name);
        }
        if !(b'a'..=b'y').contains(&ch) {
            return ClassName::NotAName;
        }
        len += 1;
    }
}

/// Reads `[.c.]` with `p` at the `.`; on success `p` is after `.]`. Only single characters
/// exist in the C locale; anything else is ill-formed.
fn collating_symbol(pat: &[u8], p: &mut usize) -> Option<u8> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let start = *p;
    loop {
        *p += 1;
        let ch = at(*p);
        if ch == b'.' && at(*p + 1) == b']' {
            *p += 2;
            break;
        }
        if ch == 0 {
            return None;
        }
    }
    (*p - start == 4).then(|| at(start + 1))
}

/// An ordinary member `c` (already read; `p` is just after it), possibly starting a range.
/// `Some(true)` if `x` matched, `Some(false)` if not, `None` for an ill-formed range.
/// Leaves `p` at the next unread member.
fn normal(pat: &[u8], p: &mut usize, c: u8, x: u8) -> Option<bool> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let is_range = at(*p) == b'-' && at(*p + 1) != 0 && at(*p + 1) != b']';
    if !is_range && c == x {
        return Some(true);
    }
    range(pat, p, c, x)
}

/// If a `-` follows (not before `]`), reads the range end and tests `cold ≤ x ≤ end` by byte
/// value (the C locale's collation order).
fn range(pat: &[u8], p: &mut usize, cold: u8, x: u8) -> Option<bool> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    if at(*p) != b'-' || at(*p + 1) == b']' {
        return Some(false);
    }
    *p += 1;
    let mut cend = at(*p);
    *p += 1;
    if cend == b'[' && at(*p) == b'.' {
        // A collating symbol as the range end.
        cend = collating_symbol(pat, p)?;
    } else {
        if cend == b'\\' {
            cend = at(*p);
            *p += 1;
        }
        if cend == 0 {
            return None;
        }
    }
    Some(cold <= x && x <= cend)
}

/// After a member matched: skip to the closing `]` (glibc's `ignore_next` loop).
fn skip_rest(pat: &[u8], mut p: usize, negate: bool) -> Bracket {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    loop {
        let c = at(p);
        p += 1;
        if c == 0 {
            // Unterminated after all: the `[` is an ordinary character.
            return Bracket::Literal;
        }
        if c == b'\\' {
            if at(p) == 0 {
                return Bracket::NoMatch;
            }
            p += 1;
        } else if c == b'[' && at(p) == b':' {
            let startp = p;
            let mut n = 0;
            let mut restart = false;
            loop {
                p += 1;
                n += 1;
                if n == CHAR_CLASS_MAX_LENGTH {
                    return Bracket::NoMatch;
                }
                if at(p) == b':' && at(p + 1) == b']' {
                    break;
                }
                let ch = at(p);
                if !(b'a'..=b'y').contains(&ch) {
                    p = startp;
                    restart = true;
                    break;
                }
            }
            if !restart {
                p += 2;
            }
            continue;
        } else if c == b'[' && at(p) == b'=' {
            p += 1;
            if at(p) == 0 {
                return Bracket::NoMatch;
            }
            p += 1;
            if at(p) != b'=' || at(p + 1) != b']' {
                return Bracket::NoMatch;
            }
            p += 2;
            continue;
        } else if c == b'[' && at(p) == b'.' {
            loop {
                p += 1;
                let ch = at(p);
                if ch == 0 {
                    return Bracket::NoMatch;
                }
                if ch == b'.' && at(p + 1) == b']' {
                    break;
                }
            }
            p += 2;
            continue;
        } else if c == b']' {
            return if negate {
                Bracket::NoMatch
            } else {
                Bracket::Match(p)
            };
        }
    }
}

/// True if the pattern has a wildcard (`*`, `?`, `[`). As in udev, a pattern without one
/// is compared as it is, backslashes included; only a glob goes through fnmatch.
pub fn is_glob(pattern: &[u8]) -> bool {
    pattern.iter().any(|c| matches!(c, b'*' | b'?' | b'['))
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn udev_style_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("sd[a-z]", "sdb", true),
            ("sd[a-z]", "sd1", false),
            ("tty[0-9]*", "tty12", true),
            ("tty[0-9]*", "tty", false),
            ("event*", "event", true),
            ("*", "", true),
            ("?", "", false),
            ("nvme*n*", "nvme0n1p2", true),
            ("[!0-9]*", "a1", true),
            ("[!0-9]*", "1a", false),
            ("[^0-9]*", "1a", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("a\\", "a\\", false),
            ("[]a]", "]", true),
            ("[!]a]", "b", true),
            ("[[:digit:]]x", "7x", true),
            ("[[:alpha:][:digit:]]", "_", false),
            ("[[:foo:]]", "f", false),
            ("[a", "[a", true),
            ("[a", "a", false),
            ("{a,b}", "a", false),
            ("{a,b}", "{a,b}", true),
            ("*/x", "a/b/x", true),
            (
                "*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("[[=a=]]", "a", true),
            ("[[.a.]-c]", "b", true),
            ("[a-]", "-", true),
            (".*", ".hidden", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(
                fnmatch(p.as_bytes(), t.as_bytes()),
                *want,
                "fnmatch({p:?}, {t:?})"
            );
        }
    }
}
