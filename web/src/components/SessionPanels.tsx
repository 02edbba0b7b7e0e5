// The session page's side panels: who is here, the queue, the changed files and their diff,
// and how the session started. They read the session's fold; none of them changes it.
import { useRef, useState } from "preact/hooks";
import { api } from "../api/client";
import type { SessionDetail, UserRef } from "../api/types";
import { DiffView } from "./Diff";
import type { Transcript } from "../lib/transcript";
import { message } from "../lib/util";

export function People({ transcript, present, typing }: {
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

export function Queue({ queue, running }: { queue: { id: string; author: UserRef; text: string }[]; running?: UserRef }) {
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

export function Files({ id, transcript }: { id: string; transcript: Transcript }) {
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

/** How the session started: where its sandbox came from and how long each phase took. */
export function StartLine({ detail }: { detail: SessionDetail | null }) {
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

