// A session: its live transcript (replayed from the log and followed over the session
// socket, resuming from the last seq after any disconnect), who is here and typing, the queue
// with each prompt's author, stop, the queue/insert switch, share links, the changed files
// and their diff, the branch and the pull request. Viewers see all of it and change nothing.
import { useEffect, useMemo, useReducer, useRef, useState } from "preact/hooks";
import { ApiFailure, api } from "../api/client";
import { type Link, type SessionHandlers, SessionSocket } from "../api/socket";
import type { Me, SessionDetail, ShareCreated, UserRef } from "../api/types";
import { ItemView } from "../components/Items";
import { DiffView } from "../components/Diff";
import { announce } from "../lib/announce";
import { Transcript } from "../lib/transcript";
import { message, useTitle } from "../lib/util";

/** Items drawn at first; older ones come on request, so a long session opens at once. */
const WINDOW = 200;
/** Events per history request (the API's largest page). */
const HISTORY_PAGE = 5000;
const TYPING_SHOWN_MS = 4000;
const TYPING_EVERY_MS = 2000;

export function SessionPage({ id, me }: { id: string; me: Me }) {
  const transcript = useMemo(() => new Transcript(), [id]);
  const [, rerender] = useReducer((n: number) => n + 1, 0);
  const [detail, setDetail] = useState<SessionDetail | null>(null);
  const [error, setError] = useState("");
  const [link, setLink] = useState<Link>("connecting");
  const [present, setPresent] = useState<Map<string, UserRef>>(new Map());
  const [typing, setTyping] = useState<Map<string, { user: UserRef; at: number }>>(new Map());
  const [shown, setShown] = useState(WINDOW);
  const socket = useRef<SessionSocket | null>(null);
  const list = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useTitle(transcript.title || "Session");

  useEffect(() => {
    api.session(id).then(setDetail, (e: unknown) => setError(message(e)));
    let wasRunning = false;
    let closed = false;
    const handlers: SessionHandlers = {
      events: (batch) => {
        transcript.apply(batch);
        const running = transcript.running !== undefined;
        if (running !== wasRunning) announce(running ? "The agent is working." : "The agent is idle.");
        wasRunning = running;
        rerender(0);
      },
      ephemeral: (event) => {
        if (event.type === "present") setPresent((m) => new Map(m).set(event.user.id, event.user));
        else if (event.type === "away")
          setPresent((m) => {
            const next = new Map(m);
            next.delete(event.user.id);
            return next;
          });
        else if (event.type === "typing" && event.user.id !== me.user.id)
          setTyping((m) => new Map(m).set(event.user.id, { user: event.user, at: Date.now() }));
      },
      link: (state) => {
        setLink(state);
        if (state === "reconnecting") announce("Disconnected from kiln; reconnecting.");
        if (state === "live") {
          // Presence is not replayed: a (re)connected socket is told who is here afresh.
          setPresent(new Map([[me.user.id, { id: me.user.id, name: me.user.name }]]));
        }
      },
    };
    // The history comes in large REST pages (one parse per page, one render at the end),
    // then the socket follows from the last seq: a long session opens at once.
    // The first page says how long the log is; the rest are asked for at once (seqs have no
    // gaps, so page k starts after k × HISTORY_PAGE), and folded in order. A page cut short by
    // the server's size cap leaves a gap, which the loop after fills.
    const history = async () => {
      performance.mark("kiln:history:start");
      const first = await api.events(id, 0, HISTORY_PAGE);
      const starts: number[] = [];
      for (let from = HISTORY_PAGE; from < first.head_seq; from += HISTORY_PAGE) starts.push(from);
      const rest = Promise.all(starts.map((from) => api.events(id, from, HISTORY_PAGE)));
      transcript.apply(first.events);
      for (const page of await rest) {
        if (closed) return transcript.lastSeq;
        if (page.events.length && page.events[0].seq !== transcript.lastSeq + 1) break;
        transcript.apply(page.events);
      }
      for (let pages = 0; pages < 1000 && transcript.lastSeq < first.head_seq; pages++) {
        const page = await api.events(id, transcript.lastSeq, HISTORY_PAGE);
        if (closed || page.events.length === 0) break;
        transcript.apply(page.events);
      }
      performance.mark("kiln:history:end");
      return transcript.lastSeq;
    };
    history()
      .catch(() => transcript.lastSeq)
      .then((after) => {
        if (closed) return;
        wasRunning = transcript.running !== undefined;
        rerender(0);
        socket.current = new SessionSocket(id, handlers, after);
      });
    const expire = setInterval(() => {
      setTyping((m) => {
        const now = Date.now();
        const next = new Map([...m].filter(([, t]) => now - t.at < TYPING_SHOWN_MS));
        return next.size === m.size ? m : next;
      });
    }, 1000);
    return () => {
      closed = true;
      socket.current?.close();
      clearInterval(expire);
    };
  }, [id]);

  // Keep the newest item in view while the reader is at the bottom.
  useEffect(() => {
    const el = list.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  });

  const role = detail?.role ?? null;
  const canPrompt = role === "owner" || role === "collaborator";
  const running = transcript.running;
  const queue = transcript.queue;
  const items = transcript.items;
  const from = Math.max(0, items.length - shown);
  const delivery = transcript.version > 0 ? transcript.delivery : (detail?.delivery ?? "queue");

  if (error) return <section><h1>Session</h1><p class="error" role="alert">{error}</p><p><a href="/">Back to sessions</a></p></section>;

  return (
    <div class="session">
      <div class="session-head">
        <h1 data-testid="session-title">{transcript.title || detail?.title || "Session"}</h1>
        <div class="meta">
          <span>{transcript.repo || detail?.repo}</span>
          <span class={`badge link-${link}`} data-testid="link" data-state={link}>
            {link === "live" ? "live" : link === "connecting" ? "connecting…" : "disconnected: reconnecting…"}
          </span>
          <span class="badge" data-testid="agent-state">{running ? "working" : "idle"}</span>
          {transcript.sandbox && (
            <span class={`badge sandbox-${transcript.sandbox}`} data-testid="sandbox" title={transcript.sandboxDetail ?? undefined}>
              sandbox: {transcript.sandbox}
            </span>
          )}
          {role && <span class="badge">you: {role}</span>}
          <StartLine detail={detail} />
          {transcript.branch && <span>branch <code>{transcript.branch}</code></span>}
          {transcript.pr && (
            <a href={transcript.pr.url} target="_blank" rel="noopener noreferrer" data-testid="pr">
              PR #{transcript.pr.number} ({transcript.pr.draft ? "draft, " : ""}{transcript.pr.state})
            </a>
          )}
        </div>
        <People transcript={transcript} present={present} typing={typing} />
      </div>

      <div class="session-body">
        <div class="transcript" ref={list} data-testid="transcript" data-seq={transcript.lastSeq}
          aria-label="Transcript" role="log" aria-live="off"
          onScroll={(e) => {
            const el = e.currentTarget as HTMLDivElement;
            stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
          }}>
          {from > 0 && (
            <button type="button" class="link more" onClick={() => { stick.current = false; setShown((n) => n + 1000); }}>
              Show {Math.min(1000, from)} earlier of {from}
            </button>
          )}
          {items.slice(from).map((item) => <ItemView key={item.key} item={item} rev={item.rev} />)}
        </div>

        <aside class="side">
          <Queue queue={queue} running={running?.author} />
          <Files id={id} transcript={transcript} />
          {canPrompt && <Publish id={id} />}
          {role === "owner" || role === "collaborator" ? <Share id={id} role={role} /> : null}
        </aside>
      </div>

      <Composer id={id} canPrompt={canPrompt} role={role} loaded={detail !== null} running={running !== undefined}
        delivery={delivery} socket={socket} closed={detail?.state === "closed"} />
    </div>
  );
}

function People({ transcript, present, typing }: {
  transcript: Transcript;
  present: Map<string, UserRef>;
  typing: Map<string, { user: UserRef; at: number }>;
}) {
  const people = [...transcript.participants.values()];
  const typers = [...typing.values()].map((t) => t.user.name);
  return (
    <div class="people" data-testid="people">
      <ul aria-label="Participants" class="inline-list">
        {people.map(({ user, role }) => (
          <li key={user.id} class={present.has(user.id) ? "here" : "away"} data-testid="participant">
            <span class="dot" aria-hidden="true" />
            {user.name} <span class="muted small">{role}{present.has(user.id) ? ", here" : ""}</span>
          </li>
        ))}
      </ul>
      <p class="typing muted small" aria-live="polite" data-testid="typing">
        {typers.length > 0 ? `${typers.join(", ")} ${typers.length === 1 ? "is" : "are"} typing…` : ""}
      </p>
    </div>
  );
}

function Queue({ queue, running }: { queue: { id: string; author: UserRef; text: string }[]; running?: UserRef }) {
  return (
    <section aria-labelledby="queue-h" class="panel">
      <h2 id="queue-h">Queue</h2>
      {running && <p class="small">Working on {running.name}'s prompt.</p>}
      {queue.length === 0 ? (
        <p class="muted small">Nothing waiting.</p>
      ) : (
        <ol class="queue" data-testid="queue">
          {queue.map((p) => (
            <li key={p.id}>
              <span class="author">{p.author.name}</span>: <span class="clip">{p.text}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

function Files({ id, transcript }: { id: string; transcript: Transcript }) {
  const [diff, setDiff] = useState<string | null>(null);
  const [error, setError] = useState("");
  const dialog = useRef<HTMLDialogElement>(null);
  const files = [...transcript.files.values()];
  const load = async () => {
    setError("");
    setDiff(null);
    dialog.current?.showModal();
    try {
      setDiff(await api.diff(id));
    } catch (e) {
      setError(message(e));
    }
  };
  return (
    <section aria-labelledby="files-h" class="panel">
      <h2 id="files-h">Files changed</h2>
      {files.length === 0 ? (
        <p class="muted small">None yet.</p>
      ) : (
        <ul class="files" data-testid="files">
          {files.map((f) => (
            <li key={f.path}>
              <code class="path">{f.path}</code> <span class="add">+{f.added}</span> <span class="del">−{f.removed}</span>
            </li>
          ))}
        </ul>
      )}
      <button type="button" onClick={load}>Show diff</button>
      <dialog ref={dialog} class="diff-dialog" aria-labelledby="diff-h">
        <div class="row between">
          <h2 id="diff-h">Changes against the default branch</h2>
          <button type="button" onClick={() => dialog.current?.close()}>Close</button>
        </div>
        {error && <p class="error" role="alert">{error}</p>}
        {diff === null && !error ? <p class="muted">Loading…</p> : diff !== null && <DiffView text={diff} />}
      </dialog>
    </section>
  );
}

/** Push the session's branch, open its pull request (in the asker's name, on a forge). */
function Publish({ id }: { id: string }) {
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

/** How the session started: where its sandbox came from and how long each phase took. */
function StartLine({ detail }: { detail: SessionDetail | null }) {
  const start = detail?.start;
  if (!start?.source) return null;
  const parts = [
    start.sandbox_ms != null && `sandbox ${start.sandbox_ms} ms`,
    start.sync_ms != null && `sync ${start.sync_ms} ms`,
    start.first_model_request_ms != null && `first model request ${start.first_model_request_ms} ms`,
    start.model_ttft_ms != null && `first token ${start.model_ttft_ms} ms`,
  ].filter(Boolean);
  return (
    <span class="small" data-testid="start">
      started from {start.source}{parts.length ? `: ${parts.join(", ")}` : ""}
    </span>
  );
}

function Share({ id, role }: { id: string; role: string }) {
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

function Composer({ id, canPrompt, role, loaded, running, delivery, socket, closed }: {
  id: string;
  canPrompt: boolean;
  role: string | null;
  loaded: boolean;
  running: boolean;
  delivery: "queue" | "insert";
  socket: { current: SessionSocket | null };
  closed: boolean;
}) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const lastTyping = useRef(0);

  const send = async () => {
    if (!text.trim() || busy) return;
    setBusy(true);
    setError("");
    try {
      await api.send(id, { text });
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
        <span id="composer-help" class="muted small">Enter sends · Shift+Enter new line · Esc stops</span>
        <button type="button" class="danger" onClick={stop} disabled={!running}>Stop</button>
        <button type="submit" disabled={busy || !text.trim() || closed}>Send</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
