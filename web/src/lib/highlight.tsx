// A small, safe code highlighter: splits code into comment, string, number and keyword spans
// (text nodes in spans, never HTML). Enough to read a diff or a snippet; no grammar per
// language, so it is the same few kilobytes for all of them.
import type { ComponentChildren } from "preact";

const KEYWORDS = new Set(
  (
    "as async await break case catch class const continue def default del do elif else enum " +
    "export extends false fn for from func function go if impl import in interface let loop " +
    "match mod mut new nil none null package pass pub raise return self static struct super " +
    "switch this throw trait true try type typeof use var void where while with yield None " +
    "True False"
  ).split(" "),
);

const TOKEN =
  /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`)|(\b\d[\d_]*(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/g;

/** `code` as spans; `lang` decides only whether `#` starts a comment. */
export function highlight(code: string, lang = ""): ComponentChildren[] {
  if (code.length > 200_000) return [code];
  const hashComments = /^(py|python|sh|bash|shell|toml|yaml|yml|rb|ruby|conf|ini)$/.test(lang);
  const out: ComponentChildren[] = [];
  let last = 0;
  let match: RegExpExecArray | null;
  TOKEN.lastIndex = 0;
  while ((match = TOKEN.exec(code)) !== null) {
    let cls = "";
    if (match[1] !== undefined) {
      if (match[1].startsWith("#") && !hashComments) continue;
      cls = "tok-comment";
    } else if (match[2] !== undefined) cls = "tok-string";
    else if (match[3] !== undefined) cls = "tok-number";
    else if (match[4] !== undefined && KEYWORDS.has(match[4])) cls = "tok-keyword";
    else continue;
    if (match.index > last) out.push(code.slice(last, match.index));
    out.push(<span class={cls}>{match[0]}</span>);
    last = TOKEN.lastIndex;
  }
  if (last < code.length) out.push(code.slice(last));
  return out;
}
