// Signing in: kiln has no passwords. A sign-in link (`kiln login-link`, or the one `kiln up`
// prints) works once, within ten minutes, and sets the browser session cookie; this page says
// so and takes a pasted link or code.
import { useEffect, useState } from "preact/hooks";
import { api } from "../api/client";

export function SignIn() {
  const [value, setValue] = useState("");
  const [error, setError] = useState("");
  const [github, setGithub] = useState(false);
  useEffect(() => {
    api.signInMethods().then((m) => setGithub(m.github), () => undefined);
  }, []);
  const submit = (e: Event) => {
    e.preventDefault();
    const text = value.trim();
    let code = text;
    try {
      const url = new URL(text);
      code = url.searchParams.get("code") ?? "";
    } catch {
      // Not a URL: the code itself.
    }
    if (!/^[^\s/?#&]{8,}$/.test(code)) {
      setError("That is not a sign-in link or code. Run `kiln login-link` and paste what it prints.");
      return;
    }
    location.assign(`/login?code=${encodeURIComponent(code)}`);
  };
  return (
    <main id="main" class="page narrow">
      <h1>Sign in to kiln</h1>
      <p>
        Open a sign-in link: run <code>kiln login-link</code> on a machine where the kiln CLI is set up (or use the
        link <code>kiln up</code> printed). A link works once, within 10 minutes.
      </p>
      <form onSubmit={submit} class="stack" noValidate>
        <label for="signin-link">Sign-in link or code</label>
        <input
          id="signin-link"
          type="text"
          autoComplete="off"
          spellcheck={false}
          value={value}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? "signin-error" : undefined}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
        />
        {error && <p id="signin-error" class="error" role="alert">{error}</p>}
        <button type="submit">Sign in</button>
      </form>
      {github && (
        <p>
          Or <a class="button" href="/api/auth/github/start" data-testid="github-sign-in">Sign in with GitHub</a>{" "}
          <span class="muted small">(for accounts already linked to a kiln user)</span>
        </p>
      )}
    </main>
  );
}
