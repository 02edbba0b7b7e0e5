// The session fold: events in seq order, each applied once, whatever arrives twice.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { EventEnvelope } from "../src/api/types";
import { Transcript } from "../src/lib/transcript";

const alice = { id: "u_alice", name: "alice" };
const bob = { id: "u_bob", name: "bob" };
let seq = 0;
const ev = (event: EventEnvelope["event"]): EventEnvelope => ({ seq: ++seq, at_ms: seq, event });

test("prompts, queue, streamed text and tools fold; replays are ignored", () => {
  seq = 0;
  const log = [
    ev({ type: "session_created", repo: "web", title: "t", by: alice }),
    ev({ type: "participant_joined", user: alice, role: "owner" }),
    ev({ type: "prompt_queued", prompt_id: "p1", author: alice, text: "first", delivery: "queue" }),
    ev({ type: "prompt_started", prompt_id: "p1", author: alice }),
    ev({ type: "text_delta", prompt_id: "p1", text: "Hel" }),
    ev({ type: "text_delta", prompt_id: "p1", text: "lo" }),
    ev({ type: "prompt_queued", prompt_id: "p2", author: bob, text: "second", delivery: "queue" }),
    ev({ type: "tool_call_started", prompt_id: "p1", call_id: "c1", tool: "bash", input: { command: "ls" } }),
    ev({ type: "tool_output", call_id: "c1", stream: "stdout", chunk: "a\n" }),
    ev({ type: "tool_call_finished", call_id: "c1", outcome: { status: "ok" }, output: "a\n", duration_ms: 5 }),
    ev({ type: "text_delta", prompt_id: "p1", text: "Done" }),
    ev({ type: "file_changed", prompt_id: "p1", author: alice, path: "x.rs", kind: "modified", added: 2, removed: 1 }),
  ];
  const t = new Transcript();
  t.apply(log.slice(0, 8));
  // A reconnect replays some of what was seen: nothing doubles.
  t.apply(log.slice(5));
  assert.equal(t.lastSeq, log.length);
  assert.deepEqual(t.items.map((i) => i.kind), ["prompt", "text", "prompt", "tool", "text", "file"]);
  assert.equal(t.running?.id, "p1");
  assert.deepEqual(t.queue.map((p) => [p.id, p.author.name]), [["p2", "bob"]]);
  const [, first, , tool, second] = t.items;
  assert.equal(first.kind === "text" && first.text, "Hello");
  assert.equal(second.kind === "text" && second.text, "Done");
  assert.equal(tool.kind === "tool" && tool.outcome, "ok");
  assert.deepEqual([...t.files.values()], [{ path: "x.rs", change: "modified", added: 2, removed: 1 }]);
  t.apply([ev({ type: "prompt_finished", prompt_id: "p1", outcome: "completed", usage: { input_tokens: 1, output_tokens: 1 } })]);
  assert.equal(t.running, undefined);
});

test("an item's revision changes only when it does", () => {
  seq = 0;
  const t = new Transcript();
  t.apply([
    ev({ type: "prompt_queued", prompt_id: "p1", author: alice, text: "x", delivery: "insert" }),
    ev({ type: "prompt_started", prompt_id: "p1", author: alice }),
    ev({ type: "text_delta", prompt_id: "p1", text: "a" }),
  ]);
  const [prompt, text] = t.items;
  const before = [prompt.rev, text.rev];
  t.apply([ev({ type: "text_delta", prompt_id: "p1", text: "b" })]);
  assert.equal(prompt.rev, before[0]);
  assert.ok(text.rev > before[1]);
});

test("stop, clear and the pull request", () => {
  seq = 0;
  const t = new Transcript();
  t.apply([
    ev({ type: "prompt_queued", prompt_id: "p1", author: alice, text: "x", delivery: "queue" }),
    ev({ type: "prompt_queued", prompt_id: "p2", author: bob, text: "y", delivery: "queue" }),
    ev({ type: "prompt_started", prompt_id: "p1", author: alice }),
    ev({ type: "prompt_cancelled", prompt_id: "p1", by: bob }),
    ev({ type: "queue_cleared", by: alice, cancelled: ["p2"] }),
    ev({ type: "pull_request", forge: "github", number: 7, url: "https://example.com/pr/7", state: "open", draft: false, created: true, by: alice }),
  ]);
  assert.equal(t.queue.length, 0);
  assert.equal(t.prompts.get("p1")?.status, "cancelled");
  assert.equal(t.pr?.number, 7);
  assert.ok(t.items.some((i) => i.kind === "note" && i.text === "bob stopped the agent."));
});

test("usage sums per prompt and session; caps and compaction are notes", () => {
  seq = 0;
  const t = new Transcript();
  t.apply([
    ev({ type: "prompt_queued", prompt_id: "p1", author: alice, text: "x", delivery: "queue" }),
    ev({ type: "prompt_started", prompt_id: "p1", author: alice }),
    ev({ type: "model_usage", prompt_id: "p1", turn: 1, model: "m", input_tokens: 1000, output_tokens: 10, cache_read_tokens: 800, cache_write_tokens: 0, cost_usd: 0.01 }),
    ev({ type: "compacted", prompt_id: "p1", before_tokens: 170000, after_tokens: 40000, messages_summarised: 12 }),
    ev({ type: "model_usage", prompt_id: "p1", turn: 2, model: "m", input_tokens: 500, output_tokens: 5, cache_read_tokens: 0, cache_write_tokens: 0, cost_usd: 0.02 }),
    ev({ type: "limit_reached", prompt_id: "p1", limit: "max_cost_usd_per_prompt", value: 0.02, spent: 0.03, message: "raise max_cost_usd_per_prompt" }),
  ]);
  const [prompt, compacted, limit] = t.items;
  assert.ok(prompt.kind === "prompt" && prompt.usage);
  assert.deepEqual(
    prompt.kind === "prompt" && prompt.usage && [prompt.usage.input, prompt.usage.output, prompt.usage.cacheRead],
    [1500, 15, 800],
  );
  assert.ok(prompt.kind === "prompt" && Math.abs((prompt.usage?.cost ?? 0) - 0.03) < 1e-9);
  assert.ok(compacted.kind === "note" && compacted.text.includes("12 older messages summarised"));
  assert.ok(limit.kind === "note" && limit.tone === "error" && limit.text.includes("max_cost_usd_per_prompt"));
  assert.equal(t.spend?.input, 1500);
});

test("plans: proposed, then approved (edited) or rejected; plan mode follows the settings", () => {
  seq = 0;
  const t = new Transcript();
  t.apply([
    ev({ type: "prompt_queued", prompt_id: "p1", author: alice, text: "plan it", delivery: "queue", plan: true }),
    ev({ type: "prompt_started", prompt_id: "p1", author: alice }),
    ev({ type: "plan_proposed", prompt_id: "p1", plan_id: "pl1", title: "Fix", plan: "1. do it", by_agent: true }),
    ev({ type: "prompt_finished", prompt_id: "p1", outcome: "completed", usage: { input_tokens: 1, output_tokens: 1 } }),
    ev({ type: "settings_changed", delivery: "queue", plan_mode: true }),
  ]);
  const [prompt, plan] = t.items;
  assert.equal(prompt.kind === "prompt" && prompt.plan, true);
  assert.equal(plan.kind === "plan" && plan.status, "pending");
  assert.equal(t.planMode, true);
  const rev = plan.rev;
  t.apply([ev({ type: "plan_approved", plan_id: "pl1", by: bob, edited: true, plan: "1. do it well", prompt_id: "p2" })]);
  assert.ok(plan.rev > rev);
  assert.ok(plan.kind === "plan");
  assert.deepEqual([plan.status, plan.by?.name, plan.edited, plan.plan], ["approved", "bob", true, "1. do it well"]);
  t.apply([
    ev({ type: "plan_proposed", prompt_id: "p3", plan_id: "pl2", plan: "2. again", by_agent: true }),
    ev({ type: "plan_rejected", plan_id: "pl2", by: alice, superseded: true, reason: "superseded" }),
  ]);
  const last = t.items[t.items.length - 1];
  assert.ok(last.kind === "plan");
  assert.deepEqual([last.status, last.superseded], ["rejected", true]);
});
