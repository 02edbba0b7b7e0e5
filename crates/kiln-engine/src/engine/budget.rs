//! Daily budgets: the dollars one user, and one repo, may spend on model requests in a UTC day
//! (`[limits] daily_budget_usd_per_user`, `daily_budget_usd_per_repo`). What was spent is kept
//! in `control.db`, added to as each response's usage is recorded; a prompt is refused at the
//! engine's enqueue while either is used up, and a running prompt that uses one up ends like a
//! cap.

use super::Inner;
use crate::{Error, Result};
use kiln_agent::LimitHit;
use kiln_core::UserId;
use kiln_store::DailySpend;
use std::sync::Arc;
use std::time::Duration;

/// Daily budgets in US dollars; `None`: no budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budgets {
    pub daily_usd_per_user: Option<f64>,
    pub daily_usd_per_repo: Option<f64>,
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day of `ms` (Unix milliseconds) as `YYYY-MM-DD`.
pub(crate) fn utc_day(ms: i64) -> String {
    // Howard Hinnant's days-to-civil: proleptic Gregorian, exact for every i64 day count here.
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// How long until the next UTC midnight after `ms`.
fn until_midnight(ms: i64) -> Duration {
    Duration::from_millis((DAY_MS - ms.rem_euclid(DAY_MS)) as u64)
}

impl Budgets {
    /// The budget `spent` has used up at `now_ms`, with a message naming it, what was spent
    /// and when it resets.
    pub(crate) fn over(&self, spent: &DailySpend, now_ms: i64) -> Option<LimitHit> {
        let resets = format!(
            "it resets at 00:00 UTC, in {}",
            kiln_core::human_duration(until_midnight(now_ms))
        );
        let hit = |limit: &'static str, value: f64, spent: f64, whose: &str| LimitHit {
            limit,
            value,
            spent,
            message: format!(
                "{whose} spent ${spent:.2} today of the daily budget of ${value:.2} \
                 ({limit} in kiln.toml [limits]); {resets}, or an admin can raise {limit}"
            ),
        };
        if let Some(value) = self.daily_usd_per_user
            && spent.user_usd >= value
        {
            return Some(hit(
                "daily_budget_usd_per_user",
                value,
                spent.user_usd,
                "you have",
            ));
        }
        if let Some(value) = self.daily_usd_per_repo
            && spent.repo_usd >= value
        {
            return Some(hit(
                "daily_budget_usd_per_repo",
                value,
                spent.repo_usd,
                "this repo has",
            ));
        }
        None
    }

    fn any(&self) -> bool {
        self.daily_usd_per_user.is_some() || self.daily_usd_per_repo.is_some()
    }
}

/// The daily budget `user` or `repo` has used up today, if any.
pub(crate) async fn used_up(
    inner: &Arc<Inner>,
    user: &UserId,
    repo: &str,
) -> Result<Option<LimitHit>> {
    let budgets = inner.config.budgets;
    if !budgets.any() {
        return Ok(None);
    }
    let now = kiln_core::now_ms();
    let spent = inner.store.daily_spend(&utc_day(now), user, repo).await?;
    Ok(budgets.over(&spent, now))
}

/// Refuses a new prompt by `user` on `repo` while a daily budget is used up.
pub(crate) async fn admit(inner: &Arc<Inner>, user: &UserId, repo: &str) -> Result<()> {
    match used_up(inner, user, repo).await? {
        Some(hit) => Err(Error::LimitReached(hit.message)),
        None => Ok(()),
    }
}

/// Adds a response's cost to today's spend of `user` and `repo`; the budget it used up, if any.
pub(crate) async fn record(
    inner: &Arc<Inner>,
    user: &UserId,
    repo: &str,
    cost_usd: f64,
) -> Result<Option<LimitHit>> {
    if cost_usd <= 0.0 {
        return Ok(None);
    }
    let now = kiln_core::now_ms();
    let spent = inner
        .store
        .add_daily_spend(&utc_day(now), user, repo, cost_usd)
        .await?;
    Ok(inner.config.budgets.over(&spent, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(1_798_761_599_999), "2026-12-31");
        assert_eq!(utc_day(1_798_761_600_000), "2027-01-01");
        assert_eq!(until_midnight(1_798_761_599_000), Duration::from_secs(1));
    }

    #[test]
    fn a_used_up_budget_says_when_it_resets() {
        let budgets = Budgets {
            daily_usd_per_user: Some(1.0),
            daily_usd_per_repo: Some(5.0),
        };
        // 2026-12-02 20:48 UTC: 3 h 12 min to midnight.
        let now = 1_796_244_480_000;
        assert_eq!(utc_day(now), "2026-12-02");
        let under = DailySpend {
            user_usd: 0.5,
            repo_usd: 4.0,
        };
        assert_eq!(budgets.over(&under, now), None);
        let hit = budgets
            .over(
                &DailySpend {
                    user_usd: 1.0,
                    repo_usd: 0.0,
                },
                now,
            )
            .unwrap();
        assert_eq!(hit.limit, "daily_budget_usd_per_user");
        assert!(
            hit.message.contains("$1.00")
                && hit.message.contains("resets at 00:00 UTC, in 3 h 12 min"),
            "{}",
            hit.message
        );
        let hit = budgets
            .over(
                &DailySpend {
                    user_usd: 0.0,
                    repo_usd: 6.0,
                },
                now,
            )
            .unwrap();
        assert_eq!(hit.limit, "daily_budget_usd_per_repo");
    }
}
