// One transcript item each. Memoised by the item's `rev`: while text streams, only the item
// it streams into renders again.
import { memo } from "preact/compat";
import type { FileItem, Item, NoteItem, PromptItem, TextItem, ToolItem } from "../lib/transcript";
import { dollars, tokens } from "../lib/transcript";
import { Markdown } from "../lib/markdown";

/** Set by the session page for people who may prompt: sends a prompt that did not finish again. */
export type Retry = ((promptId: string) => void) | undefined;

function PromptView({ item, retry }: { item: PromptItem; retry: Retry }) {
  const again = retry && (item.status === "interrupted" || item.status === "failed" || item.status === "cancelled");
  return (
    <article class={`item prompt status-${item.status}`} data-testid="prompt" aria-label={`Prompt by ${item.author.name}`}>
      <header>
        <span class="author" data-testid="author">{item.author.name}</span>
        {item.delivery === "insert" && <span class="badge">insert</span>}
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

function ItemViewInner({ item, retry }: { item: Item; rev: number; retry: Retry }) {
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
  }
}

export const ItemView = memo(ItemViewInner, (a, b) => a.item === b.item && a.rev === b.rev && a.retry === b.retry);
