// The session page's sub-sessions panel: a link to the session that spawned this one, and the
// sessions this one spawned (and theirs), each with its state and pull request. It reloads the
// tree when the transcript folds a sub-session event.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import type { SessionTree } from "../api/types";
import { message } from "../lib/util";

export function SubSessions({ id, seen }: { id: string; seen: number }) {
  const [tree, setTree] = useState<SessionTree | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    api.sessionTree(id).then(
      (t) => live && setTree(t),
      (e: unknown) => live && setError(message(e)),
    );
    return () => {
      live = false;
    };
  }, [id, seen]);
  if (!tree) return error ? <p class="error small">{error}</p> : null;
  const parent = tree.ancestors[0];
  const below = tree.nodes.filter((n) => n.id !== tree.id);
  if (!parent && below.length === 0) return null;
  return (
    <section aria-labelledby="subs-h" class="panel" data-testid="sub-sessions">
      <h2 id="subs-h">Sub-sessions</h2>
      {parent && (
        <p class="small">
          Spawned by <a href={`/sessions/${encodeURIComponent(parent)}`} data-testid="parent-link">{parent}</a>
        </p>
      )}
      {below.length > 0 && (
        <ul class="queue">
          {below.map((n) => (
            <li key={n.id} data-testid="child" data-depth={n.depth}>
              {n.depth > 1 ? `${"\u00a0\u00a0".repeat(n.depth - 1)}↳ ` : ""}
              <a href={`/sessions/${encodeURIComponent(n.id)}`}>{n.title || n.id}</a>{" "}
              <span class={`badge state-${n.state}`}>{n.state}</span>{" "}
              <span class="muted small">{n.repo}</span>
              {n.pull_request && (
                <>
                  {" "}
                  <a class={`badge pr-${n.pull_request.state}`} href={/^https?:\/\//.test(n.pull_request.url) ? n.pull_request.url : undefined} rel="noreferrer noopener">
                    PR #{n.pull_request.number} {n.pull_request.state}
                  </a>
                </>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
