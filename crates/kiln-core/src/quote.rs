//! Someone's words quoted back to them in a reply (a GitHub comment, a Slack thread).

/// `text` as a `> ` block quote (Markdown, and Slack's mrkdwn), cut after `max_chars`
/// characters with `…`; empty for blank text.
pub fn block_quote(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut() {
        assert_eq!(block_quote("  ", 10), "");
        assert_eq!(block_quote("a\nb", 10), "> a\n> b");
        assert_eq!(block_quote("héllo wörld", 5), "> héllo…");
    }
}
