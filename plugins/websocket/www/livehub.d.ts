// Type declarations of livehub.js (docs/CLIENT.md).
export type LivehubState = "live" | "polling" | "offline";

export interface LivehubEvent<T = unknown> {
  id: number;
  type: string;
  /** the hub's accept time, microseconds since the Unix epoch */
  ts: number;
  data: T;
  /** only on events a client published: "user:<sub>" of the publisher (docs/PRESENCE.md) */
  src?: string;
}

export interface PresenceUser {
  user: string;
  role: string;
  /** open connections by transport: websocket, socketio, sse, longpoll */
  connections: Record<string, number>;
}

export interface PresenceChange {
  type: "online" | "offline" | "snapshot";
  user: PresenceUser | {user: string; role: string} | null;
}

/** Who is online, as far as this token may see: a live set (docs/PRESENCE.md). */
export class Presence {
  readonly size: number;
  has(user: string): boolean;
  get(user: string): PresenceUser | undefined;
  list(): PresenceUser[];
  on(handler: (change: PresenceChange, presence: Presence) => void): () => void;
}

export interface LivehubReset {
  epoch: string;
  last_id: number;
  reason: "history" | "epoch" | "future" | string;
}

export interface ConnectOptions {
  /** ws[s]://host:port of the websocket sink; default: the page's origin */
  url?: string;
  /** http[s]://host:port of the polling sink; without it there is no fallback */
  pollUrl?: string;
  namespace?: string;
  token?: string;
  /** called for the first token and again when the server says it expired or refused it */
  getToken?: () => string | Promise<string>;
  /** patterns the connection subscribes to; default ["*"] */
  types?: string[];
  /** share one connection between the tabs of this origin (default true) */
  share?: boolean;
  /** long-poll seconds (default 25); 0 polls every pollInterval seconds instead */
  pollWait?: number;
  pollInterval?: number;
  backoffMin?: number;
  backoffMax?: number;
  /** a stored stream position to resume from */
  lastId?: number;
  epoch?: string;
  /** injectables, for tests and unusual environments */
  WebSocket?: unknown;
  fetch?: typeof fetch;
  BroadcastChannel?: unknown;
  locks?: unknown;
  timers?: {setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout};
  random?: () => number;
  /** keep client.presence (default true; adds "presence:*" to types) */
  presence?: boolean;
}

export interface LivehubClient {
  readonly state: LivehubState;
  /** the stream position: every event up to this id that this client may see was delivered */
  readonly lastId: number;
  readonly epoch: string | null;
  /** "leader" (holds the connection), "follower" (receives from the leader's tab) or "closed" */
  readonly role: string;
  on<T = unknown>(pattern: string, handler: (data: T, event: LivehubEvent<T>) => void): () => void;
  on(name: "$state", handler: (state: LivehubState) => void): () => void;
  on(name: "$reset", handler: (info: LivehubReset) => void): () => void;
  on(name: "$event", handler: (event: LivehubEvent) => void): () => void;
  on(name: "$error", handler: (error: {code: string; message?: string}) => void): () => void;
  off(pattern: string, handler: (...args: any[]) => void): void;
  setToken(token: string): void;
  close(): void;
  /** who is online, kept live */
  readonly presence: Presence;
  /** publishes as the token's user; rejects with an Error whose `code` is the server's
   *  (forbidden_type, forbidden_to, rate_limited, too_large, ...) or "not_live" */
  publish(type: string, data?: unknown, to?: string | string[]): Promise<void>;
}

export function connect(options?: ConnectOptions): LivehubClient;
export function matches(pattern: string, type: string): boolean;
export function backoff(attempt: number, min?: number, max?: number, random?: () => number): number;
export function tokenClaims(token: string): Record<string, unknown> | null;

/** A toast text: {path} placeholders with "|" alternatives and a quoted default, or a function. */
export type TemplateText = string | ((data: any, event: LivehubEvent) => string);
export interface ToastTemplate {
  /** an event type, "prefix:*" or "*" */
  pattern: string;
  title?: TemplateText;
  /** left out: a short "Key: value · ..." summary of the data */
  body?: TemplateText;
  /** "chime" (needs attention) or "ping" (default) */
  tone?: string;
}
export interface EventText {title: string; body: string; tone: string}
/** The built-in templates, first match wins; pages may unshift their own. */
export const toastTemplates: ToastTemplate[];
export function describeEvent(event: LivehubEvent, templates?: ToastTemplate[]): EventText;
export function fillTemplate(template: TemplateText, event: LivehubEvent): string;
export function humanizeType(type: string): string;
export function summarize(data: unknown, max?: number): string;
declare const _default: {connect: typeof connect; matches: typeof matches; backoff: typeof backoff;
  tokenClaims: typeof tokenClaims; describeEvent: typeof describeEvent;
  toastTemplates: typeof toastTemplates; fillTemplate: typeof fillTemplate;
  humanizeType: typeof humanizeType; summarize: typeof summarize; Presence: typeof Presence};
export default _default;
