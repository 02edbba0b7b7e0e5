//! Text that may carry secrets, made safe to show: credentials in URLs are cut out before a
//! message reaches a log, an event or the model.

/// The host of a URL or git remote (`https://host/x.git`, `ssh://git@host:22/x`,
/// `git@host:x.git`), lowercase, without user or port; none for a local path.
pub fn url_host(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme != "file" => rest,
        Some(_) => return None,
        // scp-like syntax: `user@host:path`.
        None if !url.starts_with('/') && url.contains(':') => url,
        None => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

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

#[cfg(test)]
mod url_host_tests {
    use super::url_host;

    #[test]
    fn hosts_of_remotes() {
        let cases = [
            ("https://github.com/o/r.git", Some("github.com")),
            (
                "https://x:tok@Git.Example.org:8443/o/r",
                Some("git.example.org"),
            ),
            ("ssh://git@host.example:22/r", Some("host.example")),
            ("git@github.com:o/r.git", Some("github.com")),
            ("http://[::1]:80/x", Some("::1")),
            ("/srv/git/r.git", None),
            ("file:///srv/git/r.git", None),
        ];
        for (url, host) in cases {
            assert_eq!(url_host(url).as_deref(), host, "{url}");
        }
    }
}
