// The sessions list: mine, shared with me, and (admins) all; search and filter; refreshed
// while the page is open, so it is live without a reload.
import { useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import type { Me, SessionDetail, SessionSummary } from "../api/types";
import { ago, message, usePoll, useTitle } from "../lib/util";

const DETAILS = 30;

function Activity({ detail }: { detail?: SessionDetail }) {
  if (!detail) return null;
  const last = detail.prompts.length ? detail.prompts[detail.prompts.length - 1] : undefined;
  return (
    <>
      {last && <span>last prompt {ago(last.created_at_ms)} by {last.author.name}</span>}
      <span data-testid="participants">with {detail.participants.map((p) => p.user.name).join(", ")}</span>
    </>
  );
}

type Filter = "all-mine" | "mine" | "shared" | "everyone";

export function Sessions({ me }: { me: Me }) {
  useTitle("Sessions");
  const [sessions, setSessions] = useState<SessionSummary[] | null>(null);
  const [error, setError] = useState("");
  const [filter, setFilter] = useState<Filter>("all-mine");
  const [search, setSearch] = useState("");
  const [archived, setArchived] = useState(false);
  usePoll(
    () => {
      api.sessions(filter === "everyone").then(
        (list) => {
          setSessions(list);
          setError("");
        },
        (e: unknown) => setError(message(e)),
      );
    },
    4000,
    [filter],
  );
  // Participants and last activity come with each session's detail: fetched for the sessions
  // on screen (at most DETAILS of them), less often than the list.
  const [details, setDetails] = useState<Map<string, SessionDetail>>(new Map());
  const visible = useRef<string[]>([]);
  usePoll(
    () => {
      for (const id of visible.current.slice(0, DETAILS)) {
        api.session(id).then(
          (d) => setDetails((m) => new Map(m).set(id, d)),
          () => undefined,
        );
      }
    },
    20_000,
    [sessions === null],
  );
  const needle = search.trim().toLowerCase();
  const shown = (sessions ?? [])
    .filter((s) => archived || !s.archived)
    .filter((s) => {
      if (filter === "mine") return s.created_by.id === me.user.id;
      if (filter === "shared") return s.created_by.id !== me.user.id && s.role != null;
      return true;
    })
    .filter(
      (s) =>
        !needle ||
        s.title.toLowerCase().includes(needle) ||
        s.repo.toLowerCase().includes(needle) ||
        s.created_by.name.toLowerCase().includes(needle),
    )
    .sort((a, b) => b.created_at_ms - a.created_at_ms);
  visible.current = shown.map((s) => s.id);
  return (
    <section>
      <div class="row between">
        <h1>Sessions</h1>
        <a class="button" href="/new">New session</a>
      </div>
      <div class="toolbar" role="group" aria-label="Filter sessions">
        <label class="grow">
          <span class="sr-only">Search sessions</span>
          <input type="search" placeholder="Search title, repo, person" value={search}
            onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          <span class="sr-only">Show</span>
          <select value={filter} onChange={(e) => setFilter((e.target as HTMLSelectElement).value as Filter)}>
            <option value="all-mine">Mine and shared with me</option>
            <option value="mine">Started by me</option>
            <option value="shared">Shared with me</option>
            {me.user.admin && <option value="everyone">Everyone's (admin)</option>}
          </select>
        </label>
        <label class="check">
          <input type="checkbox" checked={archived} onChange={(e) => setArchived((e.target as HTMLInputElement).checked)} />
          Archived
        </label>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {sessions === null ? (
        <p class="muted">Loading…</p>
      ) : shown.length === 0 ? (
        <p class="muted">No sessions here yet. <a href="/new">Start one</a>.</p>
      ) : (
        <ul class="cards" data-testid="sessions">
          {shown.map((s) => (
            <li key={s.id} class="card">
              <a class="title" href={`/sessions/${encodeURIComponent(s.id)}`}>{s.title || "(untitled)"}</a>
              <div class="meta">
                <span class={`badge state-${s.state}`}>{s.state}</span>
                <span>{s.repo}</span>
                <span>by {s.created_by.name}</span>
                {s.role && <span>you: {s.role}</span>}
                {s.archived && <span class="badge">archived</span>}
                {s.parent && <a class="badge" href={`/sessions/${encodeURIComponent(s.parent)}`} data-testid="sub-session">sub-session</a>}
                {s.pull_request && (
                  <a class={`badge pr-${s.pull_request.state}`} href={/^https?:\/\//.test(s.pull_request.url) ? s.pull_request.url : undefined} rel="noreferrer noopener">
                    PR #{s.pull_request.number} {s.pull_request.state}
                  </a>
                )}
                <span>started {ago(s.created_at_ms)}</span>
                <Activity detail={details.get(s.id)} />
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
