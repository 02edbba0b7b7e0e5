// The session's changes against the default branch (`GET …/diff`), per file, unified or side
// by side, each line highlighted. All of it text nodes: a file name or a line of code is never
// markup.
import { useState } from "preact/hooks";
import { highlight } from "../lib/highlight";

interface FileDiff {
  path: string;
  lines: string[];
}

export function parseDiff(text: string): FileDiff[] {
  const files: FileDiff[] = [];
  let current: FileDiff | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("diff --git ")) {
      const m = / b\/(.*)$/.exec(line);
      current = { path: m ? m[1] : line.slice(11), lines: [] };
      files.push(current);
    } else if (current && (line.startsWith("@@") || /^[ +\\-]/.test(line)) && !line.startsWith("+++") && !line.startsWith("---")) {
      current.lines.push(line);
    }
  }
  return files;
}

function lang(path: string): string {
  return path.split(".").pop() ?? "";
}

function Unified({ file }: { file: FileDiff }) {
  const l = lang(file.path);
  return (
    <pre class="code diff">
      {file.lines.map((line, i) => {
        const cls = line.startsWith("@@") ? "hunk" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : "ctx";
        return (
          <div key={i} class={`dl ${cls}`}>
            {cls === "hunk" ? line : [line[0], ...highlight(line.slice(1), l)]}
          </div>
        );
      })}
    </pre>
  );
}

function Split({ file }: { file: FileDiff }) {
  const l = lang(file.path);
  const rows: [string | null, string | null, string][] = [];
  let dels: string[] = [];
  let adds: string[] = [];
  const flush = () => {
    for (let i = 0; i < Math.max(dels.length, adds.length); i++) rows.push([dels[i] ?? null, adds[i] ?? null, "change"]);
    dels = [];
    adds = [];
  };
  for (const line of file.lines) {
    if (line[0] === "-") dels.push(line.slice(1));
    else if (line[0] === "+") adds.push(line.slice(1));
    else {
      flush();
      if (line.startsWith("@@")) rows.push([line, line, "hunk"]);
      else rows.push([line.slice(1), line.slice(1), "ctx"]);
    }
  }
  flush();
  return (
    <div class="split" role="table" aria-label={`Changes to ${file.path}, side by side`}>
      {rows.map(([left, right, kind], i) => (
        <div key={i} class={`split-row ${kind}`} role="row">
          <pre role="cell" class={`code ${kind === "change" && left !== null ? "del" : ""}`}>{left === null ? "" : kind === "hunk" ? left : highlight(left, l)}</pre>
          <pre role="cell" class={`code ${kind === "change" && right !== null ? "add" : ""}`}>{right === null ? "" : kind === "hunk" ? right : highlight(right, l)}</pre>
        </div>
      ))}
    </div>
  );
}

export function DiffView({ text }: { text: string }) {
  const [mode, setMode] = useState<"unified" | "split">(matchMedia("(min-width: 900px)").matches ? "split" : "unified");
  const files = parseDiff(text);
  if (files.length === 0) return <p class="muted">No changes against the default branch.</p>;
  return (
    <div class="diffs">
      <div class="toolbar" role="group" aria-label="Diff layout">
        <button type="button" aria-pressed={mode === "unified"} onClick={() => setMode("unified")}>Unified</button>
        <button type="button" aria-pressed={mode === "split"} onClick={() => setMode("split")}>Side by side</button>
      </div>
      {files.map((file) => (
        <details key={file.path} open class="diff-file">
          <summary><code>{file.path}</code></summary>
          {mode === "unified" ? <Unified file={file} /> : <Split file={file} />}
        </details>
      ))}
    </div>
  );
}
