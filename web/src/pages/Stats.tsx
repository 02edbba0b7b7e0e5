// Whether the agents pay off (`GET /api/stats`, see docs/stats.md): sessions that ended in a
// merged PR first, then the other totals, per-day charts, and tables per repo and per user. The
// range and the repo filter are in the URL (`/stats?days=7&repo=web`), so a view can be shared.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api } from "../api/client";
import type { Percentiles, StatsReport, StatsRow } from "../api/types";
import { Chart, type Series } from "../components/Chart";
import { navigate } from "../lib/router";
import { message, usePoll, useTitle } from "../lib/util";

const RANGES = [7, 30, 90] as const;

function fromUrl(): { days: number; repo: string } {
  const q = new URLSearchParams(location.search);
  const days = Number(q.get("days"));
  return { days: (RANGES as readonly number[]).includes(days) ? days : 30, repo: q.get("repo") ?? "" };
}

const count = (n: number) => n.toLocaleString("en-US");
const percent = (r: number | null | undefined) => (r == null ? "–" : `${Math.round(r * 100)}%`);
const decimal = (r: number | null | undefined) => (r == null ? "–" : r.toFixed(1));
const usd = (n: number | null | undefined) =>
  n == null
    ? "–"
    : n > 0 && n < 0.01
      ? `$${n.toPrecision(2)}`
      : `$${n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

/** A duration in the unit that reads best: 850 ms, 4.2 s, 12 min, 3.5 h, 2.1 d. */
function duration(ms: number | null | undefined): string {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  return `${(ms / 86_400_000).toFixed(1)} d`;
}
const p50p95 = (p: Percentiles) => (p.n === 0 ? "–" : `${duration(p.p50)} / ${duration(p.p95)}`);

function Fact({ label, value, note, testId }: { label: string; value: string; note?: string; testId?: string }) {
  return (
    <div class="stat">
      <dt>{label}</dt>
      <dd data-testid={testId}>{value}</dd>
      {note && <dd class="muted small">{note}</dd>}
    </div>
  );
}

function Totals({ report }: { report: StatsReport }) {
  const t = report.totals;
  return (
    <>
      <div class="panel headline" data-testid="headline">
        <p class="big" data-testid="sessions-merged">{count(t.sessions_merged)}</p>
        <p>
          sessions ended in a merged pull request, of <strong>{count(t.sessions_started)}</strong> started:{" "}
          <strong data-testid="merge-rate">{percent(t.merge_rate)}</strong> merge rate
        </p>
      </div>
      <dl class="stats">
        <Fact label="Sessions started" value={count(t.sessions_started)} testId="sessions-started" />
        <Fact label="PRs opened" value={count(t.prs_opened)} />
        <Fact label="PRs merged" value={count(t.prs_merged)} />
        <Fact label="PRs closed unmerged" value={count(t.prs_closed)} />
        <Fact label="Approval rate" value={percent(t.approval_rate)} note="PRs with an approving review" />
        <Fact label="Revisions per PR" value={decimal(t.revisions_per_pr)} note="pushes after a review" />
        <Fact label="Time to merge" value={p50p95(t.time_to_merge_ms)} note="p50 / p95, PR opened → merged" />
        <Fact label="Time to first token" value={p50p95(t.time_to_first_token_ms)} note="p50 / p95, each prompt" />
        <Fact label="Sandbox ready" value={p50p95(t.start_sandbox_ms)} note="p50 / p95, session created → sandbox" />
        <Fact label="Checkout synced" value={p50p95(t.start_sync_ms)} note="p50 / p95, after the sandbox" />
        <Fact label="First model request" value={p50p95(t.start_first_model_request_ms)} note="p50 / p95, after the first prompt" />
        <Fact label="First model text" value={p50p95(t.start_model_ttft_ms)} note="p50 / p95, after the first request" />
        <Fact label="Warm pool hit rate" value={percent(t.pool_hit_rate)} />
        <Fact label="People prompting now" value={count(report.humans_prompting)} note="in the last 5 minutes" testId="humans-prompting" />
        <Fact label="Tokens" value={`${count(t.input_tokens)} in / ${count(t.output_tokens)} out`} />
        <Fact label="Cost" value={usd(t.cost_usd)} />
        <Fact label="Cost per merged PR" value={usd(t.cost_per_merged_pr_usd)} />
        <Fact label="Agent lines merged" value={count(t.agent_lines_merged)} />
      </dl>
    </>
  );
}

function Table({ title, keyName, rows, testId }: { title: string; keyName: string; rows: StatsRow[]; testId: string }) {
  return (
    <section class="panel">
      <h2 id={`${testId}-title`}>{title}</h2>
      {rows.length === 0 ? (
        <p class="muted">No sessions in this range.</p>
      ) : (
        <div class="table-scroll" role="region" aria-labelledby={`${testId}-title`} tabIndex={0}>
          <table data-testid={testId}>
            <thead>
              <tr>
                <th scope="col">{keyName}</th>
                <th scope="col">Sessions</th>
                <th scope="col">Merged</th>
                <th scope="col">Merge rate</th>
                <th scope="col">PRs opened</th>
                <th scope="col">PRs merged</th>
                <th scope="col">Time to merge p50</th>
                <th scope="col">Tokens in / out</th>
                <th scope="col">Cost</th>
                <th scope="col">Per merged PR</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.key}>
                  <th scope="row">{r.key}</th>
                  <td>{count(r.sessions_started)}</td>
                  <td>{count(r.sessions_merged)}</td>
                  <td>{percent(r.merge_rate)}</td>
                  <td>{count(r.prs_opened)}</td>
                  <td>{count(r.prs_merged)}</td>
                  <td>{duration(r.time_to_merge_ms.p50)}</td>
                  <td>{count(r.input_tokens)} / {count(r.output_tokens)}</td>
                  <td>{usd(r.cost_usd)}</td>
                  <td>{usd(r.cost_per_merged_pr_usd)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

/** The busiest day of a series, in words. */
function busiest(days: string[], values: number[], format: (n: number) => string): string {
  let best = -1;
  values.forEach((v, i) => {
    if (v > 0 && (best < 0 || v > values[best])) best = i;
  });
  return best < 0 ? "none on any day" : `most on ${days[best]} (${format(values[best])})`;
}

function Charts({ report }: { report: StatsReport }) {
  const days = useMemo(() => report.by_day.map((d) => d.key), [report]);
  const sessions = useMemo<Series[]>(
    () => [
      { label: "Started", color: "--accent", values: report.by_day.map((d) => d.sessions_started) },
      { label: "Merged", color: "--good", values: report.by_day.map((d) => d.sessions_merged) },
    ],
    [report],
  );
  const cost = useMemo<Series[]>(
    () => [{ label: "Cost", color: "--accent", values: report.by_day.map((d) => d.cost_usd) }],
    [report],
  );
  const range = `${report.from} to ${report.to} (UTC)`;
  const t = report.totals;
  return (
    <div class="grid">
      <Chart
        title="Sessions per day"
        testId="chart-sessions"
        days={days}
        series={sessions}
        format={count}
        whole
        caption={`Sessions started and sessions that ended in a merged PR, per day, ${range}: ` +
          `${count(t.sessions_started)} started, ${busiest(days, sessions[0].values, count)}; ` +
          `${count(t.sessions_merged)} merged, ${busiest(days, sessions[1].values, count)}.`}
      />
      <Chart
        title="Cost per day"
        testId="chart-cost"
        days={days}
        series={cost}
        format={usd}
        caption={`Model cost per day, ${range}: ${usd(t.cost_usd)} in all, ${busiest(days, cost[0].values, usd)}.`}
      />
    </div>
  );
}

export function Stats() {
  useTitle("Stats");
  const [{ days, repo }, setQuery] = useState(fromUrl);
  const [report, setReport] = useState<StatsReport | null>(null);
  const [repos, setRepos] = useState<string[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    api.repos().then((list) => setRepos(list.map((r) => r.name)), () => undefined);
  }, []);
  usePoll(
    () => {
      api.stats(days, repo).then(
        (r) => {
          setReport(r);
          setError("");
        },
        (e: unknown) => setError(message(e)),
      );
    },
    60_000,
    [days, repo],
  );
  const choose = (next: { days: number; repo: string }) => {
    setQuery(next);
    const q = new URLSearchParams({ days: String(next.days) });
    if (next.repo) q.set("repo", next.repo);
    navigate(`/stats?${q}`, true);
  };
  // Repos that had sessions but are not (or no longer) in the repo list are offered too.
  const options = [...new Set([...repos, ...(report?.by_repo.map((r) => r.key) ?? []), ...(repo ? [repo] : [])])].sort();
  return (
    <section class="stats-page">
      <h1>Stats</h1>
      <div class="toolbar" role="group" aria-label="Range and repo">
        <label>
          <span class="sr-only">Range</span>
          <select data-testid="stats-range" value={String(days)}
            onChange={(e) => choose({ days: Number((e.target as HTMLSelectElement).value), repo })}>
            {RANGES.map((d) => <option key={d} value={String(d)}>Last {d} days</option>)}
          </select>
        </label>
        <label>
          <span class="sr-only">Repo</span>
          <select data-testid="stats-repo" value={repo}
            onChange={(e) => choose({ days, repo: (e.target as HTMLSelectElement).value })}>
            <option value="">All repos</option>
            {options.map((name) => <option key={name} value={name}>{name}</option>)}
          </select>
        </label>
        {report && <span class="muted small">{report.from} to {report.to}, UTC</span>}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {report === null ? (
        !error && <p class="muted">Loading…</p>
      ) : (
        <>
          <Totals report={report} />
          <Charts report={report} />
          <div class="grid">
            <Table title="Per repo" keyName="Repo" rows={report.by_repo} testId="stats-by-repo" />
            <Table title="Per person" keyName="Started by" rows={report.by_user} testId="stats-by-user" />
          </div>
        </>
      )}
    </section>
  );
}
