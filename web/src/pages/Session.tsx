// A session: its live transcript (replayed from the log and followed over the session
// socket, resuming from the last seq after any disconnect), who is here and typing, the queue
// with each prompt's author, stop, the queue/insert switch, share links, the changed files
// and their diff, the branch and the pull request. Viewers see all of it and change nothing.
import { useEffect, useMemo, useReducer, useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import { type Link, type SessionHandlers, SessionSocket } from "../api/socket";
import type { Me, PlanDecision, SessionDetail, UserRef } from "../api/types";
import { ItemView } from "../components/Items";
import { Files, People, Queue, StartLine } from "../components/SessionPanels";
import { SubSessions } from "../components/SubSessions";
import { Composer, Publish, Share } from "../components/SessionActions";
import { announce } from "../lib/announce";
import { Transcript, dollars, tokens } from "../lib/transcript";
import { message, useTitle } from "../lib/util";

/** Items drawn at first; older ones come on request, so a long session opens at once. */
const WINDOW = 200;
/** Events per history request (the API's largest page). */
const HISTORY_PAGE = 5000;
const TYPING_SHOWN_MS = 4000;

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
  const retry = useMemo(
    () =>
      canPrompt
        ? (promptId: string) => void api.retry(id, promptId).catch((e: unknown) => announce(message(e)))
        : undefined,
    [id, canPrompt],
  );
  const decide = useMemo(
    () =>
      canPrompt
        ? (planId: string, decision: PlanDecision) =>
            api.decidePlan(id, planId, decision).then(
              () => undefined,
              (e: unknown) => announce(message(e)),
            )
        : undefined,
    [id, canPrompt],
  );
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
          {transcript.spend && (
            <span class="small" data-testid="session-spend" title="This session's model usage so far">
              {tokens(transcript.spend.input + transcript.spend.output)} tokens
              {transcript.spend.cost != null ? ` · ${dollars(transcript.spend.cost)}` : ""}
            </span>
          )}
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
          {items.slice(from).map((item) => <ItemView key={item.key} item={item} rev={item.rev} retry={retry} decide={decide} />)}
        </div>

        <aside class="side">
          <Queue queue={queue} running={running?.author} />
          <Files id={id} transcript={transcript} />
          <SubSessions id={id} seen={transcript.childrenSeen} />
          {canPrompt && <Publish id={id} />}
          {role === "owner" || role === "collaborator" ? <Share id={id} role={role} /> : null}
        </aside>
      </div>

      <Composer id={id} canPrompt={canPrompt} role={role} loaded={detail !== null} running={running !== undefined}
        delivery={delivery} planMode={transcript.planMode} socket={socket} closed={detail?.state === "closed"} />
    </div>
  );
}

