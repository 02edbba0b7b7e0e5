//! Branch names as git accepts them. A repo's `default_branch` is handed to `git fetch` and
//! `git checkout` on the host; `main:refs/heads/x` there is a refspec, `-x` an option, and
//! garbage a failed sync much later. So it is checked up front, with the rules of
//! `git check-ref-format --branch` (see `git help check-ref-format`), as a pure function.

use std::fmt;

/// Why a name is not a valid branch name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRefName(&'static str);

impl fmt::Display for BadRefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadRefName {}

/// Checks `name` as a branch name (`refs/heads/<name>`), like `git check-ref-format --branch`:
/// no `..`, `@{`, control characters, space or any of `~^:?*[\`; no empty, `.`-led or
/// `.lock`-ended component; not `@` or `HEAD`, not led by `-`, not ending in `/` or `.`.
pub fn check_branch_name(name: &str) -> Result<(), BadRefName> {
    let bad = |why| Err(BadRefName(why));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.starts_with('-') {
        return bad("starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return bad("is '@' or 'HEAD'");
    }
    if name.ends_with('/') || name.ends_with('.') {
        return bad("ends with '/' or '.'");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    if name.contains("@{") {
        return bad("contains '@{'");
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(BadRefName(match c {
            ' ' => "contains a space",
            c if c.is_control() => "contains a control character",
            _ => "contains one of ~ ^ : ? * [ \\",
        }));
    }
    for component in name.split('/') {
        if component.is_empty() {
            return bad("has an empty path component ('//' or a leading '/')");
        }
        if component.starts_with('.') {
            return bad("has a path component starting with '.'");
        }
        if component.ends_with(".lock") {
            return bad("has a path component ending in '.lock'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_branch_name;

    #[test]
    fn branch_names_follow_git() {
        for good in [
            "main",
            "master",
            "feature/x",
            "release-1.2",
            "a.b",
            "kiln/s-0123",
            "user@host",
            "ünïcode",
            "x.locked",
            "@x",
        ] {
            assert_eq!(check_branch_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "main:refs/heads/x",
            "a..b",
            "a@{1}",
            "-x",
            "--upload-pack=evil",
            "x.lock",
            "a/x.lock/b",
            "x/",
            "x.",
            "/x",
            "a//b",
            ".hidden",
            "a/.b",
            "@",
            "HEAD",
            "has space",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "a~1",
            "a^",
            "a?",
            "a*",
            "a[b",
            "a\\b",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// Every name the rules accept is one `git check-ref-format --branch` accepts too: built
    /// from safe pieces, so this checks the checker does not refuse what it should not.
    #[test]
    fn names_built_from_safe_components_pass() {
        let pieces = ["a", "feat", "x-1", "v1.2", "_", "A9", "é"];
        for a in pieces {
            for b in pieces {
                let name = format!("{a}/{b}");
                assert_eq!(check_branch_name(&name), Ok(()), "{name:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Agrees with git itself (`git check-ref-format refs/heads/<name>`), except that a
        /// branch may also not be `@`, `HEAD` or start with `-` (what `--branch` adds).
        #[test]
        fn agrees_with_git(name in "[a-c./@{}:~^?*\\[\\\\ \t-]{0,8}(\\.lock)?") {
            let git = std::process::Command::new("git")
                .args(["check-ref-format", &format!("refs/heads/{name}")])
                .output()
                .expect("git runs")
                .status
                .success();
            let ours = check_branch_name(&name).is_ok();
            let stricter = name == "@" || name == "HEAD" || name.starts_with('-');
            proptest::prop_assert_eq!(ours, git && !stricter, "{:?}", name);
        }
    }
}
