//! `[slack]` of kiln.toml (issue 17): the Slack app kiln answers as. Every key can be set by
//! `KILN_SLACK_<KEY>` instead; resolved once at start-up, printed by `kiln up --print-config`
//! with its secrets masked. See docs/slack.md.

use anyhow::ensure;
use kiln_core::Secret;
use kiln_slack::{DEFAULT_API_URL, SlackConfig};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSlack {
    /// The bot's OAuth token (`xoxb-…`).
    bot_token: Option<String>,
    /// The app's signing secret (Basic Information → App Credentials).
    signing_secret: Option<String>,
    /// The app-level token (`xapp-…`) for Socket Mode (not used yet).
    app_token: Option<String>,
    /// The Web API base (default `https://slack.com/api`).
    api_url: Option<String>,
    /// Channel id → the repo sessions started in it are on (`[slack.channels]`).
    #[serde(default)]
    channels: BTreeMap<String, String>,
}

/// `[slack]` with `KILN_SLACK_*` over it; `None` when neither token nor secret is set.
pub(crate) fn resolve_slack(
    file: FileSlack,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<SlackConfig>> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let bot_token = var("KILN_SLACK_BOT_TOKEN").or(file.bot_token);
    let signing_secret = var("KILN_SLACK_SIGNING_SECRET").or(file.signing_secret);
    let app_token = var("KILN_SLACK_APP_TOKEN").or(file.app_token);
    let api_url = var("KILN_SLACK_API_URL").or(file.api_url);
    if bot_token.is_none() && signing_secret.is_none() && app_token.is_none() {
        ensure!(
            api_url.is_none() && file.channels.is_empty(),
            "[slack] is set without bot_token and signing_secret: set both (KILN_SLACK_BOT_TOKEN, \
             KILN_SLACK_SIGNING_SECRET), or remove [slack]"
        );
        return Ok(None);
    }
    let (Some(bot_token), Some(signing_secret)) = (bot_token, signing_secret) else {
        anyhow::bail!(
            "[slack] needs both bot_token and signing_secret (KILN_SLACK_BOT_TOKEN, \
             KILN_SLACK_SIGNING_SECRET): the app's Basic Information and OAuth pages show them"
        );
    };
    let api_url = api_url.unwrap_or_else(|| DEFAULT_API_URL.into());
    ensure!(
        api_url.starts_with("https://") || api_url.starts_with("http://"),
        "[slack] api_url {api_url:?} must start with https:// (http:// only for a local test server)"
    );
    for (channel, repo) in &file.channels {
        ensure!(
            channel.starts_with(['C', 'G']) && channel.chars().all(|c| c.is_ascii_alphanumeric()),
            "[slack.channels] key {channel:?} must be a channel id (`C0123ABCD`: the channel's \
             details in Slack show it), not its name"
        );
        kiln_store::check_repo_name(repo)
            .map_err(|e| anyhow::anyhow!("[slack.channels] {channel}: {e}"))?;
    }
    Ok(Some(SlackConfig {
        bot_token: Secret::new(bot_token),
        signing_secret: Secret::new(signing_secret),
        app_token: app_token.map(Secret::new),
        api_url,
        channels: file.channels,
    }))
}

/// `[slack]` as `--print-config` shows it: secrets masked.
pub(crate) fn describe_slack(slack: Option<&SlackConfig>) -> String {
    let Some(c) = slack else {
        return "# slack: not configured ([slack] in kiln.toml or KILN_SLACK_*)\n".into();
    };
    let mut out = String::from("[slack]\n");
    out.push_str("bot_token = \"****\"\nsigning_secret = \"****\"\n");
    out.push_str(&format!(
        "app_token = \"{}\"\n",
        if c.app_token.is_some() {
            "****"
        } else {
            "(none)"
        }
    ));
    out.push_str(&format!("api_url = {:?}\n", c.api_url));
    if !c.channels.is_empty() {
        out.push_str("[slack.channels]\n");
        for (channel, repo) in &c.channels {
            out.push_str(&format!("{channel} = {repo:?}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileSlack {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn env_over_file_checked_and_masked() {
        assert!(
            resolve_slack(FileSlack::default(), |_| None)
                .unwrap()
                .is_none()
        );
        let f = file(
            "bot_token = \"xoxb-file\"\nsigning_secret = \"sek\"\n[channels]\nC0123 = \"web\"\n",
        );
        let c = resolve_slack(f, |k| {
            (k == "KILN_SLACK_BOT_TOKEN").then(|| "xoxb-env".into())
        })
        .unwrap()
        .unwrap();
        assert_eq!(c.bot_token.expose(), "xoxb-env");
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.channels["C0123"], "web");
        let shown = describe_slack(Some(&c));
        assert!(
            !shown.contains("xoxb-env") && !shown.contains("sek"),
            "{shown}"
        );
        assert!(shown.contains("C0123 = \"web\""), "{shown}");

        let e = resolve_slack(file("bot_token = \"xoxb\""), |_| None).unwrap_err();
        assert!(e.to_string().contains("signing_secret"), "{e}");
        let e = resolve_slack(
            file("bot_token = \"x\"\nsigning_secret = \"y\"\n[channels]\ngeneral = \"web\""),
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("channel id"), "{e}");
        assert!(toml::from_str::<FileSlack>("bot_tokn = \"x\"").is_err());
    }
}
