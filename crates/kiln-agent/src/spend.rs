//! What model requests cost and when a prompt must stop spending: the price table, the caps per
//! prompt and per session, and the [`LimitHit`] that ends a run. Budgets per user and repo are
//! the engine's (they live in the control database); it reports them as a `LimitHit` too.

use kiln_protocol::api::Usage;

/// The price of one model, in US dollars per million tokens (`[[prices]]` in kiln.toml).
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// The model name as configured (the part of `KILN_MODEL` after the provider), or a prefix
    /// ending in `*` (`claude-sonnet-*`).
    pub model: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    /// Default: the input price × 0.1 (what Anthropic charges for cache reads).
    pub cache_read_usd_per_mtok: Option<f64>,
    /// Default: the input price × 1.25 (Anthropic's 5-minute cache writes).
    pub cache_write_usd_per_mtok: Option<f64>,
}

/// Cache reads cost this share of the input price unless the price says otherwise.
pub const CACHE_READ_FACTOR: f64 = 0.1;
/// Cache writes cost this share of the input price unless the price says otherwise.
pub const CACHE_WRITE_FACTOR: f64 = 1.25;

impl Price {
    /// Dollars for one response's usage. Cached tokens are priced apart from the rest of the
    /// prompt (`input_tokens` includes them).
    pub fn cost(&self, usage: &kiln_model::Usage) -> f64 {
        let input = self.input_usd_per_mtok;
        let read = self
            .cache_read_usd_per_mtok
            .unwrap_or(input * CACHE_READ_FACTOR);
        let write = self
            .cache_write_usd_per_mtok
            .unwrap_or(input * CACHE_WRITE_FACTOR);
        (usage.uncached_input_tokens() as f64 * input
            + usage.cache_read_tokens as f64 * read
            + usage.cache_write_tokens as f64 * write
            + usage.output_tokens as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }
}

/// The server's price table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(pub Vec<Price>);

impl Prices {
    /// The price of `model`: an exact match first, else the longest `*` prefix that matches.
    pub fn find(&self, model: &str) -> Option<&Price> {
        self.0.iter().find(|p| p.model == model).or_else(|| {
            self.0
                .iter()
                .filter_map(|p| {
                    let prefix = p.model.strip_suffix('*')?;
                    model.starts_with(prefix).then_some((prefix.len(), p))
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, p)| p)
        })
    }

    /// One response's usage as the protocol reports it, its cost filled in when `model` has a
    /// price.
    pub fn usage(&self, model: &str, usage: &kiln_model::Usage) -> Usage {
        Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_usd: self.find(model).map(|p| p.cost(usage)),
        }
    }
}

/// A cap or budget that was reached, as the `limit_reached` event tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHit {
    /// The kiln.toml `[limits]` key.
    pub limit: &'static str,
    pub value: f64,
    pub spent: f64,
    /// What happened and how to go on.
    pub message: String,
}

impl LimitHit {
    /// Whether the prompt ends as `token_limit` (else `cost_limit`).
    pub fn is_tokens(&self) -> bool {
        matches!(self.limit, "max_tokens" | "max_tokens_per_session")
    }
}

/// Bounds on the work one prompt (and one session) may cause.
#[derive(Debug, Clone, Copy)]
pub struct PromptLimits {
    /// Model requests per prompt.
    pub max_turns: u32,
    /// Input plus output tokens per prompt, summed over its turns.
    pub max_tokens: u64,
    /// Input plus output tokens per session, summed over its prompts; `None`: no cap.
    pub max_tokens_per_session: Option<u64>,
    /// Dollars per prompt by the price table; `None`: no cap.
    pub max_cost_usd_per_prompt: Option<f64>,
    /// Dollars per session by the price table; `None`: no cap.
    pub max_cost_usd_per_session: Option<f64>,
    /// The model's context window in tokens: a conversation estimated past
    /// [`COMPACT_AT`] of it is compacted before the next request.
    pub context_tokens: u64,
}

/// The share of the context window at which a conversation is compacted.
pub const COMPACT_AT: f64 = 0.8;

impl Default for PromptLimits {
    fn default() -> Self {
        PromptLimits {
            max_turns: 50,
            max_tokens: 2_000_000,
            max_tokens_per_session: None,
            max_cost_usd_per_prompt: None,
            max_cost_usd_per_session: None,
            context_tokens: 200_000,
        }
    }
}

impl PromptLimits {
    /// The first cap `prompt` (this prompt's sum) or `session` (the session's, this prompt
    /// included) has reached.
    pub fn check(&self, prompt: &Usage, session: &Usage) -> Option<LimitHit> {
        let dollars = |limit: &'static str, value: f64, spent: f64, whose: &str| LimitHit {
            limit,
            value,
            spent,
            message: format!(
                "this {whose} has spent ${spent:.4} of its ${value:.4} cap ({limit} in kiln.toml \
                 [limits]); the run stopped here and the conversation is kept: ask an admin to \
                 raise {limit} to go on"
            ),
        };
        let tokens = |limit: &'static str, value: u64, spent: u64, whose: &str| LimitHit {
            limit,
            value: value as f64,
            spent: spent as f64,
            message: format!(
                "this {whose} has used {spent} of its {value} tokens ({limit} in kiln.toml \
                 [limits]); the run stopped here and the conversation is kept: ask an admin to \
                 raise {limit} to go on"
            ),
        };
        if let Some(cap) = self.max_cost_usd_per_prompt
            && prompt.cost() >= cap
        {
            return Some(dollars(
                "max_cost_usd_per_prompt",
                cap,
                prompt.cost(),
                "prompt",
            ));
        }
        if let Some(cap) = self.max_cost_usd_per_session
            && session.cost() >= cap
        {
            return Some(dollars(
                "max_cost_usd_per_session",
                cap,
                session.cost(),
                "session",
            ));
        }
        if prompt.tokens() > self.max_tokens {
            return Some(tokens(
                "max_tokens",
                self.max_tokens,
                prompt.tokens(),
                "prompt",
            ));
        }
        if let Some(cap) = self.max_tokens_per_session
            && session.tokens() >= cap
        {
            return Some(tokens(
                "max_tokens_per_session",
                cap,
                session.tokens(),
                "session",
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(model: &str, input: f64) -> Price {
        Price {
            model: model.into(),
            input_usd_per_mtok: input,
            output_usd_per_mtok: input * 5.0,
            cache_read_usd_per_mtok: None,
            cache_write_usd_per_mtok: None,
        }
    }

    #[test]
    fn exact_match_wins_then_the_longest_prefix() {
        let prices = Prices(vec![
            price("claude-*", 1.0),
            price("claude-sonnet-*", 3.0),
            price("claude-sonnet-4-5", 4.0),
        ]);
        assert_eq!(
            prices.find("claude-sonnet-4-5").unwrap().input_usd_per_mtok,
            4.0
        );
        assert_eq!(
            prices.find("claude-sonnet-4").unwrap().input_usd_per_mtok,
            3.0
        );
        assert_eq!(prices.find("claude-haiku").unwrap().input_usd_per_mtok, 1.0);
        assert!(prices.find("gpt-4.1").is_none());
    }

    #[test]
    fn cached_tokens_are_priced_apart() {
        let usage = kiln_model::Usage {
            input_tokens: 1_000_000 + 2_000_000 + 400_000,
            output_tokens: 100_000,
            cache_read_tokens: 2_000_000,
            cache_write_tokens: 400_000,
        };
        // 1 M uncached × $3 + 2 M reads × $0.30 + 0.4 M writes × $3.75 + 0.1 M out × $15.
        let cost = price("m", 3.0).cost(&usage);
        assert!((cost - (3.0 + 0.6 + 1.5 + 1.5)).abs() < 1e-9, "{cost}");
        let explicit = Price {
            cache_read_usd_per_mtok: Some(0.0),
            cache_write_usd_per_mtok: Some(0.0),
            ..price("m", 3.0)
        };
        assert!((explicit.cost(&usage) - 4.5).abs() < 1e-9);
    }

    #[test]
    fn caps_name_their_key() {
        let limits = PromptLimits {
            max_cost_usd_per_prompt: Some(0.5),
            max_cost_usd_per_session: Some(2.0),
            max_tokens_per_session: Some(1000),
            ..PromptLimits::default()
        };
        let spent = |cost: f64, tokens: u64| Usage {
            input_tokens: tokens,
            cost_usd: Some(cost),
            ..Usage::default()
        };
        assert_eq!(limits.check(&spent(0.1, 10), &spent(0.1, 10)), None);
        let hit = limits.check(&spent(0.5, 10), &spent(0.5, 10)).unwrap();
        assert_eq!(hit.limit, "max_cost_usd_per_prompt");
        assert!(
            hit.message.contains("max_cost_usd_per_prompt"),
            "{}",
            hit.message
        );
        let hit = limits.check(&spent(0.1, 10), &spent(2.1, 10)).unwrap();
        assert_eq!(
            (hit.limit, hit.value, hit.spent),
            ("max_cost_usd_per_session", 2.0, 2.1)
        );
        let hit = limits.check(&spent(0.1, 10), &spent(0.1, 1000)).unwrap();
        assert!(hit.is_tokens());
    }
}
