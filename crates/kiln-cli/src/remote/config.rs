//! Where the client commands find their server and token — the one place they read the
//! environment and the config file. Precedence: flags > `KILN_URL`/`KILN_TOKEN` > the config file
//! (`$XDG_CONFIG_HOME/kiln/config.toml`, else `~/.config/kiln/config.toml`) > defaults. On the
//! server machine itself no setup is needed: with no token anywhere and a local URL, the admin
//! token the server wrote to its data directory is used when this user can read it.

use anyhow::{Context, Result};
use kiln_core::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:7800";
const DEFAULT_DATA_DIR: &str = "/var/lib/kiln";

/// `--url` and `--token` as given on the command line.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// The kiln server [env: KILN_URL] [default: http://127.0.0.1:7800].
    // Own ids: a subcommand's positional `url` (`repo add NAME URL`) must not be this flag.
    #[arg(long = "url", id = "server_url", global = true, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// API token [env: KILN_TOKEN]; on the server machine the admin token is found by itself.
    #[arg(
        long = "token",
        id = "server_token",
        global = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
    /// The server's data directory, where a server on this machine keeps its admin token
    /// [env: KILN_DATA_DIR] [default: /var/lib/kiln].
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

/// What to tell a person whose request was refused for want of a token: where kiln looked.
/// Set once, by [`resolve`], when no token was given.
pub(crate) static TOKEN_HINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The resolved server address and credentials.
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) url: String,
    pub(crate) token: Option<Secret<String>>,
}

/// `config.toml`. Unknown keys are an error so that a typo (`tokn = ...`) is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
}

/// A mistake in how kiln was configured (not a failure of the server): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// Resolves the server from flags, then `env` (a lookup, so tests can supply their own), then
/// the config file, then the defaults.
pub(crate) fn resolve(flags: &ServerArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Remote> {
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let file = match config_path(&env) {
        Some(path) => read_config(&path)?,
        None => FileConfig::default(),
    };
    let url = flags
        .url
        .clone()
        .or_else(|| env("KILN_URL"))
        .or(file.url)
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let token = flags
        .token
        .clone()
        .or_else(|| env("KILN_TOKEN"))
        .or(file.token);
    let token = match token {
        Some(token) => Some(token),
        None if is_local(&url) => {
            let data_dir = flags
                .data_dir
                .clone()
                .or_else(|| env("KILN_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let path = data_dir.join("admin.token");
            let token = read_admin_token(&path);
            if token.is_none() {
                let _ = TOKEN_HINT.set(format!(
                    "hint: no token was given (--token, KILN_TOKEN or {}), and the admin token                      {} could not be read; on the server machine, name kiln's data directory                      with --data-dir DIR or KILN_DATA_DIR=DIR (as given to kiln up)",
                    config_path(&env).map_or("config.toml".into(), |p| p.display().to_string()),
                    path.display()
                ));
            }
            token
        }
        None => {
            let _ = TOKEN_HINT.set(format!(
                "hint: no token was given: set --token or KILN_TOKEN (the admin token is read                  from --data-dir / KILN_DATA_DIR only for a server on this machine, and {url}                  is not)"
            ));
            None
        }
    };
    Ok(Remote {
        url,
        token: token.map(Secret::new),
    })
}

/// Whether colour may be used on a terminal: not when `NO_COLOR` is set (no-color.org).
pub(crate) fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dir = match env("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME")?).join(".config"),
    };
    Some(dir.join("kiln").join("config.toml"))
}

fn read_config(path: &Path) -> Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    toml::from_str(&text)
        .map_err(|err| ConfigError(format!("{}: {}", path.display(), err.message())).into())
}

/// The admin token the server keeps in its data directory (mode 0600, so only for root or the
/// server's user). Unreadable means "not this machine's admin": carry on without a token.
fn read_admin_token(path: &Path) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?.trim().to_string();
    tracing::debug!("using the admin token from {}", path.display());
    (!token.is_empty()).then_some(token)
}

/// Whether `url` names this machine, so the server's admin token on disk may be for it.
fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(flags: &ServerArgs, vars: &[(&str, &str)]) -> Result<Remote> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(flags, &|name| vars.get(name).cloned())
    }

    fn token(remote: &Remote) -> Option<&str> {
        remote.token.as_ref().map(|t| t.expose().as_str())
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let home = tempfile::tempdir().unwrap();
        let xdg = home.path().to_str().unwrap();
        let empty_data = home.path().join("data");
        let data = empty_data.to_str().unwrap();
        std::fs::create_dir_all(home.path().join("kiln")).unwrap();
        let base = [("XDG_CONFIG_HOME", xdg), ("KILN_DATA_DIR", data)];

        let remote = resolve_with(&ServerArgs::default(), &base).unwrap();
        assert_eq!((remote.url.as_str(), token(&remote)), (DEFAULT_URL, None));

        let file = home.path().join("kiln/config.toml");
        std::fs::write(&file, "url = \"http://file:1\"\ntoken = \"from-file\"\n").unwrap();
        let remote = resolve_with(&ServerArgs::default(), &base).unwrap();
        assert_eq!(
            (remote.url.as_str(), token(&remote)),
            ("http://file:1", Some("from-file"))
        );

        let with_env = [
            base[0],
            base[1],
            ("KILN_URL", "http://env:2"),
            ("KILN_TOKEN", "from-env"),
        ];
        let remote = resolve_with(&ServerArgs::default(), &with_env).unwrap();
        assert_eq!(
            (remote.url.as_str(), token(&remote)),
            ("http://env:2", Some("from-env"))
        );

        let flags = ServerArgs {
            url: Some("http://flag:3".into()),
            token: Some("from-flag".into()),
            data_dir: None,
        };
        let remote = resolve_with(&flags, &with_env).unwrap();
        assert_eq!(
            (remote.url.as_str(), token(&remote)),
            ("http://flag:3", Some("from-flag"))
        );
        assert_eq!(format!("{remote:?}").matches("from-flag").count(), 0);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".config/kiln")).unwrap();
        let file = home.path().join(".config/kiln/config.toml");
        std::fs::write(&file, "tokn = \"x\"\n").unwrap();
        let err = resolve_with(
            &ServerArgs::default(),
            &[("HOME", home.path().to_str().unwrap())],
        )
        .unwrap_err();
        assert!(err.is::<ConfigError>());
        let text = err.to_string();
        assert!(
            text.contains("tokn") && text.contains("config.toml"),
            "{text}"
        );
    }

    #[test]
    fn the_admin_token_on_disk_is_used_only_for_a_local_server() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("admin.token"), "admin-secret\n").unwrap();
        let dir = data.path().to_str().unwrap();
        for (url, expected) in [
            ("http://127.0.0.1:7800", Some("admin-secret")),
            ("http://localhost:9", Some("admin-secret")),
            ("http://[::1]:9/", Some("admin-secret")),
            ("https://kiln.example.com", None),
            ("http://127.example.com", None),
        ] {
            let vars = [("KILN_DATA_DIR", dir), ("KILN_URL", url)];
            let remote = resolve_with(&ServerArgs::default(), &vars).unwrap();
            assert_eq!(token(&remote), expected, "{url}");
        }
    }
}
