// One repo: its environment definition (admins edit it; the server's validation errors are
// shown at the editor), image builds with a live log, the warm pool, and its secrets.
import { useEffect, useRef, useState } from "preact/hooks";
import { api, followLog } from "../api/client";
import type { Image, Me, PoolStatus, Repo, RepoAccess, RepoSecret, User } from "../api/types";
import { announce } from "../lib/announce";
import { ago, message, usePoll, useTitle } from "../lib/util";

export function RepoPage({ name, me }: { name: string; me: Me }) {
  useTitle(name);
  const [repo, setRepo] = useState<Repo | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    api.repo(name).then(setRepo, (e: unknown) => setError(message(e)));
  }, [name]);
  if (error) return <section><h1>{name}</h1><p class="error" role="alert">{error}</p></section>;
  if (!repo) return <section><h1>{name}</h1><p class="muted">Loading…</p></section>;
  const admin = me.user.admin;
  return (
    <section>
      <div class="row between">
        <h1>{repo.name}</h1>
        <a class="button" href={`/new?repo=${encodeURIComponent(repo.name)}`}>New session</a>
      </div>
      <p class="meta"><code>{repo.url}</code> <span>branch {repo.default_branch}</span></p>
      {repo.description && <p>{repo.description}</p>}
      <div class="grid">
        <Pool name={name} />
        <Network name={name} />
        {admin && <Builds name={name} />}
      </div>
      {admin && <Environment repo={repo} onSaved={setRepo} />}
      {admin && <Secrets name={name} />}
      {admin && <Access name={name} />}
    </section>
  );
}

function Pool({ name }: { name: string }) {
  const [pool, setPool] = useState<PoolStatus | null>(null);
  const [error, setError] = useState("");
  usePoll(() => api.pool(name).then((p) => { setPool(p); setError(""); }, (e: unknown) => setError(message(e))), 3000, [name]);
  return (
    <section class="panel" aria-labelledby="pool-h">
      <h2 id="pool-h">Warm pool</h2>
      {error && <p class="error">{error}</p>}
      {pool && (
        <dl class="facts" data-testid="pool">
          <dt>Ready</dt><dd data-testid="pool-ready">{pool.ready}</dd>
          <dt>Held for someone typing</dt><dd data-testid="pool-reserved">{pool.reserved}</dd>
          <dt>Target</dt><dd>{pool.target}</dd>
          <dt>Image</dt><dd>{pool.image ? <code>{pool.image}</code> : "none yet (sessions start from the repo)"}</dd>
        </dl>
      )}
    </section>
  );
}

/** What the agent's sandboxes may reach: the newest ready image's `[network] agent` policy. */
function Network({ name }: { name: string }) {
  const [image, setImage] = useState<Image | null | undefined>(undefined);
  usePoll(() => api.images(name).then((list) => setImage(list.find((i) => i.status === "ready") ?? null), () => setImage(null)), 15_000, [name]);
  const network = image?.runtime?.network;
  const allow = network?.allow ?? [];
  return (
    <section class="panel" aria-labelledby="network-h">
      <h2 id="network-h">Network</h2>
      {image === undefined ? (
        <p class="muted small">Loading…</p>
      ) : !network ? (
        <p class="small">No image yet: sandboxes get the package registries (the default allowlist).</p>
      ) : (
        <dl class="facts" data-testid="network">
          <dt>Agent sandboxes</dt>
          <dd>{network.mode === "none" ? "no network" : network.mode === "open" ? "any public host" : "package registries and listed hosts"}</dd>
          {allow.length > 0 && (<><dt>Also allowed</dt><dd>{allow.map((h) => <code key={h}>{h} </code>)}</dd></>)}
          {network.read_only && (<><dt>Plain HTTP</dt><dd>read-only (GET, HEAD, OPTIONS)</dd></>)}
        </dl>
      )}
      <p class="small muted">Set in the environment's <code>[network]</code> section; never this host or private addresses.</p>
    </section>
  );
}

function Builds({ name }: { name: string }) {
  const [images, setImages] = useState<Image[]>([]);
  const [log, setLog] = useState("");
  const [following, setFollowing] = useState<string | null>(null);
  const [error, setError] = useState("");
  const abort = useRef<AbortController | null>(null);
  const refresh = () => api.images(name).then(setImages, (e: unknown) => setError(message(e)));
  usePoll(refresh, 5000, [name]);
  useEffect(() => () => abort.current?.abort(), []);
  const follow = async (id: string) => {
    abort.current?.abort();
    const controller = new AbortController();
    abort.current = controller;
    setFollowing(id);
    setLog("");
    try {
      await followLog(name, id, (text) => setLog((l) => (l.length > 500_000 ? l.slice(-400_000) : l) + text), controller.signal);
      announce("The build ended.");
      void refresh();
    } catch (e) {
      if (!controller.signal.aborted) setError(message(e));
    }
  };
  const build = async () => {
    setError("");
    try {
      const started = await api.buildImage(name);
      void refresh();
      void follow(started.id);
    } catch (e) {
      setError(message(e));
    }
  };
  return (
    <section class="panel" aria-labelledby="builds-h">
      <div class="row between">
        <h2 id="builds-h">Image builds</h2>
        <button type="button" onClick={build}>Build now</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {images.length === 0 ? (
        <p class="muted small">No builds yet.</p>
      ) : (
        <ul class="builds">
          {images.slice(0, 20).map((image) => (
            <li key={image.id}>
              <span class={`badge image-${image.status}`}>{image.status}</span> <code>{image.commit.slice(0, 10)}</code>{" "}
              <span class="muted small">{ago(image.created_at_ms)}{image.duration_ms ? `, ${(image.duration_ms / 1000).toFixed(1)} s` : ""}</span>{" "}
              <button type="button" class="link" onClick={() => follow(image.id)}>Log</button>
              {image.error && <p class="error small">{image.error}</p>}
            </li>
          ))}
        </ul>
      )}
      {following && (
        <div>
          <h3 class="small">Log of <code>{following}</code></h3>
          <pre class="code log" data-testid="build-log" aria-live="off">{log || "…"}</pre>
        </div>
      )}
    </section>
  );
}

function Environment({ repo, onSaved }: { repo: Repo; onSaved: (repo: Repo) => void }) {
  const [text, setText] = useState(repo.environment ?? "");
  const [error, setError] = useState("");
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    setSaved(false);
    try {
      onSaved(await api.updateRepo(repo.name, { environment: text }));
      setSaved(true);
      announce("Environment saved.");
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="panel stack" onSubmit={save} aria-labelledby="env-h">
      <h2 id="env-h">Environment</h2>
      <p class="small muted">
        TOML, as in <code>.kiln/environment.toml</code>; set here, it overrides the repo's file. Empty: use the repo's
        file.
      </p>
      <label for="env-text" class="sr-only">Environment definition</label>
      <textarea id="env-text" class="mono" rows={14} spellcheck={false} value={text}
        aria-invalid={error ? "true" : undefined} aria-describedby={error ? "env-error" : undefined}
        onInput={(e) => { setText((e.target as HTMLTextAreaElement).value); setSaved(false); }} />
      {error && <p id="env-error" class="error" role="alert" data-testid="env-error">{error}</p>}
      {saved && <p class="good" role="status">Saved. The next build uses it.</p>}
      <button type="submit" disabled={busy}>Save environment</button>
    </form>
  );
}

function Secrets({ name }: { name: string }) {
  const [secrets, setSecrets] = useState<RepoSecret[]>([]);
  const [secret, setSecret] = useState("");
  const [value, setValue] = useState("");
  const [agent, setAgent] = useState(false);
  const [error, setError] = useState("");
  const refresh = () => api.secrets(name).then(setSecrets, (e: unknown) => setError(message(e)));
  useEffect(() => void refresh(), [name]);
  const save = async (e: Event) => {
    e.preventDefault();
    setError("");
    try {
      await api.setSecret(name, secret, { value, agent });
      setSecret("");
      setValue("");
      void refresh();
    } catch (err) {
      setError(message(err));
    }
  };
  const remove = async (s: string) => {
    try {
      await api.deleteSecret(name, s);
      void refresh();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <section class="panel" aria-labelledby="secrets-h">
      <h2 id="secrets-h">Secrets</h2>
      <p class="small muted">Values are write-only. Image builds get every secret; sessions only those marked for the agent.</p>
      {secrets.length > 0 && (
        <ul class="secrets">
          {secrets.map((s) => (
            <li key={s.name}>
              <code>{s.name}</code> {s.agent && <span class="badge">agent</span>}{" "}
              <span class="muted small">by {s.updated_by.name}, {ago(s.updated_at_ms)}</span>{" "}
              <button type="button" class="link" onClick={() => remove(s.name)} aria-label={`Remove ${s.name}`}>Remove</button>
            </li>
          ))}
        </ul>
      )}
      <form class="stack" onSubmit={save}>
        <label for="secret-name">Name (an environment variable)</label>
        <input id="secret-name" required value={secret} onInput={(e) => setSecret((e.target as HTMLInputElement).value)} />
        <label for="secret-value">Value</label>
        <input id="secret-value" type="password" autoComplete="off" required value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        <label class="check">
          <input type="checkbox" checked={agent} onChange={(e) => setAgent((e.target as HTMLInputElement).checked)} />
          Give it to the agent's sandboxes too
        </label>
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit">Set secret</button>
      </form>
    </section>
  );
}

/** Who may start sessions on the repo: everyone, or its members (and admins) only. */
function Access({ name }: { name: string }) {
  const [access, setAccess] = useState<RepoAccess | null>(null);
  const [users, setUsers] = useState<User[]>([]);
  const [members, setMembers] = useState<Set<string>>(new Set());
  const [mode, setMode] = useState<"everyone" | "members">("everyone");
  const [error, setError] = useState("");
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    api.access(name).then((a) => {
      setAccess(a);
      setMode(a.mode);
      setMembers(new Set(a.members.map((m) => m.id)));
    }, (e: unknown) => setError(message(e)));
    api.users().then((list) => setUsers(list.filter((u) => !u.deactivated)), () => undefined);
  }, [name]);
  const save = async (e: Event) => {
    e.preventDefault();
    setError("");
    setSaved(false);
    try {
      setAccess(await api.setAccess(name, { mode, members: [...members] }));
      setSaved(true);
    } catch (err) {
      setError(message(err));
    }
  };
  if (!access) return error ? <p class="error">{error}</p> : null;
  return (
    <form class="panel stack" onSubmit={save} aria-labelledby="access-h">
      <h2 id="access-h">Access</h2>
      <fieldset class="stack">
        <legend>Who may start sessions</legend>
        <label class="check"><input type="radio" name="access" checked={mode === "everyone"} onChange={() => setMode("everyone")} /> Everyone</label>
        <label class="check"><input type="radio" name="access" checked={mode === "members"} onChange={() => setMode("members")} /> Members only (and admins); to others the repo does not exist</label>
      </fieldset>
      {mode === "members" && (
        <fieldset class="stack">
          <legend>Members</legend>
          {users.map((u) => (
            <label key={u.id} class="check">
              <input type="checkbox" checked={members.has(u.id)}
                onChange={(e) => {
                  const next = new Set(members);
                  if ((e.target as HTMLInputElement).checked) next.add(u.id);
                  else next.delete(u.id);
                  setMembers(next);
                }} />
              {u.display_name || u.name} <span class="muted small">{u.name}</span>
            </label>
          ))}
        </fieldset>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      {saved && <p class="good" role="status">Access saved.</p>}
      <button type="submit">Save access</button>
    </form>
  );
}
