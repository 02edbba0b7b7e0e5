//! Splits a repository's full name (`owner/name`) into its parts.

/// `Some((owner, name))` for `owner/name`, `None` for anything else.
pub fn split_repo(full: &str) -> Option<(&str, &str)> {
    let (owner, name) = full.split_once('/')?;
    let valid = |part: &str| !part.is_empty() && !part.contains('/');
    (valid(owner) && valid(name)).then_some((owner, name))
}

#[cfg(test)]
mod tests {
    use super::split_repo;

    #[test]
    fn owner_and_name() {
        assert_eq!(split_repo("kiln/kiln"), Some(("kiln", "kiln")));
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(split_repo("kiln"), None);
        assert_eq!(split_repo("a/b/c"), None);
        assert_eq!(split_repo("/b"), None);
    }
}
