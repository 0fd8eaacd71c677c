import type { EventSourceLike, TransportKind, WebSocketLike } from './types.js';
import { err, HeraldError } from './util.js';

/** A subscription as a transport opens it. */
export interface Spec {
  id: string;
  topics: string[];
  /** One topic, no pattern: positions are topic sequences. */
  single: boolean;
  after?: number;
  types?: string[];
  excludeOrigin?: number[];
  consumer?: string;
}

/** What a transport hands the client, one subscription at a time. */
export type Delivery =
  | { t: 'event'; e: any }
  | { t: 'gap'; from: number; to: number; topic?: string }
  | { t: 'reset'; head: number }
  | { t: 'subscribed'; recovered?: boolean; position?: number }
  | { t: 'ended'; error: HeraldError };

/** What a transport needs from the client. */
export interface Host {
  base: string;
  fetch: typeof fetch;
  WebSocket?: WebSocketLike;
  EventSource?: EventSourceLike;
  connectTimeoutMs: number;
  pollWaitMs: number;
  /** The query that authenticates a stream: `ticket=…`, `access_token=…` or ''. */
  streamAuth(): Promise<string>;
  /** An HTTP request with the token; refreshes it once on a 401. */
  http(method: string, path: string, body?: unknown, headers?: Record<string, string>, signal?: AbortSignal): Promise<any>;
  deliver(sub: string, d: Delivery): void;
  /** Server messages that belong to no request or subscription (`token_expiring`). */
  notice(m: any): void;
}

export interface Closed {
  code: number;
  reason: string;
}

export interface Transport {
  kind: TransportKind;
  /** Resolves when the connection is open with `subs` requested. */
  open(subs: Spec[]): Promise<void>;
  /** Resolves once, when the connection is gone. */
  closed: Promise<Closed>;
  sub(s: Spec): void;
  unsub(id: string): void;
  /** One operation in the WebSocket form (`{op: 'publish', …}`); resolves to the reply. */
  req(op: any): Promise<any>;
  close(code?: number, reason?: string): void;
}

/** Topics in a path: `$` (system topics) is left as it is; the server does not decode it. */
export const enc = (t: string): string => encodeURIComponent(t).replace(/%24/g, '$');

const disconnected = () => new HeraldError('disconnected', 'the connection closed before the reply');

abstract class Base {
  closed: Promise<Closed>;
  protected end!: (c: Closed) => void;
  protected gone = false;
  constructor(protected h: Host) {
    this.closed = new Promise((r) => {
      this.end = (c) => {
        if (!this.gone) {
          this.gone = true;
          this.stop();
          r(c);
        }
      };
    });
  }
  protected abstract stop(): void;
  close(code = 1000, reason = 'closed by the client'): void {
    this.end({ code, reason });
  }
  /** Times out an opening step: a blocked transport may hang rather than fail. */
  protected timeout<T>(p: Promise<T>): Promise<T> {
    let timer: any;
    return Promise.race([
      p,
      new Promise<T>((_, rej) => {
        timer = setTimeout(() => rej(new HeraldError('timeout', 'the connection did not open in time')), this.h.connectTimeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
  }
}

/** The JSON WebSocket protocol. */
export class WsTransport extends Base implements Transport {
  kind = 'websocket' as const;
  private ws: InstanceType<WebSocketLike> | undefined;
  private ref = 0;
  private pending = new Map<number, [(v: any) => void, (e: any) => void]>();

  async open(subs: Spec[]): Promise<void> {
    const W = this.h.WebSocket;
    if (!W) throw new HeraldError('unavailable', 'no WebSocket implementation');
    const q = await this.h.streamAuth();
    const url = this.h.base.replace(/^http/, 'ws') + '/v1/ws' + (q && '?' + q);
    await this.timeout(
      new Promise<void>((res, rej) => {
        const ws = (this.ws = new W(url));
        let open = false;
        ws.onopen = () => {
          open = true;
          res();
        };
        ws.onerror = () => {};
        ws.onclose = (e) => {
          if (!open) rej(new HeraldError('unavailable', `WebSocket closed before it opened (${e.code})`));
          this.end({ code: e.code, reason: e.reason });
        };
        ws.onmessage = (m) => this.message(JSON.parse(String(m.data)));
      }),
    ).catch((e) => {
      this.close();
      throw e;
    });
    subs.forEach((s) => this.sub(s));
  }

  protected stop(): void {
    for (const [, rej] of this.pending.values()) rej(disconnected());
    this.pending.clear();
    const ws = this.ws;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      try {
        ws.close();
      } catch {
        // Closing a socket that is still connecting may throw; it is dropped either way.
      }
    }
  }

  private send(o: any): void {
    if (!this.gone) this.ws!.send(JSON.stringify(o));
  }

  sub(s: Spec): void {
    const o: any = { op: 'subscribe', id: s.id, ref: 's:' + s.id };
    if (s.single) o.topic = s.topics[0];
    else o.topics = s.topics;
    if (s.after !== undefined && !s.consumer) o.after = s.after;
    if (s.types) o.types = s.types;
    if (s.excludeOrigin) o.exclude_origin = s.excludeOrigin;
    if (s.consumer) o.consumer = s.consumer;
    this.send(o);
  }

  unsub(id: string): void {
    this.send({ op: 'unsubscribe', id });
  }

  req(op: any): Promise<any> {
    if (this.gone) return Promise.reject(disconnected());
    const ref = ++this.ref;
    return new Promise((res, rej) => {
      this.pending.set(ref, [res, rej]);
      this.send({ ...op, ref });
    });
  }

  private message(m: any): void {
    const h = this.h;
    const ref = m.ref;
    const p = typeof ref === 'number' && this.pending.get(ref);
    switch (m.type) {
      case 'event':
        return h.deliver(m.sub, { t: 'event', e: m });
      case 'events':
        return m.events.forEach((e: any) => h.deliver(m.sub, { t: 'event', e }));
      case 'gap':
        return h.deliver(m.sub, { t: 'gap', from: m.from, to: m.to, topic: m.topic });
      case 'subscribed':
        h.deliver(m.id, { t: 'subscribed', recovered: m.recovered });
        if (m.reset) h.deliver(m.id, { t: 'reset', head: m.reset.head });
        return;
      case 'error': {
        const e = err(m.code, m.message);
        if (m.sub) return h.deliver(m.sub, { t: 'ended', error: e });
        if (typeof ref === 'string' && ref.startsWith('s:')) return h.deliver(ref.slice(2), { t: 'ended', error: e });
        if (p) {
          this.pending.delete(ref);
          return p[1](e);
        }
        return h.notice(m);
      }
    }
    if (p) {
      this.pending.delete(ref);
      p[0](m);
    } else h.notice(m);
  }
}

/** The query of an HTTP stream or poll of `s`. */
export function streamPath(s: Spec): [string, URLSearchParams] {
  const q = new URLSearchParams();
  if (!s.single) q.set('topics', s.topics.join(','));
  if (s.types) q.set('types', s.types.join(','));
  if (s.excludeOrigin) q.set('exclude_origin', s.excludeOrigin.join(','));
  return [s.single ? `/v1/topics/${enc(s.topics[0]!)}/events` : '/v1/events', q];
}

/** Operations over plain HTTP requests, answered in the WebSocket form. */
abstract class HttpOps extends Base {
  req(op: any): Promise<any> {
    const h = this.h;
    switch (op.op) {
      case 'publish': {
        const one = (e: any) => ({ type: e.type, data: e.data, correlation_id: e.correlation_id });
        const key = op.idempotency_key;
        const topic = op.topic ?? op.events[0].topic;
        if (op.events && op.events.some((e: any) => e.topic !== topic))
          return Promise.reject(new HeraldError('invalid', 'over HTTP a batch goes to one topic'));
        return h.http('POST', `/v1/topics/${enc(topic)}/events`, op.events ? op.events.map(one) : one(op), key ? { 'Idempotency-Key': key } : {});
      }
      case 'ack':
        return h.http('POST', `/v1/consumers/${enc(op.consumer)}/ack`, op.seqs ? { seqs: op.seqs } : { seq: op.seq });
      case 'heartbeat':
      case 'leave': {
        const { op: name, ...body } = op;
        return h.http('POST', `/v1/presence/${name}`, body);
      }
      case 'presence':
        return h.http('GET', `/v1/topics/${enc(op.topic)}/presence`);
      case 'consumers':
        return h.http('GET', '/v1/consumers');
    }
    return Promise.reject(new HeraldError('invalid', `${op.op} needs the WebSocket transport`));
  }
  unsub(id: string): void {
    this.drop(id);
  }
  protected abstract drop(id: string): void;
}

/** Server-Sent Events (one stream per subscription) for receiving, HTTP for the rest. */
export class SseTransport extends HttpOps implements Transport {
  kind = 'sse' as const;
  private streams = new Map<string, InstanceType<EventSourceLike>>();

  async open(subs: Spec[]): Promise<void> {
    if (!this.h.EventSource) throw new HeraldError('unavailable', 'no EventSource implementation');
    // Without subscriptions there is no stream to open: the server answering
    // is what tells that this transport works.
    if (!subs.length) await this.timeout(this.h.http('GET', '/readyz'));
    await this.timeout(Promise.all(subs.map((s) => this.stream(s)))).catch((e) => {
      this.close();
      throw e;
    });
  }

  sub(s: Spec): void {
    this.stream(s).catch(() => this.end({ code: 1006, reason: 'stream failed' }));
  }

  protected drop(id: string): void {
    this.streams.get(id)?.close();
    this.streams.delete(id);
  }

  protected stop(): void {
    for (const id of [...this.streams.keys()]) this.drop(id);
  }

  private async stream(s: Spec): Promise<void> {
    const [path, q] = streamPath(s);
    q.set('named', 'false');
    if (s.after !== undefined) q.set('after', String(s.after));
    const auth = await this.h.streamAuth();
    if (this.gone) throw disconnected();
    const es = new this.h.EventSource!(`${this.h.base}${path}?${q}${auth && '&' + auth}`);
    this.streams.set(s.id, es);
    return new Promise((res, rej) => {
      let up = false;
      let reset = false;
      es.onmessage = (m) => {
        const d = JSON.parse(m.data);
        const h = this.h;
        if (d.connected) {
          up = true;
          res();
          h.deliver(s.id, { t: 'subscribed', position: d.connected.position, recovered: s.after !== undefined && !reset });
        } else if (d.gap) h.deliver(s.id, { t: 'gap', ...d.gap });
        else if (d.reset) {
          reset = true;
          h.deliver(s.id, { t: 'reset', head: d.reset.head });
        }
        // The token expired: the next connection takes a fresh one.
        else if (d.expired) this.end({ code: 4001, reason: 'token expired' });
        else h.deliver(s.id, { t: 'event', e: d });
      };
      // The client resumes by itself (a fresh ticket, `after` its own
      // position): EventSource's reconnect would reuse a spent ticket.
      es.onerror = () => {
        if (!up) rej(new HeraldError('unavailable', 'the event stream did not open'));
        this.end({ code: 1006, reason: 'event stream closed' });
      };
    });
  }
}

/** Long-polling, one loop per subscription, HTTP for the rest. */
export class PollTransport extends HttpOps implements Transport {
  kind = 'poll' as const;
  private loops = new Map<string, AbortController>();

  async open(subs: Spec[]): Promise<void> {
    if (!subs.length) await this.timeout(this.h.http('GET', '/readyz'));
    const first = await this.timeout(Promise.all(subs.map((s) => this.poll(s, 0)))).catch((e) => {
      this.close();
      throw e;
    });
    subs.forEach((s, i) => this.loop(s, first[i]!));
  }

  sub(s: Spec): void {
    this.poll(s, 0).then(
      (after) => this.loop(s, after),
      () => this.end({ code: 1006, reason: 'poll failed' }),
    );
  }

  protected drop(id: string): void {
    this.loops.get(id)?.abort();
    this.loops.delete(id);
  }

  protected stop(): void {
    for (const id of [...this.loops.keys()]) this.drop(id);
  }

  private async loop(s: Spec, after: number): Promise<void> {
    try {
      while (!this.gone && this.loops.has(s.id)) after = await this.poll({ ...s, after }, this.h.pollWaitMs);
    } catch (e) {
      if (this.loops.has(s.id)) this.end({ code: 1006, reason: 'poll failed' });
    }
  }

  /** One poll; delivers what it got and returns the next `after`. */
  private async poll(s: Spec, wait: number): Promise<number> {
    const [path, q] = streamPath(s);
    // Without a position, `last=1` answers at once with the position of the last
    // event: "from now" (the event itself is not delivered).
    if (s.after === undefined) q.set('last', '1');
    else q.set('after', String(s.after));
    q.set('wait', String(wait));
    let c = this.loops.get(s.id);
    if (!c) this.loops.set(s.id, (c = new AbortController()));
    const r = await this.h.http('GET', `${path}?${q}`, undefined, {}, c.signal);
    const h = this.h;
    if (r.reset) h.deliver(s.id, { t: 'reset', head: r.reset.head });
    if (!wait) h.deliver(s.id, { t: 'subscribed', position: s.after === undefined ? r.next_after : undefined, recovered: s.after !== undefined && !r.reset });
    if (s.after !== undefined) {
      for (const e of r.events) h.deliver(s.id, e.gap ? { t: 'gap', ...e.gap } : { t: 'event', e });
    }
    return r.next_after;
  }
}
