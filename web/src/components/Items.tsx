// One transcript item each. Memoised by the item's `rev`: while text streams, only the item
// it streams into renders again.
import { memo } from "preact/compat";
import { useState } from "preact/hooks";
import type { FileItem, Item, NoteItem, PlanItem, PromptItem, TextItem, ToolItem } from "../lib/transcript";
import { dollars, tokens } from "../lib/transcript";
import type { PlanDecision } from "../api/types";
import { Markdown } from "../lib/markdown";

/** Set by the session page for people who may prompt: sends a prompt that did not finish again. */
export type Retry = ((promptId: string) => void) | undefined;

/** Set by the session page for collaborators and owners: decides on a proposed plan. */
export type Decide = ((planId: string, decision: PlanDecision) => Promise<void>) | undefined;

function PromptView({ item, retry }: { item: PromptItem; retry: Retry }) {
  const again = retry && (item.status === "interrupted" || item.status === "failed" || item.status === "cancelled");
  return (
    <article class={`item prompt status-${item.status}`} data-testid="prompt" aria-label={`Prompt by ${item.author.name}`}>
      <header>
        <span class="author" data-testid="author">{item.author.name}</span>
        {item.delivery === "insert" && <span class="badge">insert</span>}
        {item.plan && <span class="badge">plan first</span>}
        <span class={`badge status`}>{item.status}</span>
      </header>
      <div class="prompt-text" data-testid="prompt-text">{item.text}</div>
      {item.usage && (
        <div class="prompt-usage" data-testid="prompt-usage">
          {tokens(item.usage.input)} in{item.usage.cacheRead > 0 ? ` (${tokens(item.usage.cacheRead)} cached)` : ""} /{" "}
          {tokens(item.usage.output)} out tokens{item.usage.cost != null ? ` · ${dollars(item.usage.cost)}` : ""}
        </div>
      )}
      {again && (
        <button type="button" class="link" onClick={() => retry(item.id)}>Send again</button>
      )}
    </article>
  );
}

function TextView({ item }: { item: TextItem }) {
  return (
    <div class="item text" data-testid="model-text">
      <Markdown source={item.text} />
    </div>
  );
}

function summary(input: unknown): string {
  if (input && typeof input === "object") {
    const o = input as Record<string, unknown>;
    for (const key of ["command", "path", "pattern", "file_path"]) {
      if (typeof o[key] === "string") return (o[key] as string).slice(0, 160);
    }
  }
  const text = JSON.stringify(input) ?? "";
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
}

function ToolView({ item }: { item: ToolItem }) {
  return (
    <details class={`item tool outcome-${item.outcome}`} data-testid="tool">
      <summary>
        <span class="tool-name">{item.tool}</span> <code class="tool-arg">{summary(item.input)}</code>{" "}
        <span class="badge">{item.outcome === "running" ? "running…" : item.outcome}</span>
        {item.durationMs !== undefined && <span class="muted small"> {(item.durationMs / 1000).toFixed(1)} s</span>}
      </summary>
      <div class="tool-body">
        <h4 class="sr-only">Input</h4>
        <pre class="code">{JSON.stringify(item.input, null, 2)}</pre>
        {item.message && <p class="error">{item.message}</p>}
        <h4 class="sr-only">Output</h4>
        {item.output && <pre class="code output" data-testid="tool-output">{item.output}</pre>}
      </div>
    </details>
  );
}

function FileView({ item }: { item: FileItem }) {
  return (
    <div class="item file" data-testid="file-change">
      <span class={`badge change-${item.change}`}>{item.change}</span> <code class="path">{item.path}</code>{" "}
      <span class="add">+{item.added}</span> <span class="del">−{item.removed}</span>
    </div>
  );
}

function NoteView({ item }: { item: NoteItem }) {
  return (
    <p class={`item note tone-${item.tone}`}>
      {item.text}
      {item.url && (
        <>
          {" "}
          <a href={item.url} target="_blank" rel="noopener noreferrer">Open</a>
        </>
      )}
    </p>
  );
}

function PlanView({ item, decide }: { item: PlanItem; decide: Decide }) {
  const [editing, setEditing] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const send = async (decision: PlanDecision) => {
    if (!decide || busy) return;
    setBusy(true);
    try {
      await decide(item.planId, decision);
      setEditing(null);
    } finally {
      setBusy(false);
    }
  };
  const reject = () => {
    const reason = window.prompt("Why reject this plan? (optional)");
    if (reason === null) return;
    void send({ decision: "reject", reason: reason.trim() || null });
  };
  return (
    <article class={`item plan plan-${item.status}`} data-testid="plan" aria-label="Proposed plan">
      <header>
        <strong>Plan{item.title ? `: ${item.title}` : ""}</strong>{" "}
        <span class="badge status" data-testid="plan-status">{item.status}</span>
      </header>
      {editing === null ? (
        <Markdown source={item.plan} />
      ) : (
        <>
          <label for={`plan-edit-${item.planId}`} class="sr-only">Edited plan</label>
          <textarea id={`plan-edit-${item.planId}`} rows={12} value={editing}
            onInput={(e) => setEditing((e.target as HTMLTextAreaElement).value)} />
        </>
      )}
      {item.status === "pending" && decide && (
        <div class="plan-actions">
          {editing === null ? (
            <>
              <button type="button" disabled={busy} onClick={() => void send({ decision: "approve" })}>Approve</button>
              <button type="button" class="link" disabled={busy} onClick={() => setEditing(item.plan)}>Edit</button>
              <button type="button" class="danger" disabled={busy} onClick={reject}>Reject</button>
            </>
          ) : (
            <>
              <button type="button" disabled={busy || !editing.trim()}
                onClick={() => void send({ decision: "approve", plan: editing })}>Approve edited plan</button>
              <button type="button" class="link" disabled={busy} onClick={() => setEditing(null)}>Cancel</button>
            </>
          )}
        </div>
      )}
      {item.status === "pending" && !decide && <p class="muted small">Waiting for a collaborator to approve or reject it.</p>}
      {item.status === "approved" && item.by && (
        <p class="note tone-good" data-testid="plan-decision">
          Approved by {item.by.name}{item.edited ? " with edits" : ""}; the agent implements it.
        </p>
      )}
      {item.status === "rejected" && item.by && (
        <p class="note" data-testid="plan-decision">
          {item.superseded
            ? `Superseded by ${item.by.name}'s new prompt.`
            : `Rejected by ${item.by.name}${item.reason ? `: ${item.reason}` : "."}`}
        </p>
      )}
    </article>
  );
}

function ItemViewInner({ item, retry, decide }: { item: Item; rev: number; retry: Retry; decide?: Decide }) {
  switch (item.kind) {
    case "prompt":
      return <PromptView item={item} retry={retry} />;
    case "text":
      return <TextView item={item} />;
    case "tool":
      return <ToolView item={item} />;
    case "file":
      return <FileView item={item} />;
    case "note":
      return <NoteView item={item} />;
    case "plan":
      return <PlanView item={item} decide={decide} />;
  }
}

export const ItemView = memo(
  ItemViewInner,
  (a, b) => a.item === b.item && a.rev === b.rev && a.retry === b.retry && a.decide === b.decide,
);
