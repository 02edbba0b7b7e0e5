// A session's state as the fold of its events: the transcript's items in order, the prompts
// and their queue, the sandbox, who takes part, the branch and the pull request. Folding is
// incremental and in place (a 10,000-event replay folds in a few milliseconds); an item that
// changes gets a new `rev`, so the view re-renders that item only.
import type { DeliveryMode, EventEnvelope, Role, UserRef } from "../api/types";

export interface PromptItem {
  kind: "prompt";
  key: string;
  rev: number;
  id: string;
  author: UserRef;
  text: string;
  delivery: DeliveryMode;
  status: "queued" | "running" | "inserted" | "completed" | "failed" | "cancelled" | "interrupted";
  atMs: number;
  /** Summed over the prompt's model requests (`model_usage` events); none before the first. */
  usage?: Spend;
  /** Plan first (plan mode): it runs read-only and ends with a proposed plan. */
  plan: boolean;
}

/** Tokens and dollars (null: no price configured for the model). */
export interface Spend {
  input: number;
  output: number;
  cacheRead: number;
  cost: number | null;
}

function addSpend(to: Spend | undefined, input: number, output: number, cacheRead: number, cost: number | null | undefined): Spend {
  const sum = to ?? { input: 0, output: 0, cacheRead: 0, cost: null };
  sum.input += input;
  sum.output += output;
  sum.cacheRead += cacheRead;
  if (cost != null) sum.cost = (sum.cost ?? 0) + cost;
  return sum;
}

/** "12.3k" for people. */
export function tokens(n: number): string {
  return n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)}M` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${n}`;
}

/** "$0.0123", "$1.25". */
export function dollars(n: number): string {
  return n >= 1 ? `$${n.toFixed(2)}` : `$${n.toFixed(4)}`;
}

/** A plan the agent proposed, and what participants decided. */
export interface PlanItem {
  kind: "plan";
  key: string;
  rev: number;
  planId: string;
  promptId: string;
  title: string | null;
  /** As proposed; once approved, as approved (possibly edited). */
  plan: string;
  status: "pending" | "approved" | "rejected";
  by?: UserRef;
  edited?: boolean;
  reason?: string | null;
  superseded?: boolean;
}

export interface TextItem {
  kind: "text";
  key: string;
  rev: number;
  promptId: string;
  text: string;
}

export interface ToolItem {
  kind: "tool";
  key: string;
  rev: number;
  callId: string;
  tool: string;
  input: unknown;
  /** Live output while it runs (bash), capped; then what the model was given. */
  output: string;
  outcome: "running" | "ok" | "error" | "blocked" | "cancelled";
  message?: string;
  durationMs?: number;
}

export interface FileItem {
  kind: "file";
  key: string;
  rev: number;
  path: string;
  change: "added" | "modified" | "deleted";
  added: number;
  removed: number;
  author: UserRef;
}

export interface NoteItem {
  kind: "note";
  key: string;
  rev: number;
  text: string;
  tone: "info" | "error" | "good";
  url?: string;
}

export type Item = PromptItem | TextItem | ToolItem | FileItem | NoteItem | PlanItem;

/** Live tool output kept per call; the rest is in the log (and the finished call's output). */
const TOOL_OUTPUT_CAP = 64 * 1024;

export interface FileTotal {
  path: string;
  change: "added" | "modified" | "deleted";
  added: number;
  removed: number;
}

export class Transcript {
  items: Item[] = [];
  prompts = new Map<string, PromptItem>();
  participants = new Map<string, { user: UserRef; role: Role }>();
  files = new Map<string, FileTotal>();
  repo = "";
  title = "";
  delivery: DeliveryMode = "queue";
  planMode = false;
  sandbox: string | null = null;
  sandboxDetail: string | null = null;
  branch: string | null = null;
  pr: { url: string; number: number; state: string; draft: boolean } | null = null;
  /** The session's usage so far, summed from its `model_usage` events. */
  spend: Spend | undefined = undefined;
  lastSeq = 0;
  /** Bumped by each sub-session event: the children panel's cue to reload. */
  childrenSeen = 0;
  lastAtMs = 0;
  /** Bumped on every change: the view's cue to render. */
  version = 0;

  private tools = new Map<string, ToolItem>();
  private plans = new Map<string, PlanItem>();
  /** The text item model text streams into, per prompt; a tool call starts a new one. */
  private openText = new Map<string, TextItem>();
  private nextKey = 0;

  get running(): PromptItem | undefined {
    for (const p of this.prompts.values()) if (p.status === "running") return p;
    return undefined;
  }

  get queue(): PromptItem[] {
    return [...this.prompts.values()].filter((p) => p.status === "queued");
  }

  apply(batch: EventEnvelope[]): void {
    for (const envelope of batch) {
      if (envelope.seq <= this.lastSeq) continue;
      this.lastSeq = envelope.seq;
      this.lastAtMs = envelope.at_ms;
      this.one(envelope);
    }
    this.version++;
  }

  private key(): string {
    return `i${this.nextKey++}`;
  }

  private note(text: string, tone: NoteItem["tone"] = "info", url?: string): void {
    this.items.push({ kind: "note", key: this.key(), rev: 0, text, tone, url });
  }

  private setPrompt(id: string, status: PromptItem["status"]): void {
    const prompt = this.prompts.get(id);
    if (prompt) {
      prompt.status = status;
      prompt.rev++;
    }
    if (status !== "running") this.openText.delete(id);
  }

  private one({ event, at_ms }: EventEnvelope): void {
    switch (event.type) {
      case "session_created":
        this.repo = event.repo;
        this.title = event.title;
        break;
      case "prompt_queued": {
        const item: PromptItem = {
          kind: "prompt",
          key: this.key(),
          rev: 0,
          id: event.prompt_id,
          author: event.author,
          text: event.text,
          delivery: event.delivery,
          status: "queued",
          atMs: at_ms,
          plan: event.plan ?? false,
        };
        this.prompts.set(item.id, item);
        this.items.push(item);
        break;
      }
      case "prompt_started":
        this.setPrompt(event.prompt_id, "running");
        break;
      case "prompt_inserted":
        this.setPrompt(event.prompt_id, "inserted");
        break;
      case "prompt_finished":
        this.setPrompt(event.prompt_id, event.outcome === "completed" ? "completed" : "failed");
        if (event.outcome === "turn_limit") this.note("Stopped: the prompt used all its model turns.", "error");
        if (event.outcome === "token_limit") this.note("Stopped: the prompt used all its tokens.", "error");
        break;
      case "prompt_cancelled": {
        const wasQueued = this.prompts.get(event.prompt_id)?.status === "queued";
        this.setPrompt(event.prompt_id, "cancelled");
        this.note(`${event.by.name} ${wasQueued ? "removed a queued prompt" : "stopped the agent"}.`);
        break;
      }
      case "prompt_interrupted":
        this.setPrompt(event.prompt_id, "interrupted");
        this.note("The server stopped while this prompt ran; it was interrupted.", "error");
        break;
      case "model_request":
        break;
      // spend (issue 15)
      case "model_usage": {
        const { input_tokens, output_tokens, cache_read_tokens, cost_usd } = event;
        this.spend = addSpend(this.spend, input_tokens, output_tokens, cache_read_tokens ?? 0, cost_usd);
        const prompt = this.prompts.get(event.prompt_id);
        if (prompt) {
          prompt.usage = addSpend(prompt.usage, input_tokens, output_tokens, cache_read_tokens ?? 0, cost_usd);
          prompt.rev++;
        }
        break;
      }
      case "limit_reached":
        this.note(`Stopped: ${event.message}`, "error");
        break;
      case "compacted":
        this.note(
          `The conversation was compacted to fit the model's context window: ${event.messages_summarised} older messages summarised (about ${tokens(event.before_tokens)} → ${tokens(event.after_tokens)} tokens). The log keeps everything.`,
        );
        break;
      case "text_delta": {
        let item = this.openText.get(event.prompt_id);
        if (!item) {
          item = { kind: "text", key: this.key(), rev: 0, promptId: event.prompt_id, text: "" };
          this.openText.set(event.prompt_id, item);
          this.items.push(item);
        }
        item.text += event.text;
        item.rev++;
        break;
      }
      case "tool_call_started": {
        this.openText.delete(event.prompt_id);
        const item: ToolItem = {
          kind: "tool",
          key: this.key(),
          rev: 0,
          callId: event.call_id,
          tool: event.tool,
          input: event.input,
          output: "",
          outcome: "running",
        };
        this.tools.set(item.callId, item);
        this.items.push(item);
        break;
      }
      case "tool_output": {
        const item = this.tools.get(event.call_id);
        if (item && item.output.length < TOOL_OUTPUT_CAP) {
          item.output += event.chunk;
          item.rev++;
        }
        break;
      }
      case "tool_call_finished": {
        const item = this.tools.get(event.call_id);
        if (item) {
          item.outcome = event.outcome.status;
          item.message =
            event.outcome.status === "error"
              ? event.outcome.message
              : event.outcome.status === "blocked"
                ? event.outcome.reason
                : undefined;
          item.output = event.output;
          item.durationMs = event.duration_ms;
          item.rev++;
          this.tools.delete(event.call_id);
        }
        break;
      }
      case "file_changed": {
        this.items.push({
          kind: "file",
          key: this.key(),
          rev: 0,
          path: event.path,
          change: event.kind,
          added: event.added,
          removed: event.removed,
          author: event.author,
        });
        const total = this.files.get(event.path);
        if (total) {
          total.change = event.kind === "deleted" ? "deleted" : total.change === "added" ? "added" : event.kind;
          total.added += event.added;
          total.removed += event.removed;
        } else {
          this.files.set(event.path, {
            path: event.path,
            change: event.kind,
            added: event.added,
            removed: event.removed,
          });
        }
        break;
      }
      case "sandbox_status":
        this.sandbox = event.state;
        this.sandboxDetail = event.detail ?? null;
        if (event.state === "failed") this.note(`The sandbox failed${event.detail ? `: ${event.detail}` : "."}`, "error");
        break;
      case "participant_joined":
        this.participants.set(event.user.id, { user: event.user, role: event.role });
        break;
      case "participant_left":
        this.participants.delete(event.user.id);
        break;
      case "queue_cleared":
        for (const id of event.cancelled) this.setPrompt(id, "cancelled");
        this.note(`${event.by.name} cleared the queue.`);
        break;
      case "settings_changed":
        this.delivery = event.delivery;
        this.planMode = event.plan_mode ?? false;
        break;
      case "plan_proposed": {
        this.openText.delete(event.prompt_id);
        const item: PlanItem = {
          kind: "plan",
          key: this.key(),
          rev: 0,
          planId: event.plan_id,
          promptId: event.prompt_id,
          title: event.title ?? null,
          plan: event.plan,
          status: "pending",
        };
        this.plans.set(item.planId, item);
        this.items.push(item);
        break;
      }
      case "plan_approved": {
        const item = this.plans.get(event.plan_id);
        if (item) {
          Object.assign(item, { status: "approved", by: event.by, edited: event.edited, plan: event.plan });
          item.rev++;
        }
        break;
      }
      case "plan_rejected": {
        const item = this.plans.get(event.plan_id);
        if (item) {
          Object.assign(item, {
            status: "rejected",
            by: event.by,
            reason: event.reason ?? null,
            superseded: event.superseded ?? false,
          });
          item.rev++;
        }
        break;
      }
      case "egress":
        if (!event.allowed) this.note(`Network: ${event.host}:${event.port} refused (${event.reason}).`, "error");
        break;
      case "pushed":
        this.branch = event.branch;
        this.note(`Pushed ${event.branch} at ${event.commit.slice(0, 10)}.`, "good");
        break;
      case "pull_request":
        this.pr = { url: event.url, number: event.number, state: event.state, draft: event.draft };
        this.note(`${event.by.name} ${event.created ? "opened" : "updated"} pull request #${event.number}.`, "good", event.url);
        break;
      case "error":
        this.note(event.message, "error");
        break;
      // Sub-sessions: links to the child's page.
      case "session_spawned":
        this.childrenSeen++;
        this.note(`Spawned sub-session “${event.title}” on ${event.repo}.`, "info", `/sessions/${encodeURIComponent(event.child)}`);
        break;
      case "child_finished":
        this.childrenSeen++;
        this.note(
          `Sub-session ${event.child} ${event.status === "completed" ? "finished" : event.status}: ${event.summary}`,
          event.status === "completed" ? "good" : "error",
          `/sessions/${encodeURIComponent(event.child)}`,
        );
        break;
      default: {
        // A newer server's event: shown, never fatal.
        const unknown: { type: string } = event;
        this.note(`(an event this page does not know: ${unknown.type})`);
      }
    }
  }
}
