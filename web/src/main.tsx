// The web UI's entry: who is signed in, the page frame, and the page for the URL.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiFailure, api } from "./api/client";
import type { Me } from "./api/types";
import { route, usePath } from "./lib/router";
import { Announcer } from "./lib/announce";
import { SignIn } from "./pages/SignIn";
import { Sessions } from "./pages/Sessions";
import { NewSession } from "./pages/NewSession";
import { SessionPage } from "./pages/Session";
import { Repos } from "./pages/Repos";
import { RepoPage } from "./pages/Repo";
import { Join } from "./pages/Join";
import { Stats } from "./pages/Stats";
import "./styles.css";

function App() {
  const [me, setMe] = useState<Me | null | "signed-out">(null);
  const [error, setError] = useState("");
  const path = usePath();
  useEffect(() => {
    api.me().then(setMe, (e: unknown) => {
      if (e instanceof ApiFailure && e.status === 401) setMe("signed-out");
      else setError(e instanceof Error ? e.message : String(e));
    });
  }, []);
  if (error) return <main class="page"><p role="alert" class="error">{error}</p></main>;
  if (me === null) return <main class="page" aria-busy="true"><p class="muted">Loading…</p></main>;
  if (me === "signed-out") return <SignIn />;
  const current = route(path);
  const section =
    current.page === "repos" || current.page === "repo"
      ? "repos"
      : current.page === "new" || current.page === "stats"
        ? current.page
        : "sessions";
  const signOut = async () => {
    await api.logout().catch(() => undefined);
    location.assign("/");
  };
  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <a class="brand" href="/" aria-label="kiln: sessions">kiln</a>
        <nav aria-label="Main">
          <a href="/" aria-current={section === "sessions" ? "page" : undefined}>Sessions</a>
          <a href="/new" aria-current={section === "new" ? "page" : undefined}>New session</a>
          <a href="/repos" aria-current={section === "repos" ? "page" : undefined}>Repos</a>
          <a href="/stats" aria-current={section === "stats" ? "page" : undefined}>Stats</a>
        </nav>
        <div class="who">
          <span class="me" data-testid="me">{me.user.display_name || me.user.name}</span>
          <button type="button" class="link" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <main id="main" class="page" tabIndex={-1}>
        {current.page === "sessions" && <Sessions me={me} />}
        {current.page === "new" && <NewSession />}
        {current.page === "session" && <SessionPage key={current.id} id={current.id} me={me} />}
        {current.page === "repos" && <Repos me={me} />}
        {current.page === "repo" && <RepoPage key={current.name} name={current.name} me={me} />}
        {current.page === "join" && <Join code={current.code} />}
        {current.page === "stats" && <Stats />}
        {current.page === "missing" && (
          <section><h1>Not found</h1><p>There is no page at this address. <a href="/">Sessions</a></p></section>
        )}
      </main>
      <Announcer />
    </>
  );
}

render(<App />, document.getElementById("app")!);
