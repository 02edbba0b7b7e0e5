// The web UI's browser tests: Debian's Chromium driven by playwright-core (no browser
// download) against a real `kiln up` with real sandboxes and the fake model, started by
// crates/kiln-cli/tests/web.rs, which also answers this script's requests (host.mjs). Each
// scenario throws on failure; the process exits non-zero if any did. Screenshots of every
// main page (desktop and phone) go to $SCREENSHOTS; measurements to $BENCH_OUT.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { host, close } from "./host.mjs";

const URL_ = process.env.KILN_URL;
const SHOTS = process.env.SCREENSHOTS;
const BENCH_OUT = process.env.BENCH_OUT;
const DIST = new URL("../dist/", import.meta.url).pathname;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 740 };
const bench = {};
/** Console messages of any page that report a Content-Security-Policy violation. */
const violations = [];
function watch(page, who) {
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) violations.push(`[${who}] ${message.text()}`);
  });
  page.on("pageerror", (e) => console.log(`[${who}] page error: ${e.message}`));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  timeout: 60_000,
});

/** A browser context signed in as `user` through a real sign-in link. */
async function signedIn(user, viewport = DESKTOP, extra = {}) {
  const context = await browser.newContext({ viewport, ...extra });
  context.setDefaultTimeout(30_000);
  context.on("page", (p) => watch(p, user));
  const page = await context.newPage();
  const { url } = await host({ cmd: "login", user });
  await page.goto(url);
  await page.waitForURL(`${URL_}/`);
  await page.getByRole("heading", { name: "Sessions" }).waitFor();
  return { context, page };
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

const promptsBy = (page, author) =>
  page.locator('[data-testid="prompt"]').filter({ has: page.locator('[data-testid="author"]', { hasText: author }) });

const results = [];
async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`not ok - ${name}: ${e.stack || e}`);
    // What each open page showed, for the person reading the failure.
    const dir = new URL("../../target/e2e-failures/", import.meta.url).pathname;
    mkdirSync(dir, { recursive: true });
    let n = 0;
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        const path = join(dir, `${name.replace(/[^a-z0-9]+/gi, "-").slice(0, 40)}-${n++}.png`);
        await page.screenshot({ path }).catch(() => undefined);
        console.log(`  screenshot: ${path} (${page.url()})`);
      }
    }
  }
}

let admin; // { context, page }
let bob;
let sessionPath = "";

await scenario("a stranger gets the sign-in page, with the security headers", async () => {
  const context = await browser.newContext({ viewport: DESKTOP });
  const page = await context.newPage();
  watch(page, "stranger");
  for (const path of ["/", "/sessions/s_nonexistent", "/repos/web", "/new"]) {
    const response = await page.goto(URL_ + path);
    assert.equal(response.status(), 200, path);
    const headers = response.headers();
    assert.match(headers["content-security-policy"], /script-src 'self'/);
    assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.doesNotMatch(headers["content-security-policy"], /unsafe-inline/);
    assert.equal(headers["x-content-type-options"], "nosniff");
    assert.equal(headers["cache-control"], "no-cache");
    await page.getByRole("heading", { name: "Sign in to kiln" }).waitFor();
  }
  const script = await page.locator("script[src]").first().getAttribute("src");
  const asset = await page.request.get(URL_ + script);
  assert.match(asset.headers()["cache-control"], /immutable/);
  // Without GitHub configured, the page offers sign-in links only.
  await page.waitForLoadState("networkidle");
  assert.equal(await page.locator('[data-testid="github-sign-in"]').count(), 0);
  await shot(page, "signin-desktop");
  await page.setViewportSize(PHONE);
  await shot(page, "signin-phone");
  // A used or wrong code says why.
  await page.goto(`${URL_}/login?code=not-a-real-code`, { waitUntil: "domcontentloaded" });
  await page.getByText("already used, has expired").waitFor();
  await context.close();
});

await scenario("typing on the new-session page warms a sandbox, and the session starts", async () => {
  admin = await signedIn("admin");
  const { page } = admin;
  await page.getByRole("link", { name: "New session" }).first().click();
  await page.getByRole("heading", { name: "New session" }).waitFor();
  await page.getByRole("radio", { name: /web/ }).check();
  const prompt = page.getByLabel("What should the agent do?");
  await prompt.pressSequentially("Say hello in **Markdown**", { delay: 20 });
  await page.locator('[data-testid="warm"][data-state="warm"]').waitFor();
  // The pool shows the sandbox held for the typist.
  const pool = await admin.context.newPage();
  await pool.goto(`${URL_}/repos/web`);
  await pool.locator('[data-testid="pool-reserved"]', { hasText: /^[1-9]/ }).waitFor();
  await shot(pool, "repo-desktop");
  await pool.close();
  await shot(page, "new-session-desktop");
  await host({ cmd: "model", turns: [{ text: ["Hello! This is **bold** and `code`.\n\n", "```rust\nfn main() { let x = 1; }\n```\n"] }] });
  await prompt.press("Enter");
  await page.waitForURL(/\/sessions\/[^/]+$/);
  sessionPath = new URL(page.url()).pathname;
  await page.locator('[data-testid="model-text"] strong', { hasText: "bold" }).waitFor();
  await page.locator('[data-testid="model-text"] .tok-keyword', { hasText: "let" }).first().waitFor();
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  // The prompt's model usage (the fake model reports some; no price is configured).
  await page.locator('[data-testid="prompt-usage"]', { hasText: "in / 5 out tokens" }).first().waitFor();
  await page.locator('[data-testid="session-spend"]', { hasText: "tokens" }).waitFor();
});

await scenario("two people in one session see each other's prompts with their authors, live", async () => {
  const { page } = admin;
  await page.getByLabel("Role for the link").selectOption("collaborator");
  await page.getByRole("button", { name: "Make link" }).click();
  await page.getByText("A collaborator link").waitFor();
  const link = await page.locator('[data-testid="share-url"]').inputValue();
  assert.match(link, /\/join\//);
  bob = await signedIn("bob");
  await bob.page.goto(link);
  await bob.page.waitForURL(`${URL_}${sessionPath}`);
  // Bob is present for the admin.
  await page.locator('[data-testid="participant"].here', { hasText: "bob" }).waitFor();
  // Bob types: the admin sees it.
  const bobBox = bob.page.getByLabel("Prompt", { exact: true });
  await bobBox.pressSequentially("hi from bob", { delay: 15 });
  await page.locator('[data-testid="typing"]', { hasText: "bob is typing" }).waitFor();
  // Shift+Enter is a new line, Enter sends.
  await bobBox.press("Shift+Enter");
  await bobBox.pressSequentially("second line");
  await bobBox.press("Enter");
  await promptsBy(page, "bob").filter({ hasText: "hi from bob" }).waitFor({ timeout: 5000 });
  const sent = await promptsBy(page, "bob").locator('[data-testid="prompt-text"]').first().innerText();
  assert.equal(sent, "hi from bob\nsecond line");
  const adminBox = page.getByLabel("Prompt", { exact: true });
  await adminBox.fill("and hello from admin");
  await adminBox.press("Enter");
  await promptsBy(bob.page, "admin").filter({ hasText: "hello from admin" }).waitFor({ timeout: 5000 });
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  await shot(page, "session-desktop");
});

await scenario("queue, insert and stop", async () => {
  const { page } = admin;
  await host({ cmd: "model", turns: [{ text: ["Working on it"], hang: true }] });
  const adminBox = page.getByLabel("Prompt", { exact: true });
  await adminBox.fill("a long task");
  await adminBox.press("Enter");
  await page.locator('[data-testid="agent-state"]', { hasText: "working" }).waitFor();
  await page.locator('[data-testid="model-text"]', { hasText: "Working on it" }).waitFor();
  const bobBox = bob.page.getByLabel("Prompt", { exact: true });
  await bobBox.fill("queued by bob");
  await bobBox.press("Enter");
  await page.locator('[data-testid="queue"] li', { hasText: "queued by bob" }).filter({ hasText: "bob" }).waitFor();
  // The switch is the session's: bob's page follows the admin's change.
  await page.getByRole("radio", { name: "Insert" }).check();
  await bob.page.getByRole("radio", { name: "Insert" }).and(bob.page.locator(":checked")).waitFor();
  await page.getByRole("radio", { name: "Queue" }).check();
  await bob.page.getByRole("radio", { name: "Queue" }).and(bob.page.locator(":checked")).waitFor();
  // Esc in the prompt box stops the agent; the queued prompt runs next.
  await adminBox.focus();
  await adminBox.press("Escape");
  await page.getByText("admin stopped the agent").waitFor();
  await page.locator('[data-testid="queue"]').waitFor({ state: "detached" });
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  // The stopped prompt can be sent again.
  const stopped = page.locator('[data-testid="prompt"]', { hasText: "a long task" });
  await stopped.getByRole("button", { name: "Send again" }).click();
  await page.locator('[data-testid="prompt"]', { hasText: "a long task" }).nth(1).waitFor();
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
});

await scenario("a plan asked for from the composer is approved by a collaborator, then implemented", async () => {
  const { page } = admin;
  // The prompt sent again above must be done first, or it would get this scenario's turns.
  await page.locator('[data-testid="prompt"]', { hasText: "a long task" }).nth(1)
    .locator(".badge.status", { hasText: "completed" }).waitFor();
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  await host({
    cmd: "model",
    turns: [
      { tools: [{ name: "propose_plan", input: { title: "Greeting", plan: "## Steps\n\n1. Add a **greeting** file" } }] },
      { text: ["Implemented the plan."] },
    ],
  });
  const planFirst = bob.page.getByTestId("plan-first");
  await planFirst.check();
  const bobBox = bob.page.getByLabel("Prompt", { exact: true });
  await bobBox.fill("plan a greeting");
  await bobBox.press("Enter");
  await planFirst.uncheck();
  // The plan is drawn as Markdown for everyone, with the decision buttons for collaborators.
  const plan = page.locator('[data-testid="plan"]', { hasText: "Greeting" });
  await plan.locator("strong", { hasText: /^greeting$/ }).waitFor();
  await plan.locator('[data-testid="plan-status"]', { hasText: "pending" }).waitFor();
  await plan.getByRole("button", { name: "Edit" }).waitFor();
  await plan.getByRole("button", { name: "Reject" }).waitFor();
  const bobPlan = bob.page.locator('[data-testid="plan"]', { hasText: "Greeting" });
  await bobPlan.getByRole("button", { name: "Approve" }).click();
  await plan.locator('[data-testid="plan-decision"]', { hasText: "Approved by bob" }).waitFor();
  assert.equal(await plan.getByRole("button", { name: "Approve" }).count(), 0);
  await page.locator('[data-testid="model-text"]', { hasText: "Implemented the plan." }).waitFor();
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
});

await scenario("a viewer joined by a share link cannot prompt and is told why", async () => {
  const { page } = admin;
  await page.getByLabel("Role for the link").selectOption("viewer");
  await page.getByRole("button", { name: "Make link" }).click();
  await page.getByText("A viewer link").waitFor();
  const link = await page.locator('[data-testid="share-url"]').inputValue();
  const carol = await signedIn("carol");
  await carol.page.goto(link);
  await carol.page.waitForURL(`${URL_}${sessionPath}`);
  await carol.page.locator('[data-testid="readonly"]', { hasText: "You are a viewer" }).waitFor();
  assert.equal(await carol.page.getByLabel("Prompt", { exact: true }).count(), 0);
  assert.equal(await carol.page.getByRole("button", { name: "Stop" }).count(), 0);
  assert.equal(await carol.page.getByRole("button", { name: "Send again" }).count(), 0);
  assert.equal(await carol.page.getByRole("button", { name: "Make link" }).count(), 0);
  // Everything is visible to the viewer, plans too, but not the buttons that decide them.
  await promptsBy(carol.page, "bob").first().waitFor();
  await carol.page.locator('[data-testid="plan"]', { hasText: "Approved by bob" }).waitFor();
  assert.equal(await carol.page.getByRole("button", { name: "Approve" }).count(), 0);
  // The API refuses too (the page is not the only guard).
  const status = await carol.page.evaluate(async (path) => {
    const id = path.split("/").pop();
    const r = await fetch(`/api/sessions/${id}/prompts`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "sneaky" }),
    });
    return r.status;
  }, sessionPath);
  assert.equal(status, 403);
  // Signing out ends the browser session.
  await carol.page.getByRole("button", { name: "Sign out" }).click();
  await carol.page.getByRole("heading", { name: "Sign in to kiln" }).waitFor();
  await carol.page.goto(URL_ + sessionPath);
  await carol.page.getByRole("heading", { name: "Sign in to kiln" }).waitFor();
  await carol.context.close();
});

await scenario("XSS in a prompt, a model reply, a file name and tool output renders as text", async () => {
  const { page } = admin;
  const evil = `<img src=x onerror="window.pwned=1">`;
  await host({
    cmd: "model",
    turns: [
      {
        text: [`Reply ${evil} <script>window.pwned=2</script> [click](javascript:window.pwned=3)`],
        tools: [
          { name: "write_file", input: { path: `${evil}.txt`, content: "x\n" } },
          { name: "bash", input: { command: `echo '<script>window.pwned=4</script><b>bold?</b>'` } },
        ],
      },
      { text: ["done"] },
    ],
  });
  const box = page.getByLabel("Prompt", { exact: true });
  await box.fill(`prompt ${evil}<script>window.pwned=5</script>`);
  await box.press("Enter");
  await page.locator('[data-testid="file-change"]', { hasText: "onerror" }).waitFor();
  const lastTool = page.locator('[data-testid="tool"]').last();
  await lastTool.locator("summary").click();
  await lastTool.locator('[data-testid="tool-output"]', { hasText: "<b>bold?</b>" }).waitFor();
  await page.locator('[data-testid="model-text"]', { hasText: "done" }).waitFor();
  await page.locator('[data-testid="prompt-text"]', { hasText: "<script>window.pwned=5</script>" }).waitFor();
  await page.locator('[data-testid="model-text"]', { hasText: "<script>window.pwned=2</script>" }).waitFor();
  const found = await page.evaluate(() => ({
    xss: window.pwned,
    imgs: document.querySelectorAll('[data-testid="transcript"] img, aside img').length,
    scripts: document.querySelectorAll("body script").length,
    jsLinks: document.querySelectorAll('a[href^="javascript"]').length,
    bold: document.querySelectorAll('[data-testid="tool-output"] b').length,
  }));
  assert.deepEqual(found, { xss: undefined, imgs: 0, scripts: 0, jsLinks: 0, bold: 0 });
  // The diff view shows the file name as text too.
  await page.getByRole("button", { name: "Show diff" }).click();
  await page.locator(".diff-file summary", { hasText: "onerror" }).waitFor();
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  await shot(page, "diff-desktop");
  await page.getByRole("button", { name: "Close" }).click();
});

await scenario("push the branch; a pull request without a forge says why", async () => {
  const { page } = admin;
  await page.getByRole("button", { name: "Push branch" }).click();
  await page.locator(".panel .good", { hasText: /^Pushed kiln\// }).waitFor({ timeout: 60_000 });
  // Everyone sees the push, from the log.
  await bob.page.locator(".note", { hasText: /^Pushed kiln\// }).waitFor();
  await page.getByRole("button", { name: "Open pull request" }).click();
  await page.locator(".panel .error[role=alert]").waitFor({ timeout: 60_000 });
});

await scenario("a sub-session: spawned from the transcript, listed with its state, linked both ways", async () => {
  const { page } = admin;
  const parentUrl = page.url();
  // The parent spawns and waits, so only the child asks the model meanwhile.
  await host({
    cmd: "model",
    turns: [
      { text: [], tools: [
        { name: "spawn_session", input: { repo: "web", prompt: "Help out.", title: "helper" } },
        { name: "wait_sessions", input: { timeout_s: 60 } },
      ] },
      { text: ["helped"] },
      { text: ["all done"] },
    ],
  });
  const box = page.getByLabel("Prompt", { exact: true });
  await box.fill("Split the work.");
  await box.press("Enter");
  await page.locator(".note", { hasText: "Spawned sub-session “helper” on web." }).waitFor({ timeout: 60_000 });
  await page.locator(".note", { hasText: /finished: helped/ }).waitFor({ timeout: 60_000 });
  const child = page.locator('[data-testid="sub-sessions"] [data-testid="child"]', { hasText: "helper" });
  await child.waitFor();
  await child.locator("a").first().click();
  await page.locator('[data-testid="parent-link"]').waitFor();
  await page.locator('[data-testid="model-text"]', { hasText: "helped" }).waitFor();
  await shot(page, "sub-session-desktop");
  await page.locator('[data-testid="parent-link"]').click();
  await page.waitForURL(parentUrl);
  await page.locator('[data-testid="model-text"]', { hasText: "all done" }).waitFor();
});

await scenario("after the server restarts the page reconnects and resumes without duplicates", async () => {
  const { page } = admin;
  const before = await page.locator('[data-testid="prompt"]').count();
  const seqBefore = Number(await page.locator('[data-testid="transcript"]').getAttribute("data-seq"));
  const restarted = host({ cmd: "restart" });
  await page.locator('[data-testid="link"][data-state="reconnecting"]').waitFor();
  await page.getByText("disconnected").first().waitFor();
  await restarted;
  await page.locator('[data-testid="link"][data-state="live"]').waitFor({ timeout: 60_000 });
  const box = page.getByLabel("Prompt", { exact: true });
  await box.fill("after the restart");
  await box.press("Enter");
  await promptsBy(bob.page, "admin").filter({ hasText: "after the restart" }).waitFor({ timeout: 30_000 });
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  const id = sessionPath.split("/").pop();
  const { head_seq, prompts } = await host({ cmd: "events", session: id });
  for (const p of [page, bob.page]) {
    await p.locator(`[data-testid="transcript"][data-seq="${head_seq}"]`).waitFor();
    assert.equal(await p.locator('[data-testid="prompt"]').count(), prompts, "each prompt shown once");
  }
  assert.equal(prompts, before + 1);
  assert.ok(head_seq > seqBefore);
  await shot(page, "session-reconnected-desktop");
});

await scenario("a repo: environment errors at the editor, a build's live log, secrets", async () => {
  const { page } = admin;
  await page.goto(`${URL_}/repos/web`);
  const editor = page.getByLabel("Environment definition");
  await editor.fill('packages = "not a list"\nno_such_key = 1\n');
  await page.getByRole("button", { name: "Save environment" }).click();
  await page.locator('[data-testid="env-error"]').waitFor();
  assert.equal(await editor.getAttribute("aria-invalid"), "true");
  assert.equal(await editor.getAttribute("aria-describedby"), "env-error");
  await editor.fill("");
  await page.getByRole("button", { name: "Save environment" }).click();
  await page.locator("p.good", { hasText: "Saved." }).waitFor();
  assert.equal(await editor.getAttribute("aria-invalid"), null);
  await page.getByRole("button", { name: "Build now" }).click();
  const log = page.locator('[data-testid="build-log"]');
  await log.waitFor();
  await page.waitForFunction(() => (document.querySelector('[data-testid="build-log"]')?.textContent ?? "").length > 40);
  await page.getByText("The build ended.").waitFor({ timeout: 120_000 }).catch(() => undefined);
  await page.getByLabel("Name (an environment variable)").fill("WEB_TOKEN");
  await page.getByLabel("Value", { exact: true }).fill("s3cret-value-1");
  await page.getByRole("button", { name: "Set secret" }).click();
  await page.locator(".secrets li", { hasText: "WEB_TOKEN" }).waitFor();
  // Members-only access, kept across a reload, then open again.
  await page.getByRole("radio", { name: /Members only/ }).check();
  await page.getByRole("checkbox", { name: /bob/ }).check();
  await page.getByRole("button", { name: "Save access" }).click();
  await page.getByText("Access saved.").waitFor();
  await page.reload();
  await page.getByRole("checkbox", { name: /bob/ }).and(page.locator(":checked")).waitFor();
  await page.getByRole("radio", { name: "Everyone" }).check();
  await page.getByRole("button", { name: "Save access" }).click();
  await page.getByText("Access saved.").waitFor();
  assert.equal(await page.getByText("s3cret-value-1").count(), 0, "a secret's value is never shown");
  if (SHOTS) await page.screenshot({ path: join(SHOTS, "repo-admin-desktop.png"), fullPage: true });
});

await scenario("the stats page counts a finished session, draws its charts, and keeps its filters in the URL", async () => {
  const { page } = admin;
  await page.goto(`${URL_}/stats?days=7`);
  const started = page.getByTestId("sessions-started");
  await started.waitFor();
  const before = Number((await started.innerText()).replace(/,/g, ""));
  assert.ok(before >= 1, `the sessions so far are counted (${before})`);
  // One more session, run to its end.
  await page.goto(`${URL_}/new`);
  await page.getByRole("radio", { name: /web/ }).check();
  const prompt = page.getByLabel("What should the agent do?");
  await prompt.fill("Count me in the stats");
  await host({ cmd: "model", turns: [{ text: ["Counted."] }] });
  await prompt.press("Enter");
  await page.waitForURL(/\/sessions\/[^/]+$/);
  await page.locator('[data-testid="model-text"]', { hasText: "Counted." }).waitFor();
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  // The main nav leads to the page, which counts it.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Stats" }).click();
  await page.waitForURL(`${URL_}/stats`);
  await page.getByTestId("sessions-started").filter({ hasText: new RegExp(`^${before + 1}$`) }).waitFor();
  await page.locator('[data-testid="stats-by-user"] th[scope="row"]', { hasText: "admin" }).waitFor();
  // Both charts are drawn on a canvas as wide as their panel, with a summary in words.
  for (const id of ["chart-sessions", "chart-cost"]) {
    const canvas = page.locator(`[data-testid="${id}"] canvas`);
    await canvas.waitFor();
    const { drawn, box } = await canvas.evaluate((c) => ({
      drawn: c.width / devicePixelRatio,
      box: c.closest(".chart-box").clientWidth,
    }));
    assert.ok(drawn > 0 && Math.abs(drawn - box) <= 2, `${id}: canvas ${drawn} px wide in a ${box} px box`);
  }
  await page.getByRole("img", { name: "Sessions per day" }).waitFor();
  const caption = await page.locator("#chart-sessions-caption").innerText();
  assert.match(caption, new RegExp(`${before + 1} started`));
  // The range and the repo filter go into the URL and survive a reload.
  await page.getByTestId("stats-range").selectOption("7");
  await page.waitForURL(`${URL_}/stats?days=7`);
  await page.getByTestId("stats-repo").selectOption("web");
  await page.waitForURL(`${URL_}/stats?days=7&repo=web`);
  await page.reload();
  await page.getByTestId("sessions-started").waitFor();
  assert.equal(await page.getByTestId("stats-repo").inputValue(), "web");
  assert.equal(await page.getByTestId("stats-range").inputValue(), "7");
  assert.deepEqual(await page.locator('[data-testid="stats-by-repo"] th[scope="row"]').allInnerTexts(), ["web"]);
  await page.locator('[data-testid="chart-sessions"] canvas').waitFor();
  await shot(page, "stats-desktop");
});

await scenario("light and dark themes have readable contrast and visible focus", async () => {
  for (const colorScheme of ["light", "dark"]) {
    const themed = await signedIn("admin", DESKTOP, { colorScheme });
    const { page } = themed;
    await page.goto(URL_ + sessionPath);
    await page.locator('[data-testid="model-text"]').first().waitFor();
    await shot(page, `session-${colorScheme}-desktop`);
    await assertContrast(page, colorScheme);
    // The stats page, with its charts' legends and tables.
    await page.goto(`${URL_}/stats`);
    await page.locator('[data-testid="chart-cost"] canvas').waitFor();
    await assertContrast(page, `${colorScheme} /stats`);
    await shot(page, `stats-${colorScheme}-desktop`);
    // Keyboard focus is visible.
    await page.keyboard.press("Tab");
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, "none");
    await themed.context.close();
  }
});

/** Fails if any text in the page's header or main has a contrast ratio below 4.5. */
async function assertContrast(page, what) {
  const worst = await page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
      }
      return rgb(getComputedStyle(document.body).backgroundColor);
    };
    let worst = { ratio: 21, text: "" };
    for (const el of document.querySelectorAll("main *, header *")) {
      if (!el.childNodes.length || ![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
      const style = getComputedStyle(el);
      if (style.visibility === "hidden" || el.closest("[disabled], .sr-only")) continue;
      const [a, b] = [lum(rgb(style.color)), lum(background(el))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < worst.ratio) worst = { ratio, text: el.textContent.trim().slice(0, 40) };
    }
    return worst;
  });
  assert.ok(worst.ratio >= 4.5, `${what}: contrast ${worst.ratio.toFixed(2)} for "${worst.text}"`);
}

await scenario("the pages on a 375 px phone, and every main page's screenshot", async () => {
  const phone = await signedIn("admin", PHONE, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const { page } = phone;
  for (const [path, name] of [["/", "sessions"], ["/new", "new-session"], [sessionPath, "session"], ["/repos", "repos"], ["/repos/web", "repo"], ["/stats", "stats"]]) {
    await page.goto(URL_ + path);
    await page.locator("main h1").first().waitFor();
    if (name === "session") await page.locator('[data-testid="model-text"]').first().waitFor();
    if (name === "stats") await page.locator('[data-testid="chart-cost"] canvas').waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${path} is wider than the phone by ${overflow} px`);
    await shot(page, `${name}-phone`);
  }
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(URL_ + sessionPath);
  await page.locator('[data-testid="model-text"]').first().waitFor();
  await shot(page, "session-dark-phone");
  // Desktop screenshots of the pages not taken yet.
  for (const [path, name] of [["/", "sessions"], ["/repos", "repos"]]) {
    await admin.page.goto(URL_ + path);
    await admin.page.locator("main h1").first().waitFor();
    await admin.page.locator(".cards").waitFor();
    if (name === "sessions") {
      // The list shows each session's participants (from its detail).
      await admin.page.locator('[data-testid="participants"]', { hasText: "bob" }).first().waitFor();
    }
    await shot(admin.page, `${name}-desktop`);
  }
  await phone.context.close();
});

await scenario("the initial JavaScript is at most 150 KB gzipped", async () => {
  const html = readFileSync(join(DIST, "index.html"), "utf8");
  let total = 0;
  for (const [, src] of html.matchAll(/<script[^>]+src="([^"]+)"/g)) {
    const gz = join(DIST, `${src}.gz`);
    total += statSync(gz).size;
  }
  for (const [, href] of html.matchAll(/<link[^>]+rel="modulepreload"[^>]+href="([^"]+)"/g)) {
    total += statSync(join(DIST, `${href}.gz`)).size;
  }
  let css = 0;
  for (const name of readdirSync(join(DIST, "assets"))) if (name.endsWith(".css.gz")) css += statSync(join(DIST, "assets", name)).size;
  bench.initial_js_gzip_bytes = total;
  bench.css_gzip_bytes = css;
  assert.ok(total > 0 && total <= 150 * 1024, `initial JS is ${total} bytes gzipped`);
});

await scenario("a session of 10,000 events is interactive in under a second", async () => {
  const { session, head_seq } = await host({ cmd: "big_session", events: 10_000 }, 600_000);
  assert.ok(head_seq >= 10_000, `only ${head_seq} events`);
  const { page } = admin;
  await page.goto(`${URL_}/`);
  await page.getByRole("heading", { name: "Sessions" }).waitFor();
  const runs = [];
  const history = [];
  for (let run = 0; run < 3; run++) {
    await page.goto(`${URL_}/`);
    await page.getByRole("heading", { name: "Sessions" }).waitFor();
    const started = await page.evaluate(() => performance.now());
    await page.evaluate((path) => {
      history.pushState(null, "", path);
      dispatchEvent(new PopStateEvent("popstate"));
    }, `/sessions/${session}`);
    await page.waitForFunction(
      (head) => document.querySelector('[data-testid="transcript"]')?.getAttribute("data-seq") === String(head) &&
        !document.querySelector("#composer-text")?.disabled,
      head_seq, { polling: "raf", timeout: 30_000 },
    );
    // Interactive: the prompt box takes a key at once.
    const ready = await page.evaluate(() => {
      const box = document.querySelector("#composer-text");
      box.focus();
      return new Promise((resolve) => requestAnimationFrame(() => resolve(performance.now())));
    });
    runs.push(ready - started);
    history.push(
      await page.evaluate(() => {
        const last = (name) => performance.getEntriesByName(name).at(-1)?.startTime ?? NaN;
        return last("kiln:history:end") - last("kiln:history:start");
      }),
    );
  }
  runs.sort((a, b) => a - b);
  bench.session_10k_events = head_seq;
  bench.session_10k_interactive_ms = runs.map((r) => Math.round(r));
  bench.session_10k_interactive_median_ms = Math.round(runs[1]);
  // Of that, reading and folding the history (the REST pages).
  bench.session_10k_history_ms = history.map((h) => Math.round(h));
  await shot(page, "session-10k-desktop");
  assert.ok(runs[1] < 1000, `interactive after ${runs[1]} ms`);
});

await scenario("streaming 200 tokens/s causes no long main-thread task", async () => {
  const { page } = admin;
  await page.goto(URL_ + sessionPath);
  await page.locator('[data-testid="link"][data-state="live"]').waitFor();
  await page.evaluate(() => {
    window.__gap = 0;
    let last = performance.now();
    const frame = (now) => {
      window.__gap = Math.max(window.__gap, now - last);
      last = now;
      if (!window.__stopFrames) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    window.__long = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.__long.push(entry.duration);
    }).observe({ type: "longtask" });
  });
  // 1,000 chunks, 5 ms apart: 200 a second for 5 s, with Markdown to re-render.
  const chunks = Array.from({ length: 1000 }, (_, i) => (i % 50 === 49 ? `word${i}\n\n- item **${i}**\n` : `word${i} `));
  await host({ cmd: "model", turns: [{ text: chunks, chunk_delay_ms: 5 }] });
  const box = page.getByLabel("Prompt", { exact: true });
  await box.fill("stream a lot");
  await box.press("Enter");
  await page.locator('[data-testid="model-text"]', { hasText: "word999" }).waitFor({ timeout: 60_000 });
  await page.locator('[data-testid="agent-state"]', { hasText: "idle" }).waitFor();
  const long = await page.evaluate(() => window.__long);
  const gap = await page.evaluate(() => {
    window.__stopFrames = true;
    return window.__gap;
  });
  bench.streaming_longest_frame_ms = Math.round(gap);
  bench.streaming_tokens = 1000;
  bench.streaming_long_tasks = long.length;
  bench.streaming_longest_task_ms = Math.round(Math.max(0, ...long));
  assert.ok(bench.streaming_longest_task_ms <= 50, `a ${bench.streaming_longest_task_ms} ms task while streaming`);
});

await scenario("no page broke the Content-Security-Policy", async () => {
  assert.deepEqual(violations, []);
});

await browser.close();
if (BENCH_OUT) writeFileSync(BENCH_OUT, `${JSON.stringify(bench)}\n`);
console.log(`bench ${JSON.stringify(bench)}`);
const failed = results.filter(([, ok]) => !ok).length;
console.log(`browser scenarios: ${results.length - failed} ok, ${failed} failed`);
close();
process.exit(failed ? 1 : 0);
