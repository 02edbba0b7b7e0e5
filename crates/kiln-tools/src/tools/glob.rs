//! The glob dialect of `list_files` and `grep`'s `glob` argument, matched in the control plane.
//!
//! `*` and `?` stay within one path segment, `**` spans segments (`src/**/*.rs` matches
//! `src/a.rs` and `src/a/b/c.rs`), `[a-z]`/`[!x]` are classes and `{rs,toml}` alternatives. A
//! pattern without `/` matches a file's name at any depth, as in `.gitignore`. Matching is
//! memoised, so a pattern from the model cannot make it exponential.

use std::collections::HashSet;

/// Alternatives expanded from `{a,b}`; more than this is almost certainly a mistake.
const MAX_EXPANSIONS: usize = 64;
/// Longest pattern accepted.
const MAX_PATTERN: usize = 1024;

/// A parsed glob.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    alternatives: Vec<Vec<char>>,
    /// No `/` anywhere: match the file name only.
    name_only: bool,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("the glob pattern is empty".into());
        }
        // Matching recurses once per character; bound the depth.
        if pattern.len() > MAX_PATTERN {
            return Err(format!(
                "the glob pattern is longer than {MAX_PATTERN} bytes"
            ));
        }
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        let expanded = expand_braces(pattern)?;
        Ok(Glob {
            name_only: !pattern.contains('/'),
            alternatives: expanded.iter().map(|alt| alt.chars().collect()).collect(),
        })
    }

    /// The alternatives as plain strings, for handing to `grep --include` when they are simple.
    pub(crate) fn name_patterns(&self) -> Option<Vec<String>> {
        self.name_only.then(|| {
            self.alternatives
                .iter()
                .map(|alt| alt.iter().collect())
                .collect()
        })
    }

    /// Whether `path` (relative, `/`-separated) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let subject = if self.name_only {
            path.rsplit('/').next().unwrap_or(path)
        } else {
            path
        };
        let text: Vec<char> = subject.chars().collect();
        self.alternatives.iter().any(|alt| {
            let mut failed = HashSet::new();
            match_at(alt, &text, 0, 0, &mut failed)
        })
    }
}

/// `a{b,c}d` → `abd`, `acd`. Braces do not nest.
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let Some(close) = pattern[open..].find('}').map(|i| open + i) else {
        return Err(format!("unclosed `{{` in glob `{pattern}`"));
    };
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let mut out = Vec::new();
    for rest in expand_braces(tail)? {
        for alt in body.split(',') {
            out.push(format!("{head}{alt}{rest}"));
            if out.len() > MAX_EXPANSIONS {
                return Err(format!("glob `{pattern}` expands to too many alternatives"));
            }
        }
    }
    Ok(out)
}

/// Does `p[pi..]` match `t[ti..]`? `failed` remembers states already known not to match.
fn match_at(
    p: &[char],
    t: &[char],
    pi: usize,
    ti: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(pi, ti)) {
        return false;
    }
    let matched = match p.get(pi) {
        None => ti == t.len(),
        Some('*') if p.get(pi + 1) == Some(&'*') => {
            let after = pi + 2;
            if p.get(after) == Some(&'/') {
                // `**/`: zero or more whole segments.
                match_at(p, t, after + 1, ti, failed)
                    || (ti..t.len())
                        .any(|i| t[i] == '/' && match_at(p, t, after + 1, i + 1, failed))
            } else {
                (ti..=t.len()).any(|i| match_at(p, t, after, i, failed))
            }
        }
        Some('*') => {
            let mut i = ti;
            loop {
                if match_at(p, t, pi + 1, i, failed) {
                    break true;
                }
                if i == t.len() || t[i] == '/' {
                    break false;
                }
                i += 1;
            }
        }
        Some('?') => ti < t.len() && t[ti] != '/' && match_at(p, t, pi + 1, ti + 1, failed),
        Some('[') => match Class::parse(p, pi + 1) {
            Some(class) => {
                ti < t.len()
                    && t[ti] != '/'
                    && class.contains(t[ti])
                    && match_at(p, t, class.end, ti + 1, failed)
            }
            // An unclosed `[` is a literal.
            None => t.get(ti) == Some(&'[') && match_at(p, t, pi + 1, ti + 1, failed),
        },
        Some(c) => t.get(ti) == Some(c) && match_at(p, t, pi + 1, ti + 1, failed),
    };
    if !matched {
        failed.insert((pi, ti));
    }
    matched
}

/// A `[...]` class.
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
    /// Where the pattern goes on after the closing `]`.
    end: usize,
}

impl Class {
    /// Parses a class starting after `[`; `None` when it is not closed.
    fn parse(p: &[char], mut i: usize) -> Option<Class> {
        let negated = matches!(p.get(i), Some('!' | '^'));
        if negated {
            i += 1;
        }
        let mut ranges = Vec::new();
        let start = i;
        while let Some(&c) = p.get(i) {
            // A `]` right at the start is a member, as in shells.
            if c == ']' && i > start {
                return Some(Class {
                    ranges,
                    negated,
                    end: i + 1,
                });
            }
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&end| end != ']') {
                ranges.push((c, p[i + 2]));
                i += 3;
            } else {
                ranges.push((c, c));
                i += 1;
            }
        }
        None
    }

    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().matches(path)
    }

    #[test]
    fn segments_stars_and_names() {
        assert!(m("*.rs", "src/deep/lib.rs"));
        assert!(!m("*.rs", "src/lib.rsx"));
        assert!(m("src/*.rs", "src/lib.rs"));
        assert!(!m("src/*.rs", "src/a/lib.rs"));
        assert!(m("src/**/*.rs", "src/lib.rs"));
        assert!(m("src/**/*.rs", "src/a/b/lib.rs"));
        assert!(!m("src/**/*.rs", "tests/a.rs"));
        assert!(m("**/Cargo.toml", "Cargo.toml"));
        assert!(m("src/**", "src/a/b"));
        assert!(m("./docs/?.md", "docs/a.md"));
    }

    #[test]
    fn classes_and_braces() {
        assert!(m("*.{rs,toml}", "Cargo.toml"));
        assert!(m("*.{rs,toml}", "a/main.rs"));
        assert!(!m("*.{rs,toml}", "a/main.py"));
        assert!(m("[a-c]*.txt", "b1.txt"));
        assert!(!m("[!a-c]*.txt", "b1.txt"));
        assert!(m("[x.txt", "[x.txt"));
        assert!(Glob::new("{a,b").is_err());
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let path = format!("{}b", "a".repeat(200));
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*c", &path));
        assert!(!m("**a**a**a**a**a**a**c", &path));
    }
}
