// The REST half of the public API. Requests carry the browser session cookie (same origin);
// the server checks their Origin, so a state-changing request from another site fails.
import type * as T from "./types";

/** An error the server (or the network) gave, with the server's message for people. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The error body as JSON, for errors that say more than a message (a compare URL). */
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Requests give up after this long; the server answers far sooner or not at all. */
const TIMEOUT_MS = 30_000;

async function call<R>(method: string, path: string, body?: unknown): Promise<R> {
  const init: RequestInit = {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  };
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiFailure(0, "kiln did not answer: check the connection and try again");
  }
  const text = await response.text();
  if (!response.ok) {
    let message = text || response.statusText;
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
      message = (body as T.ApiError).error;
    } catch {
      // Not JSON: keep the text.
    }
    throw new ApiFailure(response.status, message, body);
  }
  if (!text) return undefined as R;
  const type = response.headers.get("content-type") ?? "";
  return (type.startsWith("application/json") ? JSON.parse(text) : text) as R;
}

const enc = encodeURIComponent;

export const api = {
  me: () => call<T.Me>("GET", "/api/me"),
  signInMethods: () => call<T.SignInMethods>("GET", "/api/auth/methods"),
  logout: () => call<void>("POST", "/api/logout"),

  repos: () => call<T.Repo[]>("GET", "/api/repos"),
  repo: (name: string) => call<T.Repo>("GET", `/api/repos/${enc(name)}`),
  createRepo: (body: T.CreateRepo) => call<T.Repo>("POST", "/api/repos", body),
  updateRepo: (name: string, body: T.UpdateRepo) =>
    call<T.Repo>("PATCH", `/api/repos/${enc(name)}`, body),
  images: (name: string) => call<T.Image[]>("GET", `/api/repos/${enc(name)}/images`),
  buildImage: (name: string) =>
    call<T.ImageBuildStarted>("POST", `/api/repos/${enc(name)}/images`),
  pool: (name: string) => call<T.PoolStatus>("GET", `/api/repos/${enc(name)}/pool`),
  secrets: (name: string) => call<T.RepoSecret[]>("GET", `/api/repos/${enc(name)}/secrets`),
  setSecret: (name: string, secret: string, body: T.SetSecret) =>
    call<T.RepoSecret>("PUT", `/api/repos/${enc(name)}/secrets/${enc(secret)}`, body),
  deleteSecret: (name: string, secret: string) =>
    call<void>("DELETE", `/api/repos/${enc(name)}/secrets/${enc(secret)}`),

  users: () => call<T.User[]>("GET", "/api/users"),
  access: (name: string) => call<T.RepoAccess>("GET", `/api/repos/${enc(name)}/access`),
  setAccess: (name: string, body: T.SetRepoAccess) =>
    call<T.RepoAccess>("PUT", `/api/repos/${enc(name)}/access`, body),
  retry: (id: string, prompt: string) =>
    call<T.PromptAccepted>("POST", `/api/sessions/${enc(id)}/prompts/${enc(prompt)}/retry`),
  sessions: (all: boolean) =>
    call<T.SessionSummary[]>("GET", all ? "/api/sessions?all=true" : "/api/sessions"),
  session: (id: string) => call<T.SessionDetail>("GET", `/api/sessions/${enc(id)}`),
  sessionTree: (id: string) => call<T.SessionTree>("GET", `/api/sessions/${enc(id)}/tree`),
  createSession: (body: T.CreateSession) =>
    call<T.SessionCreated>("POST", "/api/sessions", body),
  send: (id: string, body: T.SendPrompt) =>
    call<T.PromptAccepted>("POST", `/api/sessions/${enc(id)}/prompts`, body),
  decidePlan: (id: string, plan: string, body: T.PlanDecision) =>
    call<T.PlanDecided>("POST", `/api/sessions/${enc(id)}/plan/${enc(plan)}`, body),
  stop: (id: string) => call<T.StopReport>("POST", `/api/sessions/${enc(id)}/stop`, {}),
  update: (id: string, body: T.UpdateSession) =>
    call<T.SessionDetail>("PATCH", `/api/sessions/${enc(id)}`, body),
  share: (id: string, body: T.CreateShare) =>
    call<T.ShareCreated>("POST", `/api/sessions/${enc(id)}/shares`, body),
  join: (code: string) => call<T.SessionSummary>("POST", `/api/join/${enc(code)}`),
  push: (id: string) => call<T.SessionPushed>("POST", `/api/sessions/${enc(id)}/push`),
  openPr: (id: string, body: T.OpenPullRequest) =>
    call<T.PullRequest>("POST", `/api/sessions/${enc(id)}/pr`, body),
  diff: (id: string) => call<string>("GET", `/api/sessions/${enc(id)}/diff`),
  stats: (days: number, repo: string) =>
    call<T.StatsReport>("GET", `/api/stats?days=${days}${repo ? `&repo=${enc(repo)}` : ""}`),
  events: (id: string, afterSeq: number, limit: number) =>
    call<T.EventsPage>("GET", `/api/sessions/${enc(id)}/events?after_seq=${afterSeq}&limit=${limit}`),
};

/**
 * Follows a build log (`GET …/images/{id}/log`), which streams until the build ends: `onText`
 * gets each piece as it comes. Resolves when the log ends; abort with `signal`.
 */
export async function followLog(
  repo: string,
  image: string,
  onText: (text: string) => void,
  signal: AbortSignal,
): Promise<void> {
  const response = await fetch(`/api/repos/${enc(repo)}/images/${enc(image)}/log`, {
    credentials: "same-origin",
    signal,
  });
  if (!response.ok || !response.body) {
    throw new ApiFailure(response.status, `the build log could not be read (${response.status})`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onText(value);
  }
}
