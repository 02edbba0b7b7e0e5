// Markdown becomes elements and text nodes only: what a model or a prompt writes can never be
// markup, and links keep safe schemes.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ComponentChildren, VNode } from "preact";
import { Markdown, inline } from "../src/lib/markdown";

/** Every element of a tree (function components expanded), depth first. */
function elements(node: ComponentChildren, out: VNode[] = []): VNode[] {
  if (Array.isArray(node)) {
    for (const child of node) elements(child, out);
  } else if (node && typeof node === "object" && "type" in node) {
    const vnode = node as VNode<{ children?: ComponentChildren }>;
    if (typeof vnode.type === "function") {
      elements((vnode.type as (p: unknown) => ComponentChildren)(vnode.props), out);
    } else {
      out.push(vnode);
      elements(vnode.props.children, out);
    }
  }
  return out;
}

function text(node: ComponentChildren): string {
  if (Array.isArray(node)) return node.map(text).join("");
  if (typeof node === "string" || typeof node === "number") return String(node);
  if (node && typeof node === "object" && "props" in node) {
    const vnode = node as VNode<{ children?: ComponentChildren }>;
    if (typeof vnode.type === "function") return text((vnode.type as (p: unknown) => ComponentChildren)(vnode.props));
    return text(vnode.props.children);
  }
  return "";
}

test("html in markdown stays text", () => {
  const source = `<img src=x onerror="alert(1)"> <script>alert(2)</script>\n\n# <b>title</b>`;
  const tree = <Markdown source={source} />;
  const tags = elements(tree).map((e) => e.type);
  assert.ok(!tags.includes("img") && !tags.includes("script") && !tags.includes("b"), String(tags));
  assert.ok(text(tree).includes(`<img src=x onerror="alert(1)">`));
  assert.ok(text(tree).includes("<script>alert(2)</script>"));
  assert.ok(elements(tree).every((e) => !("dangerouslySetInnerHTML" in (e.props as object))));
});

test("links keep http(s) and mailto only", () => {
  const tree = inline("[a](javascript:alert(1)) [b](https://example.com/x) [c](data:text/html,x) [d](mailto:x@y.z)");
  const links = elements(tree).filter((e) => e.type === "a");
  assert.deepEqual(
    links.map((l) => (l.props as unknown as { href: string }).href),
    ["https://example.com/x", "mailto:x@y.z"],
  );
  assert.ok(text(tree).includes("[a](javascript:alert(1))"), "an unsafe link stays as its text");
  for (const link of links) assert.equal((link.props as unknown as { rel: string }).rel, "noopener noreferrer nofollow");
});

test("blocks: headings, lists, fences, quotes, emphasis", () => {
  const source = "## Plan\n\n- **one**\n- `two`\n\n1. first\n2. second\n\n> quoted\n\n```rust\nfn main() {}\n```\nafter";
  const tags = elements(<Markdown source={source} />).map((e) => e.type);
  for (const tag of ["h4", "ul", "ol", "li", "strong", "code", "blockquote", "pre", "p"]) {
    assert.ok(tags.includes(tag), `${tag} in ${tags}`);
  }
});

test("an unclosed fence while streaming keeps the rest as code", () => {
  const tree = <Markdown source={"text\n```js\nconst a = '<b>';"} />;
  const pre = elements(tree).find((e) => e.type === "pre");
  assert.ok(pre);
  assert.ok(text(pre).includes("const a = '<b>';"));
});
