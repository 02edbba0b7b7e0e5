//! `ModelConfig::resolve`: the SDK-style variables, the override, and the messages a half-done
//! setup gets.

use std::collections::HashMap;

use kiln_model::{ConfigError, ModelConfig, ProviderKind};

fn resolve(
    model_override: Option<&str>,
    vars: &[(&str, &str)],
) -> Result<Option<ModelConfig>, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ModelConfig::resolve(model_override, |name| vars.get(name).cloned())
}

#[test]
fn nothing_configured_is_none() {
    assert!(resolve(None, &[]).unwrap().is_none());
    assert!(
        resolve(
            None,
            &[("ANTHROPIC_API_KEY", "sk-ant"), ("KILN_MODEL", " ")]
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn anthropic_from_env() {
    let config = resolve(
        None,
        &[
            ("KILN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("ANTHROPIC_API_KEY", "sk-ant-1"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(config.provider, ProviderKind::Anthropic);
    assert_eq!(config.model, "claude-sonnet-4-5");
    assert_eq!(config.display_name(), "anthropic/claude-sonnet-4-5");
    assert_eq!(config.base_url, "https://api.anthropic.com");
    assert_eq!(config.api_key.as_ref().unwrap().expose(), "sk-ant-1");
    assert_eq!(config.max_tokens, 8192);
    assert_eq!(config.retry.max_retries, 4);
    assert!(
        !format!("{config:?}").contains("sk-ant-1"),
        "the key never shows in Debug"
    );
}

#[test]
fn openai_model_with_slashes_and_a_local_base_url_without_key() {
    let config = resolve(
        None,
        &[
            ("KILN_MODEL", "openai/meta-llama/Llama-3.1-8B"),
            ("OPENAI_BASE_URL", "http://localhost:8000/v1/"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(config.provider, ProviderKind::OpenAi);
    assert_eq!(config.model, "meta-llama/Llama-3.1-8B");
    assert_eq!(config.base_url, "http://localhost:8000/v1");
    assert!(config.api_key.is_none());
}

#[test]
fn the_override_wins_over_kiln_model() {
    let vars = [
        ("KILN_MODEL", "anthropic/claude-sonnet-4-5"),
        ("OPENAI_API_KEY", "sk-oa"),
    ];
    let config = resolve(Some("openai/gpt-4.1"), &vars).unwrap().unwrap();
    assert_eq!(config.display_name(), "openai/gpt-4.1");
    assert_eq!(config.base_url, "https://api.openai.com/v1");
}

#[test]
fn half_configured_says_what_to_set() {
    let error = resolve(
        None,
        &[
            ("KILN_MODEL", "anthropic/claude-sonnet-4-5"),
            ("OPENAI_API_KEY", "sk"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        error,
        ConfigError::MissingApiKey {
            model: "anthropic/claude-sonnet-4-5".into(),
            var: "ANTHROPIC_API_KEY"
        }
    );
    assert_eq!(
        error.to_string(),
        "model anthropic/claude-sonnet-4-5 needs an API key; set ANTHROPIC_API_KEY"
    );

    let error = resolve(Some("openai/gpt-4.1"), &[]).unwrap_err();
    assert!(error.to_string().ends_with("set OPENAI_API_KEY"), "{error}");

    let error = resolve(None, &[("KILN_MODEL", "claude-sonnet-4-5")]).unwrap_err();
    assert!(matches!(error, ConfigError::BadModel { .. }));
    assert!(
        error.to_string().contains("anthropic/claude-sonnet-4-5"),
        "{error}"
    );

    let error = resolve(Some("gemini/pro"), &[]).unwrap_err();
    assert_eq!(
        error,
        ConfigError::UnknownProvider {
            provider: "gemini".into()
        }
    );

    for bad in ["anthropic/", "/claude"] {
        assert!(
            matches!(resolve(Some(bad), &[]), Err(ConfigError::BadModel { .. })),
            "{bad}"
        );
    }

    let error = resolve(
        Some("anthropic/x"),
        &[
            ("ANTHROPIC_API_KEY", "k"),
            ("ANTHROPIC_BASE_URL", "api.example"),
        ],
    )
    .unwrap_err();
    assert!(error.to_string().contains("ANTHROPIC_BASE_URL"), "{error}");
}
