// Talks to the Rust test that started kiln (crates/kiln-cli/tests/web.rs): a request is one
// line `@@kiln {json}` on stdout, its answer one JSON line on stdin. Through it the browser
// test asks for sign-in links, scripts the fake model and restarts the server.
import { createInterface } from "node:readline";

const waiting = [];
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const next = waiting.shift();
  if (next) next(JSON.parse(line));
});

/** Sends `command` to the host and waits (at most `ms`) for its answer. */
export function host(command, ms = 180_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the host did not answer ${command.cmd} within ${ms} ms`)), ms);
    waiting.push((answer) => {
      clearTimeout(timer);
      if (answer.error) reject(new Error(`host: ${answer.error}`));
      else resolve(answer);
    });
    process.stdout.write(`@@kiln ${JSON.stringify(command)}\n`);
  });
}

export function close() {
  lines.close();
}
