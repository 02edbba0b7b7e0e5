//! Summaries → the report: totals, per day, per repo, per user.

use crate::PROMPTING_WINDOW_MS;
use crate::fold::SessionSummary;
use kiln_protocol::api::{Percentiles, StartStats, StatsReport, StatsRow};
use std::collections::{BTreeMap, HashSet};
use time::{Date, OffsetDateTime};

/// The longest range one report covers, in days.
const MAX_DAYS: i64 = 366;

/// The days a report covers, both inclusive (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Date,
    pub to: Date,
}

impl Range {
    /// Reads `from` and `to` (`YYYY-MM-DD`, both optional): `to` defaults to today, `from` to
    /// `days - 1` (default 29) days before `to`. The error is a sentence for the caller.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        days: Option<u32>,
        now_ms: i64,
    ) -> Result<Range, String> {
        let parse = |name: &str, value: &str| {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            Date::parse(value, &format).map_err(|_| {
                format!(
                    "`{name}` must be a date written YYYY-MM-DD, such as 2026-01-31; got `{value}`."
                )
            })
        };
        let to = match to {
            Some(to) => parse("to", to)?,
            None => day_of(now_ms),
        };
        let from = match from {
            Some(from) => parse("from", from)?,
            None => match days {
                Some(days @ 1..) => to - time::Duration::days(i64::from(days) - 1),
                Some(0) => return Err("`days` must be at least 1.".into()),
                None => to - time::Duration::days(29),
            },
        };
        if from > to {
            return Err(format!("`from` ({from}) is after `to` ({to}); swap them."));
        }
        if (to - from).whole_days() >= MAX_DAYS {
            return Err(format!(
                "A report covers at most {MAX_DAYS} days; narrow `from`..`to` ({from}..{to})."
            ));
        }
        Ok(Range { from, to })
    }

    fn contains(&self, day: Date) -> bool {
        self.from <= day && day <= self.to
    }
}

/// The UTC day of a Unix time in milliseconds.
pub fn day_of(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(Date::MIN)
}

/// Which sessions a report counts, besides the range.
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    /// Only this repo.
    pub repo: Option<String>,
    /// Only sessions this user (name or id) created.
    pub user: Option<String>,
}

/// The report over `summaries` (the sessions the caller may see) at `now_ms`.
pub fn report<'a>(
    summaries: impl IntoIterator<Item = &'a SessionSummary>,
    range: Range,
    query: &StatsQuery,
    now_ms: i64,
) -> StatsReport {
    let mut totals = Acc::default();
    let mut days: BTreeMap<Date, Acc> = BTreeMap::new();
    let mut repos: BTreeMap<&'a str, Acc> = BTreeMap::new();
    let mut users: BTreeMap<&'a str, Acc> = BTreeMap::new();
    let mut prompting = HashSet::new();
    for s in summaries {
        if query.repo.as_deref().is_some_and(|r| r != s.repo)
            || query
                .user
                .as_deref()
                .is_some_and(|u| u != s.user_name && u != s.user_id)
        {
            continue;
        }
        for (user, at) in &s.last_prompt {
            if now_ms - at <= PROMPTING_WINDOW_MS {
                prompting.insert(user.as_str());
            }
        }
        let day = day_of(s.created_at_ms);
        if !range.contains(day) {
            continue;
        }
        totals.add(s);
        days.entry(day).or_default().add(s);
        repos.entry(&s.repo).or_default().add(s);
        users.entry(&s.user_name).or_default().add(s);
    }
    let mut by_day = Vec::new();
    let mut day = range.from;
    while day <= range.to {
        by_day.push(days.remove(&day).unwrap_or_default().row(day.to_string()));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    let ranked = |groups: BTreeMap<&'a str, Acc>| {
        let mut rows: Vec<StatsRow> = groups
            .into_iter()
            .map(|(key, acc)| acc.row(key.to_string()))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.sessions_started));
        rows
    };
    StatsReport {
        from: range.from.to_string(),
        to: range.to.to_string(),
        totals: totals.row(String::new()),
        by_day,
        by_repo: ranked(repos),
        by_user: ranked(users),
        humans_prompting: prompting.len() as u64,
    }
}

/// Sums over a group of sessions, samples kept for the percentiles.
#[derive(Debug, Default)]
struct Acc {
    sessions: u64,
    sessions_merged: u64,
    prs_opened: u64,
    prs_merged: u64,
    prs_closed: u64,
    prs_approved: u64,
    revisions: u64,
    time_to_merge: Vec<u64>,
    ttft: Vec<u64>,
    starts: Vec<kiln_protocol::api::StartPhases>,
    sandboxed: u64,
    pool_hits: u64,
    lines: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
}

impl Acc {
    fn add(&mut self, s: &SessionSummary) {
        self.sessions += 1;
        self.sessions_merged += u64::from(s.merged());
        self.prs_opened += s.prs_opened;
        self.prs_merged += s.prs_merged;
        self.prs_closed += s.prs_closed;
        self.prs_approved += s.prs_approved;
        self.revisions += s.revisions;
        self.time_to_merge.extend(&s.time_to_merge_ms);
        self.ttft.extend(&s.ttft_ms);
        if let Some(source) = &s.start.source {
            self.sandboxed += 1;
            self.pool_hits += u64::from(source == "pool");
        }
        self.starts.push(s.start.clone());
        self.lines += s.lines_added;
        self.input_tokens += s.input_tokens;
        self.output_tokens += s.output_tokens;
        self.cost += s.cost_usd;
    }

    fn row(self, key: String) -> StatsRow {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let starts = StartStats::of(&self.starts);
        StatsRow {
            key,
            sessions_started: self.sessions,
            sessions_merged: self.sessions_merged,
            merge_rate: ratio(self.sessions_merged, self.sessions),
            prs_opened: self.prs_opened,
            prs_merged: self.prs_merged,
            prs_closed: self.prs_closed,
            approval_rate: ratio(self.prs_approved, self.prs_opened),
            revisions_per_pr: ratio(self.revisions, self.prs_opened),
            time_to_merge_ms: Percentiles::of(self.time_to_merge),
            time_to_first_token_ms: Percentiles::of(self.ttft),
            start_sandbox_ms: starts.sandbox_ms,
            start_sync_ms: starts.sync_ms,
            start_first_model_request_ms: starts.first_model_request_ms,
            start_model_ttft_ms: starts.model_ttft_ms,
            pool_hit_rate: ratio(self.pool_hits, self.sandboxed),
            agent_lines_merged: self.lines,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd: self.cost,
            cost_per_merged_pr_usd: (self.prs_merged > 0)
                .then(|| self.cost / self.prs_merged as f64),
        }
    }
}
