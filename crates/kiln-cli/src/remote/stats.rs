//! `kiln stats`: whether the agents pay off (docs/stats.md).

use super::{config, connect, report, row, table};
use kiln_protocol::api::{Percentiles, StatsReport, StatsRow};
use std::process::ExitCode;

/// `kiln stats`
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    /// The last this many days, today included.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
    /// Only this repo's sessions.
    #[arg(long)]
    repo: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: config::ServerArgs,
}

pub(crate) async fn stats(args: StatsArgs) -> ExitCode {
    report(async {
        let client = connect(&args.server)?;
        let stats = client.stats(Some(args.days), args.repo.as_deref()).await?;
        if args.json {
            out!("{}", serde_json::to_string(&stats)?)?;
        } else {
            out_text!("{}", render(&stats))?;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
}

fn ms(p: &Percentiles) -> String {
    match (p.p50, p.p95) {
        (Some(p50), Some(p95)) => format!("{p50} / {p95} ms"),
        _ => "-".into(),
    }
}

fn render(s: &StatsReport) -> String {
    let t = &s.totals;
    let mut out = format!(
        "{} to {}: {} sessions, {} ended in a merged PR ({})\n",
        s.from,
        s.to,
        t.sessions_started,
        t.sessions_merged,
        rate(t.merge_rate)
    );
    out.push_str(&format!(
        "PRs: {} opened, {} merged, {} closed; approval {}; {} revisions per PR; time to merge p50/p95 {}\n",
        t.prs_opened,
        t.prs_merged,
        t.prs_closed,
        rate(t.approval_rate),
        t.revisions_per_pr.map_or("-".into(), |r| format!("{r:.1}")),
        ms(&t.time_to_merge_ms),
    ));
    out.push_str(&format!(
        "speed: first token p50/p95 {}; sandbox start {}; pool hits {}\n",
        ms(&t.time_to_first_token_ms),
        ms(&t.start_sandbox_ms),
        rate(t.pool_hit_rate)
    ));
    out.push_str(&format!(
        "spend: ${:.2} ({} tokens in, {} out), {} per merged PR; {} people prompting now\n",
        t.cost_usd,
        t.input_tokens,
        t.output_tokens,
        t.cost_per_merged_pr_usd
            .map_or("-".into(), |c| format!("${c:.2}")),
        s.humans_prompting
    ));
    let group = |title: &str, rows: &[StatsRow]| {
        let mut lines = vec![row([title, "SESSIONS", "MERGED", "RATE", "PRS", "COST"])];
        for r in rows.iter().filter(|r| r.sessions_started > 0) {
            lines.push(row([
                r.key.as_str(),
                &r.sessions_started.to_string(),
                &r.sessions_merged.to_string(),
                &rate(r.merge_rate),
                &r.prs_opened.to_string(),
                &format!("${:.2}", r.cost_usd),
            ]));
        }
        if lines.len() > 1 {
            table(&lines)
        } else {
            String::new()
        }
    };
    for (title, rows) in [
        ("DAY", &s.by_day),
        ("REPO", &s.by_repo),
        ("USER", &s.by_user),
    ] {
        let t = group(title, rows);
        if !t.is_empty() {
            out.push('\n');
            out.push_str(&t);
        }
    }
    out
}
