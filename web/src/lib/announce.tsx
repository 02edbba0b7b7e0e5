// One polite live region for the whole page: status changes (the agent started, stopped,
// disconnected) are read out by screen readers without moving focus.
import { useEffect, useState } from "preact/hooks";

let push: (text: string) => void = () => undefined;

export function announce(text: string): void {
  push(text);
}

export function Announcer() {
  const [text, setText] = useState("");
  useEffect(() => {
    push = (t) => {
      // Clear first, so the same message twice is read twice.
      setText("");
      requestAnimationFrame(() => setText(t));
    };
    return () => {
      push = () => undefined;
    };
  }, []);
  return (
    <div class="sr-only" role="status" aria-live="polite" data-testid="announcer">
      {text}
    </div>
  );
}
