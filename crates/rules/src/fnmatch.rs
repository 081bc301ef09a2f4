//! glibc-compatible `fnmatch(3)` (interim version while the full one is written; helper-4 owns this file).

/// Does `text` match `pattern` as glibc's fnmatch(pattern, text, 0) does?
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = bracket(&pattern[p..], text[t]) {
                        if ok {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn bracket(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *pat.get(i)?;
        if ch == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if ch == b'[' && pat.get(i + 1) == Some(&b':') {
            let end = pat[i + 2..].windows(2).position(|w| w == b":]")? + i + 2;
            let class = &pat[i + 2..end];
            matched |= match class {
                b"alpha" => c.is_ascii_alphabetic(),
                b"digit" => c.is_ascii_digit(),
                b"alnum" => c.is_ascii_alphanumeric(),
                b"upper" => c.is_ascii_uppercase(),
                b"lower" => c.is_ascii_lowercase(),
                b"space" => c.is_ascii_whitespace() || c == 0x0b,
                b"xdigit" => c.is_ascii_hexdigit(),
                b"punct" => c.is_ascii_punctuation(),
                b"print" => (0x20..0x7f).contains(&c),
                b"graph" => (0x21..0x7f).contains(&c),
                b"cntrl" => c < 0x20 || c == 0x7f,
                b"blank" => c == b' ' || c == b'\t',
                _ => return None,
            };
            i = end + 2;
            continue;
        }
        let lo = if ch == b'\\' {
            i += 1;
            *pat.get(i)?
        } else {
            ch
        };
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|&h| h != b']') {
            let mut hi = pat[i + 2];
            let mut skip = 3;
            if hi == b'\\' {
                hi = *pat.get(i + 3)?;
                skip = 4;
            }
            matched |= lo <= c && c <= hi;
            i += skip;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// True if the pattern has characters fnmatch treats specially.
pub fn is_glob(pattern: &[u8]) -> bool {
    pattern
        .iter()
        .any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
}
