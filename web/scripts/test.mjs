// Runs the web UI's unit tests (web/test/*.test.ts[x]) with node's own test runner: each file
// is bundled with esbuild (Vite's, already installed) into target/web-test, then `node --test`.
import { build } from "esbuild";
import { readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";

const root = new URL("..", import.meta.url).pathname;
const out = new URL("../../target/web-test/", import.meta.url).pathname;
const tests = readdirSync(`${root}test`).filter((f) => /\.test\.tsx?$/.test(f));
await build({
  entryPoints: tests.map((f) => `${root}test/${f}`),
  outdir: out,
  bundle: true,
  platform: "node",
  format: "esm",
  outExtension: { ".js": ".mjs" },
  jsx: "automatic",
  jsxImportSource: "preact",
  logLevel: "warning",
});
const files = tests.map((f) => `${out}${f.replace(/\.tsx?$/, ".mjs")}`);
const run = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
process.exit(run.status ?? 1);
