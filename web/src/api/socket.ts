// The WebSocket half of the public API: a session's socket, which replays the log after the
// last seq this page has and then follows it live, reconnecting by itself (after a network
// loss or a server restart) from that seq, so no event is shown twice or missed; and the user
// socket, which carries typing on the new-session page so a sandbox warms up.
import type { ClientFrame, Ephemeral, EventEnvelope, ServerFrame, UserClientFrame, UserServerFrame } from "./types";

export type Link = "connecting" | "live" | "reconnecting";

function wsUrl(path: string): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Waits between reconnects: quick at first, at most 5 s. */
function backoff(attempt: number): number {
  return Math.min(5_000, 250 * 2 ** Math.min(attempt, 5));
}

/** Without any frame (the server pings every 25 s), a socket is taken for dead after this. */
const SILENCE_MS = 60_000;

export interface SessionHandlers {
  /** Events in seq order, each once; a batch per animation frame at most. */
  events(batch: EventEnvelope[]): void;
  ephemeral(event: Ephemeral): void;
  link(state: Link): void;
  /** The head seq the server had when the socket opened: replay ends there. */
  hello?(headSeq: number): void;
  /** The socket will not come back (no access any more). */
  fatal?(message: string): void;
}

export class SessionSocket {
  private socket: WebSocket | null = null;
  private lastSeq: number;
  private attempt = 0;
  private closed = false;
  private pending: EventEnvelope[] = [];
  private flushScheduled = false;
  private retryTimer: number | undefined;
  private silenceTimer: number | undefined;

  constructor(
    private readonly session: string,
    private readonly handlers: SessionHandlers,
    afterSeq = 0,
  ) {
    this.lastSeq = afterSeq;
    this.open();
  }

  /** The seq of the last event handed over. */
  get seq(): number {
    return this.lastSeq;
  }

  send(frame: ClientFrame): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  close(): void {
    this.closed = true;
    window.clearTimeout(this.retryTimer);
    window.clearTimeout(this.silenceTimer);
    this.socket?.close(1000);
  }

  private open(): void {
    this.handlers.link(this.attempt === 0 ? "connecting" : "reconnecting");
    const path = `/api/sessions/${encodeURIComponent(this.session)}/ws?after_seq=${this.lastSeq}`;
    const socket = new WebSocket(wsUrl(path));
    this.socket = socket;
    this.watch();
    socket.onmessage = (message) => {
      this.watch();
      let frame: ServerFrame;
      try {
        frame = JSON.parse(message.data as string) as ServerFrame;
      } catch {
        return;
      }
      switch (frame.type) {
        case "hello":
          this.attempt = 0;
          this.handlers.link("live");
          this.handlers.hello?.(frame.head_seq);
          break;
        case "event": {
          // A replay after a reconnect starts after our seq; anything older is a duplicate.
          if (frame.seq <= this.lastSeq) return;
          this.lastSeq = frame.seq;
          this.pending.push({ seq: frame.seq, at_ms: frame.at_ms, event: frame.event });
          this.schedule();
          break;
        }
        case "ephemeral":
          this.handlers.ephemeral(frame.event);
          break;
        default:
          break;
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      window.clearTimeout(this.silenceTimer);
      this.flush();
      if (this.closed) return;
      // 1008/4xxx would be policy; an upgrade refused (404: no access) closes with 1006 before
      // a hello, indistinguishable from a network error, so keep trying with the backoff.
      this.handlers.link("reconnecting");
      this.retryTimer = window.setTimeout(() => this.open(), backoff(this.attempt++));
    };
  }

  /** Restarts the silence timer: a socket that hears nothing for a minute is reopened. */
  private watch(): void {
    window.clearTimeout(this.silenceTimer);
    this.silenceTimer = window.setTimeout(() => this.socket?.close(), SILENCE_MS);
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    requestAnimationFrame(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.handlers.events(batch);
  }
}

/** The user socket (`/api/ws`): typing for a repo before a session exists. */
export class UserSocket {
  private socket: WebSocket | null = null;
  private closed = false;
  private attempt = 0;
  private retryTimer: number | undefined;

  constructor(private readonly onFrame: (frame: UserServerFrame) => void) {
    this.open();
  }

  send(frame: UserClientFrame): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  close(): void {
    this.closed = true;
    window.clearTimeout(this.retryTimer);
    this.socket?.close(1000);
  }

  private open(): void {
    const socket = new WebSocket(wsUrl("/api/ws"));
    this.socket = socket;
    socket.onmessage = (message) => {
      try {
        const frame = JSON.parse(message.data as string) as UserServerFrame;
        if (frame.type === "hello") this.attempt = 0;
        this.onFrame(frame);
      } catch {
        // Ignore a frame that is not JSON.
      }
    };
    socket.onclose = () => {
      if (this.closed || this.socket !== socket) return;
      this.retryTimer = window.setTimeout(() => this.open(), backoff(this.attempt++));
    };
  }
}
