// Starting a session: pick a repo, write the first prompt. While the person types, the user
// socket's `typing` frame holds a warm sandbox for them (synced to the branch head), so the
// session starts warm; the page shows when one is held.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import { UserSocket } from "../api/socket";
import type { Repo } from "../api/types";
import { announce } from "../lib/announce";
import { navigate } from "../lib/router";
import { message, useTitle } from "../lib/util";

/** Typing frames go out at most this often; the server holds the sandbox a while longer. */
const TYPING_EVERY_MS = 2000;

export function NewSession() {
  useTitle("New session");
  const [repos, setRepos] = useState<Repo[] | null>(null);
  const [repo, setRepo] = useState(new URLSearchParams(location.search).get("repo") ?? "");
  const [search, setSearch] = useState("");
  const [prompt, setPrompt] = useState("");
  const [warm, setWarm] = useState<"cold" | "warming" | "warm" | "none">("cold");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const socket = useRef<UserSocket | null>(null);
  const lastTyping = useRef(0);
  const repoRef = useRef(repo);
  repoRef.current = repo;

  useEffect(() => {
    api.repos().then(
      (list) => {
        setRepos(list);
        if (!repoRef.current && list.length === 1) setRepo(list[0].name);
      },
      (e: unknown) => setError(message(e)),
    );
    socket.current = new UserSocket((frame) => {
      if (frame.type === "warm" && frame.repo === repoRef.current) {
        setWarm(frame.reserved ? "warm" : "none");
        if (frame.reserved) announce("A warm sandbox is ready for this session.");
      } else if (frame.type === "error") {
        setWarm("none");
      }
    });
    return () => socket.current?.close();
  }, []);

  useEffect(() => {
    setWarm("cold");
    lastTyping.current = 0;
  }, [repo]);

  const matching = useMemo(() => {
    const needle = search.trim().toLowerCase();
    return (repos ?? []).filter((r) => !needle || r.name.toLowerCase().includes(needle) || r.description.toLowerCase().includes(needle));
  }, [repos, search]);

  const typed = (text: string) => {
    setPrompt(text);
    const now = Date.now();
    if (repo && text.trim() && now - lastTyping.current > TYPING_EVERY_MS) {
      lastTyping.current = now;
      if (warm !== "warm") setWarm("warming");
      socket.current?.send({ type: "typing", repo });
    }
  };

  const submit = async () => {
    if (!repo) return setError("Pick a repo first.");
    if (!prompt.trim()) return setError("Write what the agent should do.");
    setBusy(true);
    setError("");
    try {
      const created = await api.createSession({ repo, prompt });
      navigate(`/sessions/${encodeURIComponent(created.session.id)}`);
    } catch (e) {
      setError(message(e));
      setBusy(false);
    }
  };

  return (
    <section class="narrow">
      <h1>New session</h1>
      <form class="stack" onSubmit={(e) => { e.preventDefault(); void submit(); }}>
        <fieldset class="stack">
          <legend>Repo</legend>
          <label for="repo-search" class="sr-only">Search repos</label>
          <input id="repo-search" type="search" placeholder="Search repos" value={search}
            onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
          {repos === null ? (
            <p class="muted">Loading repos…</p>
          ) : repos.length === 0 ? (
            <p class="muted">No repos yet. An admin adds them on the <a href="/repos">Repos</a> page.</p>
          ) : (
            <div class="repo-picker" role="radiogroup" aria-label="Repo">
              {matching.map((r) => (
                <label key={r.name} class={`repo-option${r.name === repo ? " chosen" : ""}`}>
                  <input type="radio" name="repo" value={r.name} checked={r.name === repo}
                    onChange={() => setRepo(r.name)} />
                  <span class="name">{r.name}</span>
                  {r.description && <span class="muted small">{r.description}</span>}
                </label>
              ))}
              {matching.length === 0 && <p class="muted">No repo matches.</p>}
            </div>
          )}
        </fieldset>
        <label for="prompt">What should the agent do?</label>
        <textarea id="prompt" rows={6} value={prompt} disabled={busy}
          placeholder="Add a --verbose flag to the CLI"
          aria-describedby="prompt-help warm-state"
          onInput={(e) => typed((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void submit();
            }
          }} />
        <p id="prompt-help" class="muted small">Enter starts the session; Shift+Enter adds a line.</p>
        <p id="warm-state" class={`warm warm-${warm}`} data-testid="warm" data-state={warm}>
          {warm === "warm" && "Sandbox warm: the session will start at once."}
          {warm === "warming" && "Warming a sandbox…"}
          {warm === "none" && "No warm sandbox free; the session starts cold."}
          {warm === "cold" && (repo ? "A sandbox warms up as you type." : "Pick a repo.")}
        </p>
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy || !repo}>{busy ? "Starting…" : "Start session"}</button>
      </form>
    </section>
  );
}
