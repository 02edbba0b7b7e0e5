// The repos sessions work on; admins add them here.
import { useState } from "preact/hooks";
import { api } from "../api/client";
import type { Me, Repo } from "../api/types";
import { navigate } from "../lib/router";
import { message, usePoll, useTitle } from "../lib/util";

export function Repos({ me }: { me: Me }) {
  useTitle("Repos");
  const [repos, setRepos] = useState<Repo[] | null>(null);
  const [error, setError] = useState("");
  usePoll(() => api.repos().then(setRepos, (e: unknown) => setError(message(e))), 10_000, []);
  return (
    <section>
      <h1>Repos</h1>
      {error && <p class="error" role="alert">{error}</p>}
      {repos === null ? (
        <p class="muted">Loading…</p>
      ) : repos.length === 0 ? (
        <p class="muted">No repos yet.</p>
      ) : (
        <ul class="cards" data-testid="repos">
          {repos.map((r) => (
            <li key={r.name} class="card">
              <a class="title" href={`/repos/${encodeURIComponent(r.name)}`}>{r.name}</a>
              <div class="meta">
                <code>{r.url}</code>
                <span>branch {r.default_branch}</span>
              </div>
              {r.description && <p class="small">{r.description}</p>}
            </li>
          ))}
        </ul>
      )}
      {me.user.admin && <AddRepo />}
    </section>
  );
}

function AddRepo() {
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [branch, setBranch] = useState("");
  const [check, setCheck] = useState(true);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const repo = await api.createRepo({ name, url, default_branch: branch || undefined, check });
      navigate(`/repos/${encodeURIComponent(repo.name)}`);
    } catch (err) {
      setError(message(err));
      setBusy(false);
    }
  };
  return (
    <form class="stack panel narrow" onSubmit={submit} aria-labelledby="add-repo-h">
      <h2 id="add-repo-h">Add a repo</h2>
      <label for="repo-name">Name</label>
      <input id="repo-name" required pattern="[A-Za-z0-9_\-][A-Za-z0-9._\-]*" maxLength={64} value={name}
        onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      <label for="repo-url">URL (https, ssh or a path on the kiln host)</label>
      <input id="repo-url" required value={url} onInput={(e) => setUrl((e.target as HTMLInputElement).value)} />
      <label for="repo-branch">Default branch (main if empty)</label>
      <input id="repo-branch" value={branch} onInput={(e) => setBranch((e.target as HTMLInputElement).value)} />
      <label class="check">
        <input type="checkbox" checked={check} onChange={(e) => setCheck((e.target as HTMLInputElement).checked)} />
        Check that kiln can read it first
      </label>
      {error && <p class="error" role="alert" id="add-repo-error">{error}</p>}
      <button type="submit" disabled={busy}>{busy ? "Adding…" : "Add repo"}</button>
    </form>
  );
}
