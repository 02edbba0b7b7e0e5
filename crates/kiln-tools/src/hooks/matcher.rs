//! Which tools a hook applies to: the `matcher` of the Claude Code hooks contract.
//!
//! Claude Code treats a matcher as a regular expression over the tool name. kiln accepts the
//! subset that hook configurations use in practice: `*` or empty (every tool), names joined by
//! `|` (`edit_file|write_file`), and `.*` inside a name (`mcp__github__.*`), each alternative
//! matching the whole name. Anything else is refused when the hook is built rather than guessed
//! at, so a matcher never silently means something other than what its author wrote.

use super::HookError;

/// A parsed matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// `None`: every tool. Else alternatives, each a list of literal pieces that `.*` separated.
    alternatives: Option<Vec<Vec<String>>>,
}

impl Matcher {
    /// Every tool.
    pub fn any() -> Self {
        Matcher { alternatives: None }
    }

    pub fn parse(pattern: &str) -> Result<Self, HookError> {
        let pattern = pattern.trim();
        if pattern.is_empty() || pattern == "*" || pattern == ".*" {
            return Ok(Matcher::any());
        }
        let bad = |reason: &str| HookError::BadMatcher {
            matcher: pattern.to_string(),
            reason: reason.to_string(),
        };
        let mut alternatives = Vec::new();
        for alt in pattern.split('|') {
            let alt = alt.trim();
            let alt = alt.strip_prefix('^').unwrap_or(alt);
            let alt = alt.strip_suffix('$').unwrap_or(alt);
            if alt.is_empty() {
                return Err(bad("an alternative between `|` is empty"));
            }
            let pieces: Vec<String> = alt.split(".*").map(str::to_string).collect();
            let literal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':');
            if !pieces.iter().all(|piece| piece.chars().all(literal)) {
                return Err(bad(
                    "only tool names, `|` and `.*` are supported, e.g. `edit_file|write_file` \
                     or `mcp__.*`",
                ));
            }
            alternatives.push(pieces);
        }
        Ok(Matcher {
            alternatives: Some(alternatives),
        })
    }

    pub fn matches(&self, tool_name: &str) -> bool {
        match &self.alternatives {
            None => true,
            Some(alternatives) => alternatives
                .iter()
                .any(|pieces| whole_match(pieces, tool_name)),
        }
    }
}

/// Does `name` consist of `pieces` in order, with anything between consecutive pieces?
fn whole_match(pieces: &[String], name: &str) -> bool {
    let [first, middle @ .., last] = pieces else {
        // One piece: an exact name.
        return pieces.first().is_some_and(|only| only == name);
    };
    let Some(mut rest) = name.strip_prefix(first.as_str()) else {
        return false;
    };
    for piece in middle {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last.as_str())
}

#[cfg(test)]
mod tests {
    use super::Matcher;

    fn m(pattern: &str, name: &str) -> bool {
        Matcher::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn names_alternatives_and_wildcards() {
        assert!(m("*", "bash"));
        assert!(m("", "bash"));
        assert!(m("bash", "bash"));
        assert!(!m("bash", "bash2"));
        assert!(!m("edit", "edit_file"));
        assert!(m("edit_file|write_file", "write_file"));
        assert!(!m("edit_file|write_file", "read_file"));
        assert!(m("mcp__.*", "mcp__github__pr"));
        assert!(m("^.*_file$", "read_file"));
        assert!(m("a.*b.*c", "axxbyyc"));
        assert!(!m("a.*b.*c", "axxcyyb"));
        assert!(!m("ab.*ba", "aba"));
    }

    #[test]
    fn unsupported_regex_is_refused() {
        assert!(Matcher::parse("Edit(File)?").is_err());
        assert!(Matcher::parse("a||b").is_err());
        assert!(Matcher::parse("[ab]").is_err());
    }
}
