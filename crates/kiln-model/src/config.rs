//! Which model to talk to and how: resolved once from the SDK-style environment variables (plus an
//! override from the config file or flags) into a validated [`ModelConfig`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kiln_core::Secret;

/// The wire format to speak. OpenAI also covers compatible servers (vLLM, Ollama, llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Anthropic,
    OpenAi,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::OpenAi => "https://api.openai.com/v1",
        }
    }

    /// The variable holding this provider's API key, named in error messages.
    pub fn api_key_var(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
            ProviderKind::OpenAi => "OPENAI_API_KEY",
        }
    }

    fn base_url_var(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "ANTHROPIC_BASE_URL",
            ProviderKind::OpenAi => "OPENAI_BASE_URL",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "anthropic" => Ok(ProviderKind::Anthropic),
            "openai" => Ok(ProviderKind::OpenAi),
            other => Err(ConfigError::UnknownProvider {
                provider: other.to_string(),
            }),
        }
    }
}

/// How [`crate::ModelClient::stream`] retries failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// The first backoff; doubles on each retry.
    pub base_delay: Duration,
    /// The cap on the computed backoff (a server's `retry-after` may ask for more, up to 60 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub provider: ProviderKind,
    /// The provider's model id, e.g. `claude-sonnet-4-5`, `gpt-4.1`, `meta-llama/Llama-3`.
    pub model: String,
    /// `None` is allowed for OpenAI-compatible local servers that take no key.
    pub api_key: Option<Secret<String>>,
    /// Without a trailing slash. Anthropic: the host (`/v1/messages` is appended); OpenAI: up to
    /// and including `/v1` (`/chat/completions` is appended), as in the official SDKs.
    pub base_url: String,
    /// Per response, unless the request overrides it.
    pub max_tokens: u32,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// The longest silence tolerated while waiting for response headers or between stream chunks.
    pub idle_timeout: Duration,
}

impl ModelConfig {
    /// A config with the provider's default base URL, no key and default limits.
    pub fn new(provider: ProviderKind, model: impl Into<String>) -> ModelConfig {
        ModelConfig {
            provider,
            model: model.into(),
            api_key: None,
            base_url: provider.default_base_url().to_string(),
            max_tokens: 8192,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }

    /// Resolves from a lookup function (so tests do not touch the process env) following the SDK
    /// conventions: `KILN_MODEL=provider/model` (the model part may contain `/`),
    /// `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_BASE_URL`.
    /// `model_override` (from the config file or flags) wins over `KILN_MODEL`. Empty values count
    /// as unset. `Ok(None)` when no model is configured at all; an error naming what to set when
    /// half-configured. An OpenAI key is only required for the default (official) base URL.
    pub fn resolve(
        model_override: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ModelConfig>, ConfigError> {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let spec = match model_override.map(str::trim).filter(|s| !s.is_empty()) {
            Some(spec) => spec.to_string(),
            None => match get("KILN_MODEL") {
                Some(spec) => spec,
                None => return Ok(None),
            },
        };
        let (provider, model) = spec
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            .ok_or_else(|| ConfigError::BadModel {
                value: spec.clone(),
            })?;
        let provider: ProviderKind = provider.parse()?;
        let mut config = ModelConfig::new(provider, model);

        if let Some(url) = get(provider.base_url_var()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::BadBaseUrl {
                    var: provider.base_url_var(),
                    value: url,
                });
            }
            config.base_url = url.trim_end_matches('/').to_string();
        }
        config.api_key = get(provider.api_key_var()).map(Secret::new);
        let key_required = match provider {
            ProviderKind::Anthropic => true,
            ProviderKind::OpenAi => config.base_url == provider.default_base_url(),
        };
        if key_required && config.api_key.is_none() {
            return Err(ConfigError::MissingApiKey {
                model: config.display_name(),
                var: provider.api_key_var(),
            });
        }
        Ok(Some(config))
    }

    /// `provider/model`, the same form `KILN_MODEL` takes.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// Why the model configuration cannot be used; each message says what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "model {value:?} is not of the form provider/model; set KILN_MODEL (or the model setting) \
         to e.g. anthropic/claude-sonnet-4-5 or openai/gpt-4.1"
    )]
    BadModel { value: String },
    #[error("unknown model provider {provider:?}; use anthropic/<model> or openai/<model>")]
    UnknownProvider { provider: String },
    #[error("model {model} needs an API key; set {var}")]
    MissingApiKey { model: String, var: &'static str },
    #[error("{var}={value:?} is not an http:// or https:// URL; fix or unset it")]
    BadBaseUrl { var: &'static str, value: String },
}
