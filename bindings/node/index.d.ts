// Type declarations of herald-embedded (index.js).
/// <reference types="node" />
import { EventEmitter } from 'node:events';

/** Where libherald was loaded from; see load(). */
export interface LoadOptions {
  /** An explicit path to libherald (tried first). */
  path?: string;
}

/**
 * Loads libherald now (otherwise it is loaded on first use). Tries, in order:
 * `options.path`, `$HERALD_LIB`, `prebuilds/<platform>-<arch>/` in this
 * package, the system loader (`libherald.so.0`). Throws an Error listing
 * every path tried if none loads. Returns the path loaded.
 */
export function load(options?: LoadOptions): string;
/** The path libherald was loaded from, or null before it is loaded. */
export function libraryPath(): string | null;
/** libherald's version, e.g. "0.1.0". */
export function version(): string;
/** The static description of a result code. */
export function strerror(code: number): string;

/** Stable result codes of include/herald.h. */
export const codes: Readonly<{
  OK: 0; NULL: 1; INVALID_HANDLE: 2; INVALID_ARGUMENT: 3; INVALID_UTF8: 4; INVALID_TOPIC: 5; INVALID_FILTER: 6;
  INVALID_EVENT_TYPE: 7; INVALID_CORRELATION: 8; PAYLOAD_TOO_LARGE: 9; NEEDS_SINGLE_TOPIC: 10; INVALID_CONFIG: 11;
  BUFFER_TOO_SMALL: 12; TIMEOUT: 13; BUSY: 14; NO_CLAIM: 15; UNKNOWN_CONSUMER: 16; NOT_A_CONSUMER: 17; ACK: 18;
  CHECKPOINT: 19; PRESENCE: 20; LOG: 21; IO: 22; CORRUPT: 23; PANIC: 24; CANCELLED: 25;
}>;

/** When the log is fsynced. */
export const Durability: Readonly<{ NEVER: 0; INTERVAL: 1; ALWAYS: 2 }>;
export type DurabilityMode = 0 | 1 | 2;

/** A failed call: `code` is one of `codes`. */
export class HeraldError extends Error {
  readonly name: 'HeraldError';
  readonly code: number;
  /** With BUFFER_TOO_SMALL: the size the delivery needs. */
  readonly needed?: number;
  constructor(code: number, message?: string, needed?: number);
}

export interface BrokerOptions {
  /** The broker's directory (created if missing; locked while open). */
  dataDir: string;
  ringCapacity?: number;
  maxPayload?: number;
  segmentSize?: number;
  durability?: DurabilityMode;
  retentionMaxRecords?: number;
  prefault?: boolean;
}

export interface Filter {
  /** Topic patterns (`*` one token, `>` the rest). */
  topics?: string[];
  /** Event types to keep (all when omitted). */
  types?: string[];
  /** Skip events published with this origin. */
  excludeOrigin?: number;
}

/** Where a subscription starts. `time` is in ns since the Unix epoch. */
export type Start =
  | { now: true }
  | { seq: number }
  | { topicSeq: number }
  | { time: number }
  | { lastN: number };

export interface PublishOptions {
  origin?: number;
  correlation?: string;
}

export interface Published {
  seq: number;
  topicSeq: number;
}

export interface HeraldEvent {
  gap?: undefined;
  seq: number;
  topicSeq: number;
  timestampNs: number;
  origin: number;
  topic: string;
  type: string;
  /** '' when none. */
  correlation: string;
  payload: Buffer;
}

/** Events `from..=to` were deleted by retention before this subscriber read them. */
export interface Gap {
  gap: true;
  from: number;
  to: number;
  topic: string;
}

export type Delivery = HeraldEvent | Gap;

export interface Metrics {
  published: number;
  delivered: number;
  lagged_fallbacks: number;
  gaps: number;
  replayed: number;
  active_subscribers: number;
  latency_p50_ns: number;
  latency_p95_ns: number;
  latency_p99_ns: number;
  latency_max_ns: number;
}

export interface PresenceEntry {
  client_id: string;
  user: string;
  device: string;
  metadata: unknown;
  connected_at_ns: number;
  last_heartbeat_ns: number;
}

export class Broker {
  /** Opens (creating or recovering) a broker. */
  static open(options: BrokerOptions): Broker;
  /** A non-owning view of a broker opened elsewhere (e.g. in another worker thread). */
  static fromAddress(address: number): Broker;
  /** The handle's address: pass it to worker threads. */
  readonly address: number;
  /** Flushes and closes (owning handle only). */
  close(): void;
  publisher(topic: string): Publisher;
  subscribe(filter: Filter, start?: Start): Subscriber;
  /** The durable consumer `name`: resumes after its last ack, or at `start` if new. */
  consumer(name: string, filter: Filter, start?: Start): Subscriber;
  nextSeq(): number;
  metrics(): Metrics;
  consumerCheckpoint(name: string): number;
  presenceJoin(topic: string, clientId: string, user?: string, device?: string, metadata?: string): void;
  presenceLeave(topic: string, clientId: string): boolean;
  presence(topic: string): PresenceEntry[];
}

export class Publisher {
  readonly address: number;
  /** Publishes a copy of `payload`. */
  publish(eventType: string, payload: Buffer | Uint8Array | string, opts?: PublishOptions): Published;
  /** Claim → write → commit: `fill` writes `size` bytes in place (the view is valid only during fill). */
  publishWith(eventType: string, size: number, fill: (view: Uint8Array) => void, opts?: PublishOptions): Published;
  close(): void;
}

export class Subscriber extends EventEmitter implements AsyncIterable<Delivery> {
  readonly address: number;
  /** Whether close() was called. */
  readonly closed: boolean;
  /** The next delivery available now, or null (never blocks). */
  tryNext(): Delivery | null;
  /**
   * The next delivery, waiting in the event loop (no thread): null once
   * closed. With `timeoutMs` >= 0, rejects with a HeraldError of code
   * TIMEOUT if nothing arrives in time.
   */
  next(timeoutMs?: number): Promise<Delivery | null>;
  /** The raw blocking call: copies the next delivery into `buf`, waiting up to `timeoutMs`. */
  nextInto(buf: Buffer, timeoutMs?: number): Delivery;
  [Symbol.asyncIterator](): AsyncGenerator<Delivery, void, undefined>;
  ack(seq: number): void;
  ackUpTo(seq: number): void;
  lag(): { behind: number; live: boolean };
  /** Frees the subscriber at once; pending next() calls resolve with null. */
  close(): Promise<void>;

  on(event: 'event', listener: (e: HeraldEvent) => void): this;
  on(event: 'gap', listener: (g: Gap) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'event', listener: (e: HeraldEvent) => void): this;
  once(event: 'gap', listener: (g: Gap) => void): this;
  once(event: 'error', listener: (err: Error) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: 'event', listener: (e: HeraldEvent) => void): this;
  off(event: 'gap', listener: (g: Gap) => void): this;
  off(event: 'error', listener: (err: Error) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}
