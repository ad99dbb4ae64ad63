//! Redis's glob-style patterns (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
//! Matching is byte-wise, as in Redis's `stringmatchlen`.

/// Whether `s` matches `pattern`.
pub fn matches(pattern: &[u8], s: &[u8]) -> bool {
    matches_from(pattern, s, 0, &mut false)
}

const MAX_NESTING: usize = 1000;

/// `give_up` is Redis's `skipLongerMatches`: once the rest of the pattern after a `*` matched nowhere
/// in the rest of the string, no earlier `*` can help by matching more, so every caller stops. Without
/// it, `a*a*a*…b` against a long run of `a` takes exponential time.
fn matches_from(mut p: &[u8], mut s: &[u8], depth: usize, give_up: &mut bool) -> bool {
    // Like Redis, bound the recursion that runs of `*` can cause.
    if depth > MAX_NESTING {
        return false;
    }
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if matches_from(&p[1..], &s[i..], depth + 1, give_up) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                }
                *give_up = true;
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
            }
            b'[' => {
                let Some(&ch) = s.first() else { return false };
                p = &p[1..];
                let negate = p.first() == Some(&b'^');
                if negate {
                    p = &p[1..];
                }
                let mut hit = false;
                loop {
                    match p {
                        [] => break,
                        [b']', ..] => break,
                        [b'\\', x, ..] => {
                            hit |= *x == ch;
                            p = &p[2..];
                        }
                        [lo, b'-', hi, ..] if *hi != b']' => {
                            let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                            hit |= lo <= ch && ch <= hi;
                            p = &p[3..];
                        }
                        [x, ..] => {
                            hit |= *x == ch;
                            p = &p[1..];
                        }
                    }
                }
                if hit == negate {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // An unterminated class ends the pattern, as in Redis.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                if s.first() != Some(&p[1]) {
                    return false;
                }
                p = &p[1..];
                s = &s[1..];
            }
            _ => {
                if s.first() != Some(&c) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
    }
    s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_like_redis() {
        for (p, s, want) in [
            ("*", "anything", true),
            ("*", "", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("foo\\*", "foo*", true),
            ("foo\\*", "foox", false),
            ("key:*:x", "key:1:x", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*a", "ba", true),
            ("a*", "", false),
        ] {
            assert_eq!(matches(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
    }

    #[test]
    fn nested_stars_do_not_explode() {
        let pattern = format!("{}b", "a*".repeat(32));
        assert!(!matches(pattern.as_bytes(), "a".repeat(40).as_bytes()));
    }
}
