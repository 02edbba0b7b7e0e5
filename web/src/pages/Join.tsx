// A share link: `/join/{code}` redeems the code (the caller gains the link's role) and opens
// the session.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";
import { navigate } from "../lib/router";
import { message } from "../lib/util";

export function Join({ code }: { code: string }) {
  const [error, setError] = useState("");
  useEffect(() => {
    api.join(code).then(
      (session) => navigate(`/sessions/${encodeURIComponent(session.id)}`, true),
      (e: unknown) => setError(message(e)),
    );
  }, [code]);
  return (
    <section>
      <h1>Joining a session</h1>
      {error ? <p class="error" role="alert">{error}</p> : <p class="muted">Joining…</p>}
    </section>
  );
}
