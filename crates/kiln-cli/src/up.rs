//! `kiln up`: the control plane on this machine — API server, session engine and local
//! sandboxes — on embedded defaults.
//!
//! Configuration resolves once, here: defaults < config file < environment < flags. The file is
//! `--config`, `$KILN_CONFIG`, or `DATA/kiln.toml` when it exists; unknown keys are an error.

use crate::DataDirArg;
use anyhow::Context;
use kiln_engine::{EngineConfig, PromptLimits, hooks::HookConfig};
use kiln_model::ModelConfig;
use kiln_sandbox::{LocalConfig, LocalProvider};
use kiln_server::AppState;
use serde::Deserialize;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Address to serve on [default: 127.0.0.1:7800]
    #[arg(long, env = "KILN_LISTEN")]
    listen: Option<String>,
    /// A TOML config file [default: DATA/kiln.toml if it exists]
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

/// The config file. Every key is optional; environment and flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    /// A second address serving only `/metrics`, without a token (for a Prometheus on a
    /// private network); `KILN_METRICS_LISTEN` overrides it.
    metrics_listen: Option<String>,
    /// `provider/model`, e.g. `anthropic/claude-sonnet-4-5`; `KILN_MODEL` overrides it.
    model: Option<String>,
    #[serde(default)]
    limits: FileLimits,
    /// What each model's tokens cost (`[[prices]]`, docs/spend.md).
    #[serde(default)]
    prices: Vec<crate::up_spend::FilePrice>,
    bash_timeout_secs: Option<u64>,
    #[serde(default)]
    hooks: Vec<HookConfig>,
    /// Host uid sandboxes run as; must not be a real user.
    sandbox_uid: Option<u32>,
    /// Memory all sandboxes may use together, in MiB (default: the machine's memory less
    /// max(1 GiB, 10%) for kiln and the host; 0: no bound).
    sandbox_memory_mb: Option<u64>,
    /// Processes all sandboxes may have together (default: 3/4 of the kernel's; 0: no bound).
    sandbox_pids: Option<u64>,
    /// Rebuild every repo's image this often when its default branch moved (default 30; 0: never).
    image_rebuild_minutes: Option<u64>,
    /// Warm sandboxes kept per repo that has an image (default 2; 0: no pool).
    pool_size: Option<usize>,
    /// Most warm sandboxes per repo when recent demand is higher (default 6; at most
    /// `pool_size`: a fixed pool).
    pool_max: Option<usize>,
    /// Snapshot and stop a session's sandbox after this many idle minutes (default 30; 0: never).
    idle_stop_minutes: Option<u64>,
    /// Ready images kept per repo by the garbage collector, besides those in use (default 3).
    images_kept: Option<usize>,
    /// Sessions one user may have active (working or holding a sandbox) at once (default 10;
    /// 0: no limit).
    max_active_sessions_per_user: Option<usize>,
    /// The committer of session commits (the author is the prompt's sender).
    commit_name: Option<String>,
    commit_email: Option<String>,
    /// Commit what a prompt leaves uncommitted (default on).
    auto_commit: Option<bool>,
    /// Hosts no sandbox may reach, whatever its repo's policy (`*.example.org` wildcards).
    #[serde(default)]
    egress_deny: Vec<String>,
    /// Hosts added to every repo's allowlist, at setup and agent time (an internal mirror).
    #[serde(default)]
    egress_allow: Vec<String>,
    /// How long a stop (SIGTERM, Ctrl-C) may take before kiln exits anyway (default 20).
    shutdown_timeout_secs: Option<u64>,
    /// The address browsers use, behind a reverse proxy (`https://kiln.example.com`);
    /// `KILN_PUBLIC_URL` overrides it. `https://` marks the session cookie `Secure`.
    public_url: Option<String>,
    /// GitHub: pull requests in their requester's name, sign-in with GitHub, the app's access
    /// to repositories. Every key can be set by `KILN_GITHUB_<KEY>` instead.
    #[serde(default)]
    github: FileGitHub,
    /// `[mcp]`: repos' remote MCP servers (called from this host).
    #[serde(default)]
    mcp: FileMcp,
    /// `[subsessions]`: how far agents may spawn sub-sessions, with per-repo replacements
    /// (`[subsessions.repos.NAME]`).
    #[serde(default)]
    subsessions: FileSubsessions,
    /// `[retention]`: when idle sessions are archived and deleted (default: never).
    #[serde(default)]
    retention: FileRetention,
    /// `[slack]`: the Slack app (docs/slack.md). Every key can be set by `KILN_SLACK_<KEY>`.
    #[serde(default)]
    slack: crate::up_slack::FileSlack,
}

/// `[retention]`, in days of idleness; 0 or absent: never. `KILN_RETENTION_ARCHIVE_AFTER_DAYS`
/// and `KILN_RETENTION_DELETE_AFTER_DAYS` override them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    archive_after_days: Option<u64>,
    delete_after_days: Option<u64>,
}

/// `[retention]` with the environment over it, checked: deleting must come after archiving.
fn resolve_retention(
    file: &FileRetention,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<kiln_engine::Retention> {
    let days =
        |key: &str, name: &str, from_file: Option<u64>| -> anyhow::Result<Option<Duration>> {
            let days = match env(key).filter(|v| !v.trim().is_empty()) {
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("{key}={v:?} must be a whole number of days (0: never)")
                })?,
                None => from_file.unwrap_or(0),
            };
            anyhow::ensure!(
                days <= 36_500,
                "[retention] {name} = {days} is more than a hundred years; use 0 for never"
            );
            Ok((days > 0).then(|| Duration::from_secs(days * 86_400)))
        };
    let archive_after = days(
        "KILN_RETENTION_ARCHIVE_AFTER_DAYS",
        "archive_after_days",
        file.archive_after_days,
    )?;
    let delete_after = days(
        "KILN_RETENTION_DELETE_AFTER_DAYS",
        "delete_after_days",
        file.delete_after_days,
    )?;
    if let (Some(archive), Some(delete)) = (archive_after, delete_after) {
        anyhow::ensure!(
            delete > archive,
            "[retention] delete_after_days ({}) must be more than archive_after_days ({}): \
             sessions are archived first, then deleted",
            delete.as_secs() / 86_400,
            archive.as_secs() / 86_400
        );
    }
    Ok(kiln_engine::Retention {
        archive_after,
        delete_after,
    })
}

/// `[subsessions]` limits; a key left out keeps its default (2, 4, 16).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubsessions {
    max_depth: Option<u32>,
    max_concurrent_per_parent: Option<usize>,
    max_total_per_parent: Option<usize>,
    /// Per repo: its keys replace the ones above for sessions on that repo.
    #[serde(default)]
    repos: std::collections::BTreeMap<String, FileSubsessionLimits>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubsessionLimits {
    /// How deep sub-sessions nest (0: no sub-session tools).
    max_depth: Option<u32>,
    /// Children of one session working at once.
    max_concurrent_per_parent: Option<usize>,
    /// Children one session may spawn in all.
    max_total_per_parent: Option<usize>,
}

impl FileSubsessionLimits {
    fn over(&self, base: kiln_engine::SubsessionLimits) -> kiln_engine::SubsessionLimits {
        kiln_engine::SubsessionLimits {
            max_depth: self.max_depth.unwrap_or(base.max_depth),
            max_concurrent_per_parent: self
                .max_concurrent_per_parent
                .unwrap_or(base.max_concurrent_per_parent),
            max_total_per_parent: self
                .max_total_per_parent
                .unwrap_or(base.max_total_per_parent),
        }
    }
}

/// `[mcp]`: what repos' remote MCP servers may be.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMcp {
    /// `host:port` pairs a remote MCP server may be at although its address is loopback,
    /// private, link-local or this host's (refused otherwise); `KILN_MCP_ALLOW_HOSTS`
    /// (comma-separated) overrides it.
    #[serde(default)]
    allow_hosts: Vec<String>,
}

/// `[mcp] allow_hosts` with `KILN_MCP_ALLOW_HOSTS` over it, each checked to be `host:port`.
fn resolve_mcp(file: &FileMcp, env: Option<String>) -> anyhow::Result<kiln_engine::McpSettings> {
    let allow_hosts: Vec<String> = match env.filter(|v| !v.trim().is_empty()) {
        Some(list) => list.split(',').map(|h| h.trim().to_string()).collect(),
        None => file.allow_hosts.clone(),
    };
    for entry in &allow_hosts {
        let valid = entry
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        anyhow::ensure!(
            valid,
            "[mcp] allow_hosts {entry:?} must be host:port, e.g. \"127.0.0.1:3011\" or \"mcp.internal:443\""
        );
    }
    Ok(kiln_engine::McpSettings { allow_hosts })
}

/// `[github]`: a GitHub App (github.com or GitHub Enterprise Server).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGitHub {
    /// `https://api.github.com` (default) or `https://HOST/api/v3` for GHES.
    api_url: Option<String>,
    app_id: Option<StringOrNumber>,
    /// A path to the app's private key (PEM).
    private_key: Option<PathBuf>,
    client_id: Option<String>,
    client_secret: Option<String>,
    webhook_secret: Option<String>,
    /// The issue label that starts a session (default `kiln`).
    label: Option<String>,
    /// The handle comments mention to ask kiln for work, without `@` (default `kiln`: the
    /// app's slug).
    mention: Option<String>,
}

/// An id written either way in TOML (`app_id = 123` or `app_id = "123"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(u64),
}

/// `[github]` after the environment: what the forge gets, and the key's path to show.
#[derive(Debug)]
struct ResolvedGitHub {
    config: kiln_forge::GitHubConfig,
    private_key_path: Option<PathBuf>,
}

/// `[github]` with `KILN_GITHUB_*` over it; `None` when nothing of it is set. The private key
/// is read here, once, so a wrong path fails `kiln up` with the path in the message.
fn resolve_github(
    file: FileGitHub,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<ResolvedGitHub>> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let api_url = var("KILN_GITHUB_API_URL").or(file.api_url);
    let app_id = var("KILN_GITHUB_APP_ID").or(file.app_id.map(|id| match id {
        StringOrNumber::String(s) => s,
        StringOrNumber::Number(n) => n.to_string(),
    }));
    let private_key_path = var("KILN_GITHUB_PRIVATE_KEY")
        .map(PathBuf::from)
        .or(file.private_key);
    let client_id = var("KILN_GITHUB_CLIENT_ID").or(file.client_id);
    let client_secret = var("KILN_GITHUB_CLIENT_SECRET").or(file.client_secret);
    let webhook_secret = var("KILN_GITHUB_WEBHOOK_SECRET").or(file.webhook_secret);
    let label = var("KILN_GITHUB_LABEL").or(file.label);
    let mention = var("KILN_GITHUB_MENTION")
        .or(file.mention)
        .map(|m| m.trim_start_matches('@').to_string());
    let any = api_url.is_some()
        || app_id.is_some()
        || private_key_path.is_some()
        || client_id.is_some()
        || client_secret.is_some()
        || webhook_secret.is_some();
    if !any {
        return Ok(None);
    }
    if let Some(m) = &mention {
        anyhow::ensure!(
            !m.is_empty()
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "[github] mention {m:?} must be a GitHub handle (letters, digits, `-`), without `@`"
        );
    }
    let defaults = kiln_forge::Triggers::default();
    let triggers = kiln_forge::Triggers {
        label: label.unwrap_or(defaults.label),
        mention: mention.unwrap_or(defaults.mention),
    };
    if let Some(url) = &api_url {
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "[github] api_url {url:?} must start with https:// (http:// only for a local test server)"
        );
    }
    anyhow::ensure!(
        app_id.is_some() == private_key_path.is_some(),
        "[github] app_id and private_key go together: set both (KILN_GITHUB_APP_ID, \
         KILN_GITHUB_PRIVATE_KEY) or neither"
    );
    anyhow::ensure!(
        client_id.is_some() == client_secret.is_some(),
        "[github] client_id and client_secret go together: set both (KILN_GITHUB_CLIENT_ID, \
         KILN_GITHUB_CLIENT_SECRET) or neither"
    );
    let private_key_pem = match &private_key_path {
        Some(path) => Some(kiln_core::Secret::new(std::fs::read(path).with_context(
            || format!("reading the GitHub App's private key {}", path.display()),
        )?)),
        None => None,
    };
    Ok(Some(ResolvedGitHub {
        config: kiln_forge::GitHubConfig {
            api_url: api_url.unwrap_or_default(),
            app_id,
            private_key_pem,
            client_id,
            client_secret: client_secret.map(kiln_core::Secret::new),
            webhook_secret: webhook_secret.map(kiln_core::Secret::new),
            triggers,
        },
        private_key_path,
    }))
}

fn print_github(github: Option<&ResolvedGitHub>) {
    let Some(github) = github else {
        println!("# github: not configured ([github] in kiln.toml or KILN_GITHUB_*)");
        return;
    };
    let c = &github.config;
    let set = |v: bool| if v { "****" } else { "(none)" };
    println!("[github]");
    println!(
        "api_url = {:?}",
        if c.api_url.is_empty() {
            "https://api.github.com"
        } else {
            &c.api_url
        }
    );
    println!("app_id = {:?}", c.app_id.as_deref().unwrap_or("(none)"));
    match &github.private_key_path {
        Some(path) => println!("private_key = {:?}", path.display().to_string()),
        None => println!("private_key = \"(none)\""),
    }
    println!(
        "client_id = {:?}",
        c.client_id.as_deref().unwrap_or("(none)")
    );
    println!("client_secret = \"{}\"", set(c.client_secret.is_some()));
    println!("webhook_secret = \"{}\"", set(c.webhook_secret.is_some()));
    println!("label = {:?}", c.triggers.label);
    println!("mention = {:?}", c.triggers.mention);
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_turns: Option<u32>,
    max_tokens: Option<u64>,
    // Spend (docs/spend.md): caps per prompt and session, daily budgets, the context window.
    max_tokens_per_session: Option<u64>,
    max_cost_usd_per_prompt: Option<f64>,
    max_cost_usd_per_session: Option<f64>,
    daily_budget_usd_per_user: Option<f64>,
    daily_budget_usd_per_repo: Option<f64>,
    context_tokens: Option<u64>,
}

/// Everything `kiln up` runs with.
#[derive(Debug)]
struct Resolved {
    data_dir: PathBuf,
    listen: SocketAddr,
    config_file: Option<PathBuf>,
    sandbox_uid: u32,
    /// The parent cgroup's bounds: all sandboxes together.
    sandboxes_memory_bytes: Option<u64>,
    sandboxes_pids: Option<u64>,
    engine: EngineConfig,
    /// How long a stop may take before the process exits anyway.
    shutdown_timeout: Duration,
    /// Why there is no model, when there is none.
    model_problem: Option<String>,
    public_url: Option<String>,
    github: Option<ResolvedGitHub>,
    metrics_listen: Option<SocketAddr>,
    slack: Option<kiln_slack::SlackConfig>,
}

fn resolve(args: &UpArgs) -> anyhow::Result<Resolved> {
    let data_dir = args.data_dir.data_dir.clone();
    let config_file = args.config.clone().or_else(|| {
        let default = data_dir.join("kiln.toml");
        default.is_file().then_some(default)
    });
    let mut file: FileConfig = match &config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let listen = args
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:7800".into());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:7800"))?;
    let metrics_listen = match std::env::var("KILN_METRICS_LISTEN")
        .ok()
        .filter(|v| !v.is_empty())
        .or(file.metrics_listen.clone())
    {
        Some(addr) => Some(addr.parse::<SocketAddr>().with_context(|| {
            format!("metrics_listen {addr:?} is not an address like 127.0.0.1:9464")
        })?),
        None => None,
    };
    let model_name = std::env::var("KILN_MODEL").ok().or(file.model);
    let (model, model_problem) =
        match ModelConfig::resolve(model_name.as_deref(), |key| std::env::var(key).ok()) {
            Ok(Some(model)) => (Some(model), None),
            Ok(None) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
    let defaults = EngineConfig::default();
    let public_url = std::env::var("KILN_PUBLIC_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .or(file.public_url.clone());
    if let Some(url) = &public_url {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "public_url {url:?} must start with http:// or https://"
        );
    }
    let github = resolve_github(std::mem::take(&mut file.github), |k| std::env::var(k).ok())?;
    let slack =
        crate::up_slack::resolve_slack(std::mem::take(&mut file.slack), |k| std::env::var(k).ok())?;
    let mcp = resolve_mcp(&file.mcp, std::env::var("KILN_MCP_ALLOW_HOSTS").ok())?;
    let retention = resolve_retention(&file.retention, |k| std::env::var(k).ok())?;
    let egress = egress_settings(
        &file.egress_deny,
        &file.egress_allow,
        listen,
        public_url.as_deref(),
    )?;
    let (limits, prices, budgets) = crate::up_spend::resolve(
        PromptLimits {
            max_turns: file.limits.max_turns.unwrap_or(defaults.limits.max_turns),
            max_tokens: file.limits.max_tokens.unwrap_or(defaults.limits.max_tokens),
            ..defaults.limits
        },
        crate::up_spend::SpendLimits {
            max_cost_usd_per_prompt: file.limits.max_cost_usd_per_prompt,
            max_cost_usd_per_session: file.limits.max_cost_usd_per_session,
            max_tokens_per_session: file.limits.max_tokens_per_session,
            daily_budget_usd_per_user: file.limits.daily_budget_usd_per_user,
            daily_budget_usd_per_repo: file.limits.daily_budget_usd_per_repo,
            context_tokens: file.limits.context_tokens,
        },
        std::mem::take(&mut file.prices),
    )?;
    let engine = EngineConfig {
        model,
        limits,
        prices,
        budgets,
        bash_timeout: file
            .bash_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(defaults.bash_timeout),
        hooks: file.hooks,
        rust_hooks: Vec::new(),
        git_timeout: defaults.git_timeout,
        image_step_timeout: defaults.image_step_timeout,
        snapshot_delay: defaults.snapshot_delay,
        image_rebuild_every: match file.image_rebuild_minutes.unwrap_or(30) {
            0 => None,
            minutes => Some(Duration::from_secs(minutes * 60)),
        },
        pool_size: file.pool_size.unwrap_or(2),
        pool_max: file.pool_max.unwrap_or(6),
        idle_stop_after: match file.idle_stop_minutes.unwrap_or(30) {
            0 => None,
            minutes => Some(Duration::from_secs(minutes * 60)),
        },
        reservation_ttl: defaults.reservation_ttl,
        image_max_layers: defaults.image_max_layers,
        images_kept: file.images_kept.unwrap_or(defaults.images_kept).max(1),
        gc_every: Some(Duration::from_secs(10 * 60)),
        gc_grace: defaults.gc_grace,
        max_active_sessions_per_user: file.max_active_sessions_per_user.unwrap_or(10),
        egress,
        secret_key: std::env::var(kiln_vault::KEY_ENV)
            .ok()
            .filter(|key| !key.trim().is_empty())
            .map(kiln_core::Secret::new),
        // `DATA/bases`, collected with the images that use them.
        bases_dir: None,
        committer: (
            file.commit_name.unwrap_or(defaults.committer.0),
            file.commit_email.unwrap_or(defaults.committer.1),
        ),
        auto_commit: file.auto_commit.unwrap_or(true),
        github: github.as_ref().map(|g| g.config.clone()),
        subsessions: {
            let limits = FileSubsessionLimits {
                max_depth: file.subsessions.max_depth,
                max_concurrent_per_parent: file.subsessions.max_concurrent_per_parent,
                max_total_per_parent: file.subsessions.max_total_per_parent,
            }
            .over(defaults.subsessions.limits);
            kiln_engine::SubsessionConfig {
                limits,
                repos: file
                    .subsessions
                    .repos
                    .iter()
                    .map(|(repo, l)| (repo.clone(), l.over(limits)))
                    .collect(),
            }
        },
        mcp,
        retention,
    };
    Ok(Resolved {
        public_url,
        github,
        metrics_listen,
        slack,
        data_dir,
        listen,
        config_file,
        sandbox_uid: file.sandbox_uid.unwrap_or(900_000),
        sandboxes_memory_bytes: match file.sandbox_memory_mb {
            None => LocalConfig::default_sandboxes_memory(),
            Some(0) => None,
            Some(mb) => Some(mb << 20),
        },
        sandboxes_pids: match file.sandbox_pids {
            None => LocalConfig::default_sandboxes_pids(),
            Some(0) => None,
            some => some,
        },
        engine,
        shutdown_timeout: Duration::from_secs(file.shutdown_timeout_secs.unwrap_or(20)),
        model_problem,
    })
}

/// The egress proxies' settings: `kiln.toml`'s deny and allow lists, and the kiln API itself
/// refused whatever the policy — its listen address (already refused as this host's, unless
/// the host is reached by another address, as through NAT) and the public URL's host by name.
fn egress_settings(
    deny: &[String],
    allow: &[String],
    listen: SocketAddr,
    public_url: Option<&str>,
) -> anyhow::Result<kiln_engine::EgressSettings> {
    let patterns = |key: &str, hosts: &[String]| -> anyhow::Result<Vec<kiln_egress::HostPattern>> {
        hosts
            .iter()
            .map(|host| {
                host.parse()
                    .map_err(|e| anyhow::anyhow!("{key} {host:?}: {e}"))
            })
            .collect()
    };
    let mut deny = patterns("egress_deny", deny)?;
    let mut denied_addrs = vec![kiln_egress::DeniedAddr::Socket(listen)];
    if let Some(host) = public_url.and_then(kiln_core::url_host) {
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => denied_addrs.push(kiln_egress::DeniedAddr::Ip(ip)),
            Err(_) => deny.extend(host.parse().ok()),
        }
    }
    Ok(kiln_engine::EgressSettings {
        rules: std::sync::Arc::new(kiln_egress::AddressRules::new(denied_addrs)),
        deny,
        allow: patterns("egress_allow", allow)?,
        test_resolve: None,
    })
}

/// The effective configuration as TOML-like lines; API keys show only whether they are set.
fn print_config(resolved: &Resolved) {
    println!("data_dir = {:?}", resolved.data_dir);
    println!("listen = \"{}\"", resolved.listen);
    if let Some(addr) = resolved.metrics_listen {
        println!("metrics_listen = \"{addr}\"");
    }
    match &resolved.config_file {
        Some(path) => println!("# config file: {}", path.display()),
        None => println!("# no config file"),
    }
    println!("sandbox_uid = {}", resolved.sandbox_uid);
    println!(
        "sandbox_memory_mb = {}",
        resolved.sandboxes_memory_bytes.map_or(0, |b| b >> 20)
    );
    println!("sandbox_pids = {}", resolved.sandboxes_pids.unwrap_or(0));
    if let Some(url) = &resolved.public_url {
        println!("public_url = {url:?}");
    }
    match &resolved.engine.model {
        Some(model) => {
            println!("model = \"{}\"", model.display_name());
            println!("model_base_url = \"{}\"", model.base_url);
            println!(
                "model_api_key = \"{}\"",
                if model.api_key.is_some() {
                    "****"
                } else {
                    "(none)"
                }
            );
        }
        None => println!("# model: none — {}", model_hint(resolved)),
    }
    match &resolved.engine.secret_key {
        Some(_) => println!("# secret key: KILN_SECRET_KEY (****)"),
        None => println!(
            "# secret key: {}",
            resolved.data_dir.join(kiln_vault::KEY_FILE).display()
        ),
    }
    println!(
        "bash_timeout_secs = {}",
        resolved.engine.bash_timeout.as_secs()
    );
    let minutes = |every: Option<Duration>| every.map_or(0, |d| d.as_secs() / 60);
    let engine = &resolved.engine;
    println!(
        "image_rebuild_minutes = {}",
        minutes(engine.image_rebuild_every)
    );
    println!("pool_size = {}", engine.pool_size);
    println!("pool_max = {}", engine.pool_max);
    println!("idle_stop_minutes = {}", minutes(engine.idle_stop_after));
    println!("images_kept = {}", engine.images_kept);
    println!(
        "max_active_sessions_per_user = {}",
        engine.max_active_sessions_per_user
    );
    println!("commit_name = {:?}", engine.committer.0);
    println!("commit_email = {:?}", engine.committer.1);
    println!("auto_commit = {}", engine.auto_commit);
    println!(
        "shutdown_timeout_secs = {}",
        resolved.shutdown_timeout.as_secs()
    );
    println!("[limits]");
    println!("max_turns = {}", resolved.engine.limits.max_turns);
    println!("max_tokens = {}", resolved.engine.limits.max_tokens);
    crate::up_spend::print_limits(&resolved.engine.limits, &resolved.engine.budgets);
    crate::up_spend::print_prices(&resolved.engine.prices);
    let subs = &resolved.engine.subsessions;
    println!("[subsessions]");
    println!("max_depth = {}", subs.limits.max_depth);
    println!(
        "max_concurrent_per_parent = {}",
        subs.limits.max_concurrent_per_parent
    );
    println!(
        "max_total_per_parent = {}",
        subs.limits.max_total_per_parent
    );
    for (repo, l) in &subs.repos {
        println!("[subsessions.repos.{repo:?}]");
        println!("max_depth = {}", l.max_depth);
        println!(
            "max_concurrent_per_parent = {}",
            l.max_concurrent_per_parent
        );
        println!("max_total_per_parent = {}", l.max_total_per_parent);
    }
    for hook in &resolved.engine.hooks {
        println!("[[hooks]] # {hook:?}");
    }
    print_github(resolved.github.as_ref());
    print!(
        "{}",
        crate::up_slack::describe_slack(resolved.slack.as_ref())
    );
    println!("[mcp]");
    println!("allow_hosts = {:?}", resolved.engine.mcp.allow_hosts);
    let days = |after: Option<Duration>| after.map_or(0, |d| d.as_secs() / 86_400);
    println!("[retention]");
    println!(
        "archive_after_days = {}",
        days(resolved.engine.retention.archive_after)
    );
    println!(
        "delete_after_days = {}",
        days(resolved.engine.retention.delete_after)
    );
}

fn model_hint(resolved: &Resolved) -> String {
    resolved.model_problem.clone().unwrap_or_else(|| {
        "set KILN_MODEL (e.g. anthropic/claude-sonnet-4-5) and ANTHROPIC_API_KEY, or \
         KILN_MODEL=openai/gpt-4.1 and OPENAI_API_KEY"
            .into()
    })
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;
    if args.print_config {
        print_config(&resolved);
        return Ok(());
    }
    let data_dir = &resolved.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(data_dir)?;
    let listener = tokio::net::TcpListener::bind(resolved.listen)
        .await
        .with_context(|| format!("listening on {}", resolved.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match resolved.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for metrics on {at}"))?,
        ),
        None => None,
    };
    let mut sandbox_config = LocalConfig::new(data_dir);
    sandbox_config.sandbox_uid = resolved.sandbox_uid;
    sandbox_config.sandboxes_memory_bytes = resolved.sandboxes_memory_bytes;
    sandbox_config.sandboxes_pids = resolved.sandboxes_pids;
    let provider = LocalProvider::open(sandbox_config)
        .await
        .context("starting the local sandbox provider")?;
    let store = kiln_store::Store::open(data_dir)
        .await
        .context("opening the control database")?;
    make_private(data_dir)?;
    let admin_token = kiln_server::bootstrap(&store, data_dir).await?;
    let browser_url = resolved
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    // A sign-in link only for a person at a terminal: stderr of a service goes to its logs.
    let login_link = if std::io::stderr().is_terminal() {
        kiln_server::admin_login_link(&store, &browser_url).await?
    } else {
        None
    };
    if resolved.engine.model.is_none() {
        crate::logs::announce(&format!("warning: {}", model_hint(&resolved)));
    }
    let engine =
        kiln_engine::Engine::start(store, Arc::new(provider), data_dir.clone(), resolved.engine)
            .await
            .context("starting the session engine")?;
    let url = format!("http://{addr}");
    crate::logs::announce(&format!("kiln listening on {url}"));
    if let Some(link) = login_link {
        eprintln!("sign in (single use, 10 minutes): {link}");
    }
    match admin_token {
        Some(_) => crate::logs::announce(&format!(
            "admin token: in {} (KILN_TOKEN for the CLI); `kiln login-link` prints a sign-in link",
            data_dir.join(kiln_server::ADMIN_TOKEN_FILE).display()
        )),
        None => crate::logs::announce(&format!(
            "the admin token is no longer in {}; `kiln admin token` makes a new one",
            data_dir.join(kiln_server::ADMIN_TOKEN_FILE).display()
        )),
    }
    let mut state = AppState::new(engine.clone()).with_public_url(resolved.public_url.clone());
    if let Some(slack) = resolved.slack.clone() {
        state = state.with_slack(
            kiln_slack::Slack::new(engine.clone(), Some(slack)).context("starting Slack")?,
        );
    }
    let metrics = match metrics_listener {
        Some(listener) => {
            crate::logs::announce(&format!(
                "metrics (no token) on http://{}/metrics",
                listener.local_addr()?
            ));
            Some(tokio::spawn(kiln_server::serve_metrics(
                listener,
                state.clone(),
            )))
        }
        None => None,
    };
    let stop = stop_signal(resolved.shutdown_timeout)?;
    let served = kiln_server::serve(listener, state, async {
        let _ = stop.await;
    })
    .await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    crate::logs::announce("kiln: stopping sessions");
    engine.shutdown().await;
    served.context("serving the API")
}

/// One `kiln up` per data dir: two would both write every session's log. The lock dies with
/// the process, so a killed server never blocks its successor.
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("kiln.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another kiln is running on {}; stop it or use another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The data dir must stay traversable by the sandbox uid (sandbox sockets live under it), but
/// the databases are the control plane's alone.
fn make_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let mode = if name == "sessions" || name == "repos" {
            0o700
        } else if name.starts_with("control.db") || name == "kiln.toml" {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {}", entry.path().display()))?;
    }
    Ok(())
}

/// Resolves on the first SIGTERM or Ctrl-C, which starts a graceful stop. The signals are
/// watched on a thread of their own, outside the server's runtime, so that a stop that does not
/// finish within `deadline` — a stuck task, a wedged worker thread — or a second signal still
/// ends the process. Exiting then loses nothing acknowledged: every event is committed before
/// anyone hears of it, and sandboxes outlive the process to be reattached by the next start.
fn stop_signal(deadline: Duration) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (stop, stopping) = tokio::sync::oneshot::channel();
    // The handlers are registered before this returns, so a signal sent right after start
    // counts.
    let (registered, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kiln-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(registered.send(Err(e))),
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let signals = signal(SignalKind::terminate())
                    .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
                let (mut term, mut int) = match signals {
                    Ok(signals) => {
                        let _ = registered.send(Ok(()));
                        signals
                    }
                    Err(e) => return drop(registered.send(Err(e))),
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = stop.send(());
                let why = tokio::select! {
                    _ = tokio::time::sleep(deadline) => format!("did not finish within {deadline:?}"),
                    _ = term.recv() => "was interrupted by a second signal".to_string(),
                    _ = int.recv() => "was interrupted by a second signal".to_string(),
                };
                eprintln!(
                    "kiln: the stop {why}; exiting now (acknowledged work is on disk, and \
                     sessions' sandboxes are reattached by the next start)"
                );
                std::process::exit(1);
            })
        })
        .context("starting the signal watcher")?;
    ready
        .recv()
        .context("the signal watcher ended")?
        .context("watching SIGTERM and SIGINT")?;
    Ok(stopping)
}
