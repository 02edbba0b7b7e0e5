// Markdown to Preact elements, never to an HTML string: every piece of text becomes a text
// node, so nothing the model (or a prompt) writes can become markup or script. Links keep
// http(s) and mailto URLs only. Covers what models write: headings, paragraphs, lists, block
// quotes, fenced code (with a light keyword highlight), inline code, emphasis, links, rules.
import type { ComponentChildren, VNode } from "preact";
import { highlight } from "./highlight";

function safeHref(url: string): string | null {
  return /^(https?:\/\/|mailto:)/i.test(url.trim()) ? url.trim() : null;
}

/** Inline spans: `code`, **strong**, *em* / _em_, [text](url), autolinks. */
export function inline(text: string): ComponentChildren[] {
  const out: ComponentChildren[] = [];
  const pattern =
    /(`+)([^`]|[^`][\s\S]*?[^`])\1|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\b_([^_\s][^_]*)_\b|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;
  let last = 0;
  let match: RegExpExecArray | null;
  let n = 0;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.push(text.slice(last, match.index));
    last = pattern.lastIndex;
    const key = n++;
    if (match[2] !== undefined) out.push(<code key={key}>{match[2]}</code>);
    else if (match[3] !== undefined) out.push(<strong key={key}>{inline(match[3])}</strong>);
    else if (match[4] !== undefined) out.push(<strong key={key}>{inline(match[4])}</strong>);
    else if (match[5] !== undefined) out.push(<em key={key}>{inline(match[5])}</em>);
    else if (match[6] !== undefined) out.push(<em key={key}>{inline(match[6])}</em>);
    else if (match[7] !== undefined) {
      const href = safeHref(match[8]);
      out.push(
        href ? (
          <a key={key} href={href} target="_blank" rel="noopener noreferrer nofollow">
            {inline(match[7])}
          </a>
        ) : (
          match[0]
        ),
      );
    } else if (match[9] !== undefined) {
      out.push(
        <a key={key} href={match[9]} target="_blank" rel="noopener noreferrer nofollow">
          {match[9]}
        </a>,
      );
    }
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const LIST_ITEM = /^(\s*)([-*+]|\d+[.)])\s+(.*)$/;

/** Block structure of `source`, as elements. */
export function Markdown({ source }: { source: string }): VNode {
  const lines = source.split("\n");
  const blocks: VNode[] = [];
  let i = 0;
  let key = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```+|~~~+)\s*([\w+-]*)/.exec(line);
    if (fence) {
      const marker = fence[1];
      const lang = fence[2];
      const code: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(marker)) code.push(lines[i++]);
      i++;
      blocks.push(
        <pre key={key++} class="code">
          <code data-lang={lang || undefined}>{highlight(code.join("\n"), lang)}</code>
        </pre>,
      );
      continue;
    }
    if (!line.trim()) {
      i++;
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const level = Math.min(heading[1].length + 2, 6);
      const H = `h${level}` as "h3";
      blocks.push(<H key={key++}>{inline(heading[2])}</H>);
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      blocks.push(<hr key={key++} />);
      i++;
      continue;
    }
    if (line.startsWith(">")) {
      const quoted: string[] = [];
      while (i < lines.length && lines[i].startsWith(">")) quoted.push(lines[i++].replace(/^>\s?/, ""));
      blocks.push(
        <blockquote key={key++}>
          <Markdown source={quoted.join("\n")} />
        </blockquote>,
      );
      continue;
    }
    const item = LIST_ITEM.exec(line);
    if (item) {
      const ordered = /\d/.test(item[2]);
      const entries: string[] = [];
      while (i < lines.length) {
        const m = LIST_ITEM.exec(lines[i]);
        if (m && m[1].length <= item[1].length) entries.push(m[3]);
        else if (lines[i].trim() && /^\s+/.test(lines[i]) && entries.length) entries[entries.length - 1] += `\n${lines[i].trim()}`;
        else break;
        i++;
      }
      const children = entries.map((entry, n) => <li key={n}>{inline(entry)}</li>);
      blocks.push(ordered ? <ol key={key++}>{children}</ol> : <ul key={key++}>{children}</ul>);
      continue;
    }
    const paragraph: string[] = [];
    while (
      i < lines.length &&
      lines[i].trim() &&
      !/^\s*(```|~~~|#{1,6}\s|>)/.test(lines[i]) &&
      !LIST_ITEM.test(lines[i])
    ) {
      paragraph.push(lines[i++]);
    }
    blocks.push(<p key={key++}>{inline(paragraph.join("\n"))}</p>);
  }
  return <div class="md">{blocks}</div>;
}
