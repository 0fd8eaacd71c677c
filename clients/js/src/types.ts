import type { HeraldError } from './util.js';

/** Event type → payload type, for `createClient<EventMap>()`. */
export type EventMap = Record<string, unknown>;

/** One event as the application receives it. */
export interface HeraldEvent<M extends EventMap = EventMap, K extends keyof M & string = keyof M & string> {
  /** Global sequence: dense and increasing across all topics. */
  seq: number;
  topic: string;
  /** Sequence within the topic. */
  topicSeq: number;
  type: K;
  data: M[K];
  /** Nanoseconds since the epoch (a JavaScript number: rounded to about 256 ns). */
  timestampNs: number;
  origin?: number;
  correlationId?: string;
}

/** The union of every typed event of `M`, discriminated by `type`. */
export type AnyEvent<M extends EventMap> = { [K in keyof M & string]: HeraldEvent<M, K> }[keyof M & string];

export type TransportKind = 'websocket' | 'sse' | 'poll';
export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface StateChange {
  state: State;
  /** The transport in use (`connected`), or that was in use (`disconnected`). */
  transport: TransportKind | null;
  /** Consecutive failed attempts so far. */
  attempt: number;
  /** `disconnected`: the close code and reason, when the connection had one. */
  code?: number;
  reason?: string;
  /** `disconnected`: how long until the next attempt. */
  delayMs?: number;
  error?: HeraldError;
}

/** Where subscription positions are kept between runs. */
export interface CursorStore {
  get(key: string): number | undefined | Promise<number | undefined>;
  set(key: string, position: number): void | Promise<void>;
}

/** A constructor with the standard browser `WebSocket` interface (the `ws` package's fits). */
export type WebSocketLike = new (url: string) => {
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
};

/** A constructor with the standard browser `EventSource` interface. */
export type EventSourceLike = new (url: string) => {
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  close(): void;
};

export interface QueueLimits {
  /** Most publishes waiting (default 1000). */
  maxCount?: number;
  /** Most bytes of JSON waiting (default 1 MiB). */
  maxBytes?: number;
  /** A publish waiting longer is rejected with code `expired` (default 60 000 ms). */
  maxAgeMs?: number;
}

export interface ClientOptions<M extends EventMap = EventMap> {
  /** The server's base URL: `https://events.example` (WebSocket URLs are derived). */
  url: string;
  token?: string;
  /** Called for a token at connect and before the current one expires. */
  getToken?: () => string | Promise<string>;
  /** Tried in this order when connecting (default: all three). */
  transports?: TransportKind[];
  /** For runtimes without a global one (Node 20: `require('ws')`). */
  WebSocket?: WebSocketLike;
  EventSource?: EventSourceLike;
  fetch?: typeof fetch;
  /** Full-jitter exponential backoff between attempts. */
  backoff?: { minMs?: number; maxMs?: number; stableMs?: number };
  /** A transport that has not opened by then counts as failed (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Refresh a token this long before its expiry (default 30 000 ms). */
  refreshBeforeMs?: number;
  /** Subscription positions (default: in memory). */
  store?: CursorStore;
  /** Queue publishes made while disconnected (off by default: they reject). */
  offlineQueue?: QueueLimits | boolean;
  /** Long-poll hold (default 25 000 ms). */
  pollWaitMs?: number;
  /** Presence heartbeat period (default 10 000 ms; sessions expire after 30 s). */
  heartbeatMs?: number;
  /** Acknowledgements are gathered this long before being sent (default 20 ms). */
  ackDelayMs?: number;
  /** Checks each event before a handler sees it: false or a throw drops it (`invalid`). */
  validate?: (event: HeraldEvent<M>) => boolean | void;
  /** Start connecting at once (default true); otherwise at `connect()`. */
  autoConnect?: boolean;
}

export interface SubscribeOptions {
  /** Start after this position (topic sequence for one topic, global otherwise). */
  after?: number;
  /** The key of this subscription's position in the store (default: its topics). */
  key?: string;
  types?: string[];
  excludeOrigin?: number[];
}

export interface PublishOptions {
  correlationId?: string;
  /** Generated when absent: a retry with the same key is stored once. */
  idempotencyKey?: string;
}

export interface PublishResult {
  seq: number;
  topicSeq: number;
  /** The server had already stored this key: nothing was stored again. */
  duplicate?: boolean;
}

export interface PresenceSession {
  client_id: string;
  user?: string;
  device?: string;
  metadata?: unknown;
  connected_at_ns?: number;
  last_heartbeat_ns?: number;
}

export interface SubscriptionEvents {
  subscribed: { recovered: boolean; transport: TransportKind };
  /** A resubscription continued exactly where the last one stopped. */
  recovered: { position: number | undefined };
  gap: { from: number; to: number; topic?: string };
  /** The position was past the end of the log: re-sync state, then go on from `head`. */
  reset: { head: number };
  /** The server ended the subscription (e.g. outside a refreshed token's grants). */
  error: HeraldError;
  invalid: { event: HeraldEvent; error?: unknown };
}

export interface ClientEvents {
  state: StateChange;
  connecting: StateChange;
  connected: StateChange;
  disconnected: StateChange;
  closed: StateChange;
  error: HeraldError;
  /** The token was replaced on the open connection; `exp` in unix seconds. */
  token: { exp: number | undefined };
}
