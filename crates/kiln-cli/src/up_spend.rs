//! The spend keys of kiln.toml (issue 15): `[[prices]]`, and in `[limits]` the cost and token
//! caps, the daily budgets and the context window; checked once at start-up and printed by
//! `kiln up --print-config`. See docs/spend.md.

use anyhow::{Context, ensure};
use kiln_engine::{Budgets, Price, Prices, PromptLimits};
use serde::Deserialize;

/// One `[[prices]]` entry, in US dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePrice {
    /// The model part of `KILN_MODEL` (`claude-sonnet-4-5`), or a prefix ending in `*`.
    model: String,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
    /// Default: input × 0.1.
    cache_read_usd_per_mtok: Option<f64>,
    /// Default: input × 1.25.
    cache_write_usd_per_mtok: Option<f64>,
}

/// The `[limits]` keys of this part.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SpendLimits {
    pub(crate) max_cost_usd_per_prompt: Option<f64>,
    pub(crate) max_cost_usd_per_session: Option<f64>,
    pub(crate) max_tokens_per_session: Option<u64>,
    pub(crate) daily_budget_usd_per_user: Option<f64>,
    pub(crate) daily_budget_usd_per_repo: Option<f64>,
    pub(crate) context_tokens: Option<u64>,
}

fn dollars(key: &str, value: Option<f64>) -> anyhow::Result<Option<f64>> {
    if let Some(v) = value {
        ensure!(
            v.is_finite() && v > 0.0,
            "[limits] {key} = {v} must be a positive number of US dollars (leave it out for no limit)"
        );
    }
    Ok(value)
}

/// `limits` with this part's keys set, the price table and the budgets.
pub(crate) fn resolve(
    mut limits: PromptLimits,
    file: SpendLimits,
    prices: Vec<FilePrice>,
) -> anyhow::Result<(PromptLimits, Prices, Budgets)> {
    limits.max_cost_usd_per_prompt =
        dollars("max_cost_usd_per_prompt", file.max_cost_usd_per_prompt)?;
    limits.max_cost_usd_per_session =
        dollars("max_cost_usd_per_session", file.max_cost_usd_per_session)?;
    limits.max_tokens_per_session = file.max_tokens_per_session;
    if let Some(tokens) = file.context_tokens {
        ensure!(
            tokens >= 1000,
            "[limits] context_tokens = {tokens} is too small: the model's context window is at least 1000 tokens"
        );
        limits.context_tokens = tokens;
    }
    let budgets = Budgets {
        daily_usd_per_user: dollars("daily_budget_usd_per_user", file.daily_budget_usd_per_user)?,
        daily_usd_per_repo: dollars("daily_budget_usd_per_repo", file.daily_budget_usd_per_repo)?,
    };
    let prices = prices
        .into_iter()
        .map(|p| {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            ensure!(
                !p.model.is_empty()
                    && ok(p.input_usd_per_mtok)
                    && ok(p.output_usd_per_mtok)
                    && p.cache_read_usd_per_mtok.is_none_or(ok)
                    && p.cache_write_usd_per_mtok.is_none_or(ok),
                "a model name and prices of 0 or more are needed"
            );
            Ok(Price {
                model: p.model,
                input_usd_per_mtok: p.input_usd_per_mtok,
                output_usd_per_mtok: p.output_usd_per_mtok,
                cache_read_usd_per_mtok: p.cache_read_usd_per_mtok,
                cache_write_usd_per_mtok: p.cache_write_usd_per_mtok,
            })
        })
        .enumerate()
        .map(|(i, p)| p.with_context(|| format!("in [[prices]] entry {}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((limits, Prices(prices), budgets))
}

/// The `[limits]` lines of `--print-config` for this part (after `max_tokens`); a key that is
/// not set is a comment.
pub(crate) fn print_limits(limits: &PromptLimits, budgets: &Budgets) {
    fn line(key: &str, value: Option<String>) {
        match value {
            Some(value) => println!("{key} = {value}"),
            None => println!("# {key}: none"),
        }
    }
    let text = |v: Option<f64>| v.map(|v| v.to_string());
    line(
        "max_tokens_per_session",
        limits.max_tokens_per_session.map(|v| v.to_string()),
    );
    line(
        "max_cost_usd_per_prompt",
        text(limits.max_cost_usd_per_prompt),
    );
    line(
        "max_cost_usd_per_session",
        text(limits.max_cost_usd_per_session),
    );
    line(
        "daily_budget_usd_per_user",
        text(budgets.daily_usd_per_user),
    );
    line(
        "daily_budget_usd_per_repo",
        text(budgets.daily_usd_per_repo),
    );
    line("context_tokens", Some(limits.context_tokens.to_string()));
}

/// The `[[prices]]` tables of `--print-config`.
pub(crate) fn print_prices(prices: &Prices) {
    // Six decimals: 3.0 × 0.1 prints as 0.3, not 0.30000000000000004.
    let round = |v: f64| (v * 1e6).round() / 1e6;
    for p in &prices.0 {
        println!("[[prices]]");
        println!("model = {:?}", p.model);
        println!("input_usd_per_mtok = {}", p.input_usd_per_mtok);
        println!("output_usd_per_mtok = {}", p.output_usd_per_mtok);
        println!(
            "cache_read_usd_per_mtok = {}",
            round(
                p.cache_read_usd_per_mtok
                    .unwrap_or(p.input_usd_per_mtok * kiln_engine::CACHE_READ_FACTOR)
            )
        );
        println!(
            "cache_write_usd_per_mtok = {}",
            round(
                p.cache_write_usd_per_mtok
                    .unwrap_or(p.input_usd_per_mtok * kiln_engine::CACHE_WRITE_FACTOR)
            )
        );
    }
}
