//! Text that may carry secrets, made safe to show: credentials in URLs are cut out before a
//! message reaches a log, an event or the model.

/// Hides credentials in URLs (`https://user:token@host` → `https://****@host`) before a message
/// reaches a log or an event.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("****");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_urls("fatal: https://x:ghp_secret@github.com/a/b.git not found"),
            "fatal: https://****@github.com/a/b.git not found"
        );
        assert_eq!(
            redact_urls("see https://example.com/a"),
            "see https://example.com/a"
        );
        assert_eq!(redact_urls("no url"), "no url");
    }
}
