// The page's own router: URLs are real paths (deep links work on reload, kiln serves the page
// at each), moves between pages use the History API, and a same-origin link click is
// intercepted so the page is not reloaded.
import { useEffect, useState } from "preact/hooks";

const listeners = new Set<() => void>();

export function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  for (const listener of listeners) listener();
}

addEventListener("popstate", () => {
  for (const listener of listeners) listener();
});

document.addEventListener("click", (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const anchor = (e.target as Element | null)?.closest?.("a");
  if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
  const url = new URL(anchor.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname === "/login") return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});

export function usePath(): string {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const update = () => setPath(location.pathname);
    listeners.add(update);
    return () => void listeners.delete(update);
  }, []);
  return path;
}

export type Route =
  | { page: "sessions" }
  | { page: "new" }
  | { page: "session"; id: string }
  | { page: "repos" }
  | { page: "repo"; name: string }
  | { page: "join"; code: string }
  | { page: "stats" }
  | { page: "missing" };

export function route(path: string): Route {
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: "sessions" };
  if (parts[0] === "new" && parts.length === 1) return { page: "new" };
  if (parts[0] === "sessions" && parts.length === 2) return { page: "session", id: parts[1] };
  if (parts[0] === "repos" && parts.length === 1) return { page: "repos" };
  if (parts[0] === "repos" && parts.length === 2) return { page: "repo", name: parts[1] };
  if (parts[0] === "stats" && parts.length === 1) return { page: "stats" };
  if (parts[0] === "join" && parts.length === 2) return { page: "join", code: parts[1] };
  return { page: "missing" };
}
