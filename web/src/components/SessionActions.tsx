// What a participant who may prompt can do in a session: prompt (Enter; Shift+Enter for a new
// line), stop (Esc), switch queue/insert, share it, push its branch and open its pull request.
// Viewers get a read-only composer that says why.
import { useRef, useState } from "preact/hooks";
import { ApiFailure, api } from "../api/client";
import type { SessionSocket } from "../api/socket";
import type { ShareCreated } from "../api/types";
import { announce } from "../lib/announce";
import { message } from "../lib/util";

const TYPING_EVERY_MS = 2000;

/** Push the session's branch, open its pull request (in the asker's name, on a forge). */
export function Publish({ id }: { id: string }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ text: string; url?: string; error?: boolean } | null>(null);
  const run = async (what: "push" | "pr") => {
    setBusy(true);
    setResult(null);
    try {
      if (what === "push") {
        const pushed = await api.push(id);
        setResult({ text: `Pushed ${pushed.branch} at ${pushed.commit.slice(0, 10)}.`, url: pushed.compare_url ?? undefined });
      } else {
        const pr = await api.openPr(id, { draft: false });
        setResult({ text: `Pull request #${pr.number} ${pr.created ? "opened" : "updated"}.`, url: pr.url });
      }
    } catch (e) {
      const url = e instanceof ApiFailure && typeof e.body.compare_url === "string" ? e.body.compare_url : undefined;
      setResult({ text: message(e), url, error: true });
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="publish-h" class="panel">
      <h2 id="publish-h">Branch</h2>
      <div class="row">
        <button type="button" disabled={busy} onClick={() => run("push")}>Push branch</button>
        <button type="button" disabled={busy} onClick={() => run("pr")}>Open pull request</button>
      </div>
      {result && (
        <p class={result.error ? "error" : "good"} role={result.error ? "alert" : "status"}>
          {result.text}{" "}
          {result.url && <a href={result.url} target="_blank" rel="noopener noreferrer">{result.error ? "Open it by hand" : "Open"}</a>}
        </p>
      )}
    </section>
  );
}

export function Share({ id, role }: { id: string; role: string }) {
  const [shareRole, setShareRole] = useState<"viewer" | "collaborator">("viewer");
  const [created, setCreated] = useState<ShareCreated | null>(null);
  const [error, setError] = useState("");
  const [copied, setCopied] = useState(false);
  const url = created ? `${location.origin}/join/${encodeURIComponent(created.code)}` : "";
  const make = async () => {
    setError("");
    setCopied(false);
    setCreated(null);
    try {
      setCreated(await api.share(id, { role: shareRole }));
    } catch (e) {
      setError(message(e));
    }
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(url);
      setCopied(true);
      announce("Link copied.");
    } catch {
      setError("The browser did not let the page copy; select the link and copy it.");
    }
  };
  return (
    <section aria-labelledby="share-h" class="panel">
      <h2 id="share-h">Share</h2>
      <div class="row">
        <label for="share-role" class="sr-only">Role for the link</label>
        <select id="share-role" value={shareRole}
          onChange={(e) => setShareRole((e.target as HTMLSelectElement).value as "viewer" | "collaborator")}>
          <option value="viewer">Viewer: watches</option>
          <option value="collaborator" disabled={role !== "owner" && role !== "collaborator"}>Collaborator: prompts too</option>
        </select>
        <button type="button" onClick={make}>Make link</button>
      </div>
      {created && (
        <div class="stack">
          <label for="share-url" class="small">A {created.role} link (works for 7 days)</label>
          <input id="share-url" readOnly value={url} data-testid="share-url" onFocus={(e) => (e.target as HTMLInputElement).select()} />
          <button type="button" onClick={copy}>{copied ? "Copied" : "Copy link"}</button>
        </div>
      )}
      {error && <p class="error" role="alert">{error}</p>}
    </section>
  );
}

export function Composer({ id, canPrompt, role, loaded, running, delivery, planMode, socket, closed }: {
  id: string;
  canPrompt: boolean;
  role: string | null;
  loaded: boolean;
  running: boolean;
  delivery: "queue" | "insert";
  /** The session plans every prompt first. */
  planMode: boolean;
  socket: { current: SessionSocket | null };
  closed: boolean;
}) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [plan, setPlan] = useState(false);
  const lastTyping = useRef(0);

  const send = async () => {
    if (!text.trim() || busy) return;
    setBusy(true);
    setError("");
    try {
      await api.send(id, { text, plan });
      setText("");
    } catch (e) {
      setError(message(e));
    } finally {
      setBusy(false);
    }
  };
  const stop = async () => {
    setError("");
    try {
      const report = await api.stop(id);
      announce(report.stopped_prompt ? "Stopping the agent." : "Nothing was running.");
    } catch (e) {
      setError(message(e));
    }
  };
  const setDelivery = async (mode: "queue" | "insert") => {
    try {
      await api.update(id, { delivery: mode });
    } catch (e) {
      setError(message(e));
    }
  };

  if (loaded && !canPrompt) {
    return (
      <div class="composer readonly" data-testid="readonly">
        <p>
          {role === "viewer"
            ? "You are a viewer of this session: you see everything, but cannot prompt, stop or change it. Ask an owner for a collaborator link."
            : "You are not a participant of this session, so you cannot prompt it."}
        </p>
      </div>
    );
  }
  return (
    <form class="composer" onSubmit={(e) => { e.preventDefault(); void send(); }}>
      <label for="composer-text" class="sr-only">Prompt</label>
      <textarea id="composer-text" rows={2} value={text} disabled={closed}
        placeholder={closed ? "This session is closed." : running ? (delivery === "insert" ? "Add to what the agent is doing…" : "Queue a follow-up…") : "Ask the agent…"}
        aria-describedby="composer-help"
        onInput={(e) => {
          setText((e.target as HTMLTextAreaElement).value);
          const now = Date.now();
          if (now - lastTyping.current > TYPING_EVERY_MS) {
            lastTyping.current = now;
            socket.current?.send({ type: "typing" });
          }
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            void send();
          } else if (e.key === "Escape" && running) {
            e.preventDefault();
            void stop();
          }
        }} />
      <div class="composer-bar">
        <fieldset class="switch" aria-label="While the agent works, new prompts">
          <legend class="sr-only">While the agent works, new prompts</legend>
          <label><input type="radio" name="delivery" checked={delivery === "queue"} onChange={() => setDelivery("queue")} /> Queue</label>
          <label><input type="radio" name="delivery" checked={delivery === "insert"} onChange={() => setDelivery("insert")} /> Insert</label>
        </fieldset>
        <label title="The agent explores read-only and proposes a plan to approve first">
          <input type="checkbox" data-testid="plan-first" checked={plan || planMode} disabled={planMode}
            onChange={(e) => setPlan((e.target as HTMLInputElement).checked)} /> Plan first
        </label>
        <span id="composer-help" class="muted small">Enter sends · Shift+Enter new line · Esc stops</span>
        <button type="button" class="danger" onClick={stop} disabled={!running}>Stop</button>
        <button type="submit" disabled={busy || !text.trim() || closed}>Send</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
