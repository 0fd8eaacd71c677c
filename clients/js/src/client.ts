import { PollTransport, SseTransport, streamPath, WsTransport } from './transports.js';
import type { Delivery, Host, Spec, Transport } from './transports.js';
import type {
  AnyEvent, ClientEvents, ClientOptions, CursorStore, EventMap, HeraldEvent, PresenceSession, PublishOptions,
  PublishResult, QueueLimits, State, StateChange, SubscribeOptions, SubscriptionEvents, TransportKind,
} from './types.js';
import { Emitter, HeraldAuthError, HeraldError, jwtExp, uuid } from './util.js';

export type Handler<M extends EventMap> = (event: AnyEvent<M>) => unknown;

/** Positions are topic sequences for one topic, global sequences otherwise. */
const isSingle = (topics: string[]) => topics.length === 1 && !/[*>]/.test(topics[0]!);
const closedError = () => new HeraldError('closed', 'the client is closed');

/** Public shape of an event from the wire's (`event_type` over WebSocket, `type` over HTTP). */
function toEvent(e: any): HeraldEvent {
  const o: HeraldEvent = {
    seq: e.seq, topic: e.topic, topicSeq: e.topic_seq, type: e.event_type ?? e.type, data: e.data, timestampNs: e.timestamp_ns,
  };
  if (e.origin) o.origin = e.origin;
  if (e.correlation_id) o.correlationId = e.correlation_id;
  return o;
}

/** One subscription: its position, and its deliveries run one at a time, in order. */
export class Subscription<M extends EventMap = EventMap> extends Emitter<SubscriptionEvents> {
  /** @internal the highest position received (duplicates at or below it are dropped) */
  seen: number | undefined;
  /** @internal */ loaded = false;
  /** @internal */ started = false;
  /** @internal */ on_: Transport | undefined;
  /** Duplicates the client dropped (redeliveries at or below the position). */
  dropped = 0;
  /** Resolves when the server has accepted the subscription the first time;
   *  rejects if the server refused it. */
  readonly ready: Promise<void>;
  /** @internal */ up!: () => void;
  /** @internal */ down!: (e: HeraldError) => void;
  private chain: Promise<unknown> = Promise.resolve();

  /** @internal */
  constructor(
    private readonly c: HeraldClient<M>,
    readonly id: string,
    readonly topics: string[],
    readonly single: boolean,
    /** @internal */ readonly handler: Handler<M>,
    /** @internal */ readonly opts: SubscribeOptions & { resync?: (position: number) => unknown },
    readonly consumer?: string,
  ) {
    super();
    this.ready = new Promise((r, j) => {
      this.up = r;
      this.down = j;
    });
    // Not awaiting `ready` is fine: the refusal is also an `error` event.
    this.ready.catch(() => {});
  }

  /** The last position delivered or skipped (undefined before the first). */
  get position(): number | undefined {
    return this.seen;
  }

  /** @internal */
  get key(): string | undefined {
    return this.consumer ? undefined : this.opts.key ?? this.topics.join(',');
  }

  /** @internal queues `f` after the deliveries before it */
  run(f: () => unknown): void {
    this.chain = this.chain.then(f).catch((e) => this.c.emit('error', e instanceof HeraldError ? e : new HeraldError('handler', String(e?.message ?? e))));
  }

  unsubscribe(): void {
    this.c.drop(this);
  }
}

/** The live set of sessions present on a topic. */
export class PresenceWatch extends Emitter<{ change: PresenceSession[] }> {
  members = new Map<string, PresenceSession>();
  /** @internal */ close_!: () => void;
  get list(): PresenceSession[] {
    return [...this.members.values()];
  }
  close(): void {
    this.close_();
  }
}

export interface PresenceHandle {
  clientId: string;
  leave(): Promise<void>;
}

interface Item {
  op: any;
  res: (v: any) => void;
  rej: (e: any) => void;
  at: number;
  size: number;
  auto: boolean;
}

export class HeraldClient<M extends EventMap = EventMap> extends Emitter<ClientEvents> {
  state: State = 'disconnected';
  /** The transport in use while connected. */
  transport: TransportKind | null = null;
  private o: Required<Pick<ClientOptions<M>, 'connectTimeoutMs' | 'refreshBeforeMs' | 'pollWaitMs' | 'heartbeatMs' | 'ackDelayMs'>> & ClientOptions<M>;
  private t: Transport | undefined;
  private subs = new Map<string, Subscription<M>>();
  private n = 0;
  private store: CursorStore;
  private q: Required<QueueLimits> | undefined;
  private queue: Item[] = [];
  private retry: Item[] = [];
  private acks = new Map<string, number[]>();
  private joins = new Map<string, any>();
  private timers: Record<string, any> = {};
  private tok: string | undefined;
  private tokP: Promise<string> | undefined;
  private stale = false;
  /** `exp` of the token the open stream authenticated with (or last refreshed
   *  to): an HTTP call may have fetched a newer `tok` meanwhile, which the
   *  stream does not know about. */
  private streamExp: number | undefined;
  /** Deliveries from a transport not (or no longer) adopted: replayed in
   *  order once it is, dropped if it fails (positions did not move, so the
   *  next transport delivers them again). `null` while one is adopted. */
  private held: [string, Delivery][] | null = [];
  private noTickets = false;
  private noIdem = false;
  private attempt = 0;
  private running = false;
  private offline = false;
  private everConnected = false;
  private wake: (() => void) | undefined;
  private host: Host;
  private unlisten: (() => void) | undefined;

  constructor(options: ClientOptions<M>) {
    super();
    const g = globalThis as any;
    this.o = { connectTimeoutMs: 10000, refreshBeforeMs: 30000, pollWaitMs: 25000, heartbeatMs: 10000, ackDelayMs: 20, ...options };
    this.tok = options.token;
    const m = new Map<string, number>();
    this.store = options.store ?? { get: (k) => m.get(k), set: (k, v) => void m.set(k, v) };
    const oq = options.offlineQueue;
    if (oq) this.q = { maxCount: 1000, maxBytes: 1 << 20, maxAgeMs: 60000, ...(oq === true ? {} : oq) };
    const base = options.url.replace(/\/+$/, '');
    this.host = {
      base,
      fetch: options.fetch ?? ((...a) => g.fetch(...a)),
      WebSocket: options.WebSocket ?? g.WebSocket,
      EventSource: options.EventSource ?? g.EventSource,
      connectTimeoutMs: this.o.connectTimeoutMs,
      pollWaitMs: this.o.pollWaitMs,
      streamAuth: () => this.streamAuth(),
      http: (...a) => this.http(...a),
      deliver: (id, d) => this.deliver(id, d),
      notice: (m) => this.notice(m),
    };
    const nav = g.navigator;
    if (g.addEventListener && nav && 'onLine' in nav) {
      this.offline = nav.onLine === false;
      const off = () => {
        this.offline = true;
        this.t?.close(1000, 'offline');
      };
      const on = () => {
        this.offline = false;
        this.attempt = 0;
        this.wake?.();
      };
      g.addEventListener('offline', off);
      g.addEventListener('online', on);
      this.unlisten = () => {
        g.removeEventListener('offline', off);
        g.removeEventListener('online', on);
      };
    }
    if (options.autoConnect !== false) this.connect();
  }

  /** Starts connecting (done by the constructor unless `autoConnect: false`). */
  connect(): void {
    if (!this.running && this.state !== 'closed') {
      this.running = true;
      this.loop();
    }
  }

  /** Resolves when connected (now or at the next connection); rejects if the client closes first. */
  ready(): Promise<void> {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(closedError());
    return new Promise((res, rej) => {
      const offs = [
        this.on('connected', () => (offs.forEach((f) => f()), res())),
        this.on('closed', (c) => (offs.forEach((f) => f()), rej(c.error ?? closedError()))),
      ];
    });
  }

  /** Leaves presence sessions, sends pending acknowledgements, and closes for good. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    if (this.t) {
      await Promise.allSettled([...this.joins.values()].map((p) => this.call({ op: 'leave', topic: p.topic, client_id: p.client_id })));
      await this.flushAcks();
    }
    this.shut();
  }

  // ---- subscriptions ----

  /** Receives the events of a topic, a pattern or several, each once, in order, from
   *  `after`, else the stored position, else from now; resumes by itself. */
  subscribe(topics: string | string[], handler: Handler<M>, options: SubscribeOptions = {}): Subscription<M> {
    return this.add(topics, handler, options);
  }

  /** Reads the current position, lets `load` build the application's state as of
   *  (at least) that position, then subscribes after it (or after the position `load`
   *  returns). `load` runs again, before later events, on a `reset` or a `gap`. */
  async sync(
    topics: string | string[],
    load: (position: number) => unknown,
    handler: Handler<M>,
    options: SubscribeOptions = {},
  ): Promise<Subscription<M>> {
    const list = typeof topics === 'string' ? [topics] : topics;
    const head = await this.head({ id: '', topics: list, single: isSingle(list), ...options });
    const p = await load(head);
    const s = this.add(list, handler, { ...options, after: typeof p === 'number' ? p : head, resync: load });
    await s.ready;
    return s;
  }

  /** A durable consumer: resumes after its server-side checkpoint; each event is
   *  acknowledged once `handler` has resolved (not if it throws), acknowledgements
   *  gathered for `ackDelayMs`. */
  consume(name: string, topics: string | string[], handler: Handler<M>, options: Pick<SubscribeOptions, 'types' | 'excludeOrigin'> = {}): Subscription<M> {
    return this.add(topics, handler, options, name);
  }

  private add(topics: string | string[], handler: Handler<M>, opts: Subscription['opts'], consumer?: string): Subscription<M> {
    if (this.state === 'closed') throw closedError();
    const list = typeof topics === 'string' ? [topics] : topics;
    // A consumer's positions are global sequences (its checkpoint's unit).
    const s = new Subscription<M>(this, 's' + ++this.n, list, !consumer && isSingle(list), handler, opts, consumer);
    this.subs.set(s.id, s);
    this.start(s);
    return s;
  }

  private async start(s: Subscription<M>): Promise<void> {
    try {
      s.seen = s.opts.after ?? (s.key ? await this.store.get(s.key) : undefined);
    } catch (e) {
      this.emit('error', new HeraldError('store', String(e)));
    }
    await this.position(s, this.transport);
    s.loaded = true;
    const t = this.t;
    if (t && this.state === 'connected' && this.subs.has(s.id) && s.on_ !== t) {
      s.on_ = t;
      t.sub(this.spec(s));
    }
  }

  /** Learns where a subscription "from now" starts, so that a reconnect before its
   *  first event still resumes exactly (SSE and polls tell it themselves). */
  private async position(s: Subscription<M>, kind: TransportKind | null): Promise<void> {
    if (s.seen !== undefined) return;
    try {
      if (s.consumer) {
        // HTTP streams know no consumers: they start after the checkpoint.
        if (kind !== 'sse' && kind !== 'poll') return;
        const r = await this.http('GET', '/v1/consumers');
        s.seen = r.consumers.find((c: any) => c.consumer === s.consumer)?.checkpoint;
      } else s.seen = await this.head(this.spec(s));
    } catch {
      // Unreachable now: the next connection tries again.
    }
  }

  /** The position of the last event `s` would receive: "from now". */
  private head(s: Spec): Promise<number> {
    const [path, q] = streamPath(s);
    q.set('last', '1');
    return this.http('GET', `${path}?${q}`).then((r) => r.next_after);
  }

  private spec(s: Subscription<M>): Spec {
    return {
      id: s.id, topics: s.topics, single: s.single, after: s.seen, types: s.opts.types, excludeOrigin: s.opts.excludeOrigin, consumer: s.consumer,
    };
  }

  /** @internal */
  drop(s: Subscription<M>): void {
    if (this.subs.delete(s.id) && s.on_ === this.t) this.t?.unsub(s.id);
  }

  private deliver(id: string, d: Delivery): void {
    if (this.held) {
      this.held.push([id, d]);
      return;
    }
    const s = this.subs.get(id);
    if (!s) return;
    const save = (pos: number) => {
      if (s.key) return this.store.set(s.key, pos);
    };
    switch (d.t) {
      case 'subscribed': {
        if (s.seen === undefined) s.seen = d.position;
        const resumed = s.started;
        const recovered = d.recovered ?? resumed;
        const transport = this.transport!;
        const position = s.seen;
        s.started = true;
        return s.run(() => {
          s.emit('subscribed', { recovered, transport });
          if (resumed && recovered) s.emit('recovered', { position });
          s.up();
        });
      }
      case 'event': {
        const pos = s.single ? d.e.topic_seq : d.e.seq;
        if (s.seen !== undefined && pos <= s.seen) {
          s.dropped++;
          return;
        }
        s.seen = pos;
        const e = toEvent(d.e);
        return s.run(async () => {
          let ok: unknown = true;
          let error: unknown;
          try {
            ok = this.o.validate?.(e as HeraldEvent<M>) !== false;
          } catch (x) {
            ok = false;
            error = x;
          }
          if (ok) await s.handler(e as AnyEvent<M>);
          else s.emit('invalid', { event: e, error });
          if (s.consumer) this.ack(s.consumer, pos);
          else await save(pos);
        });
      }
      case 'gap':
      case 'reset': {
        const pos = d.t === 'gap' ? d.to : d.head;
        s.seen = d.t === 'reset' ? pos : Math.max(s.seen ?? 0, pos);
        return s.run(async () => {
          if (d.t === 'gap') s.emit('gap', { from: d.from, to: d.to, topic: d.topic });
          else s.emit('reset', { head: d.head });
          if (s.opts.resync) await s.opts.resync(pos);
          await save(pos);
        });
      }
      case 'ended':
        this.subs.delete(id);
        return s.run(() => {
          s.down(d.error);
          s.emit('error', d.error);
        });
    }
  }

  // ---- publishing ----

  /** Publishes one event; resolves once it is stored. Retried after a reconnect
   *  under the same idempotency key, so it is stored once. */
  publish<K extends keyof M & string>(topic: string, type: K, data: M[K], options: PublishOptions = {}): Promise<PublishResult> {
    const op: any = { op: 'publish', topic, type, data, correlation_id: options.correlationId };
    return this.send(op, options.idempotencyKey).then(result);
  }

  /** Publishes several events to one topic, stored together or not at all. */
  publishBatch(
    topic: string,
    events: { [K in keyof M & string]: { type: K; data: M[K]; correlationId?: string } }[keyof M & string][],
    options: Pick<PublishOptions, 'idempotencyKey'> = {},
  ): Promise<{ events: PublishResult[]; duplicate?: boolean }> {
    const op = { op: 'publish', events: events.map((e) => ({ topic, type: e.type, data: e.data, correlation_id: e.correlationId })) };
    return this.send(op, options.idempotencyKey).then((r) => {
      const o: { events: PublishResult[]; duplicate?: boolean } = { events: r.events.map(result) };
      if (r.duplicate) o.duplicate = true;
      return o;
    });
  }

  /** Publishes waiting in the offline queue. */
  get queued(): number {
    return this.queue.length;
  }

  private async send(op: any, key: string | undefined): Promise<any> {
    const auto = !key;
    if (!this.noIdem || key) op.idempotency_key = key ?? uuid();
    // The first connection is on its way: wait for its outcome rather than refuse
    // (with the queue on, the publish waits there).
    if (!this.q && !this.everConnected && this.state === 'connecting') {
      await new Promise<void>((r) => {
        const offs = (['connected', 'disconnected', 'closed'] as const).map((k) => this.on(k, () => (offs.forEach((f) => f()), r())));
      });
    }
    return new Promise((res, rej) => {
      const it: Item = { op, res, rej, at: Date.now(), size: JSON.stringify(op).length, auto };
      if (this.state === 'closed') return rej(closedError());
      if (this.t && this.state === 'connected') return this.run(it);
      const q = this.q;
      if (!q) return rej(new HeraldError('offline', 'not connected, and the offline queue is off'));
      this.sweep();
      const bytes = this.queue.reduce((n, i) => n + i.size, it.size);
      if (this.queue.length >= q.maxCount || bytes > q.maxBytes) return rej(new HeraldError('queue_full', 'the offline queue is full'));
      this.queue.push(it);
    });
  }

  private sweep(): void {
    const max = this.q?.maxAgeMs ?? Infinity;
    this.queue = this.queue.filter((i) => Date.now() - i.at <= max || void i.rej(new HeraldError('expired', 'the publish waited too long in the offline queue')));
  }

  private run(it: Item): void {
    const t = this.t!;
    t.req(it.op).then(it.res, (e: HeraldError) => {
      if (this.state === 'closed') it.rej(e);
      else if (e.code === 'disconnected' && this.t === t && t.kind !== 'websocket') {
        // An HTTP request failed while the stream stays up: try again shortly, same key.
        setTimeout(() => (this.t ? this.run(it) : this.retry.push(it)), 500);
      } else if (e.code === 'disconnected') this.retry.push(it);
      else if (it.auto && e.code === 'invalid' && /idempotency/.test(e.message) && it.op.idempotency_key) {
        // A server without idempotent publishing: go on without keys.
        this.noIdem = true;
        delete it.op.idempotency_key;
        this.t ? this.run(it) : this.retry.push(it);
      } else it.rej(e);
    });
  }

  /** An operation that needs the connection now (no queue). */
  private call(op: any): Promise<any> {
    return this.t && this.state === 'connected' ? this.t.req(op) : Promise.reject(new HeraldError('offline', 'not connected'));
  }

  // ---- durable consumers ----

  private ack(name: string, seq: number): void {
    let l = this.acks.get(name);
    if (!l) this.acks.set(name, (l = []));
    l.push(seq);
    this.timers.ack ??= setTimeout(() => this.flushAcks(), this.o.ackDelayMs);
  }

  private async flushAcks(): Promise<void> {
    clearTimeout(this.timers.ack);
    this.timers.ack = undefined;
    const jobs: Promise<unknown>[] = [];
    for (const [name, l] of this.acks) {
      while (this.t && l.length) {
        const seqs = l.splice(0, 1000);
        jobs.push(this.call({ op: 'ack', consumer: name, seqs }).catch((e: HeraldError) => {
          // Lost with the connection: sent again after the reconnect.
          if (e.code === 'disconnected' || e.code === 'offline') l.unshift(...seqs);
          else this.emit('error', e);
        }));
      }
    }
    await Promise.all(jobs);
  }

  // ---- presence ----

  /** Joins `topic`'s presence; heartbeats every `heartbeatMs` and after each
   *  reconnect; left by `leave()` or `close()`. */
  join(topic: string, info: { user?: string; device?: string; metadata?: unknown; clientId?: string } = {}): PresenceHandle {
    const p = { topic, client_id: info.clientId ?? uuid(), user: info.user, device: info.device, metadata: info.metadata };
    const k = topic + '\n' + p.client_id;
    this.joins.set(k, p);
    this.beat([p]);
    this.timers.beat ??= setInterval(() => this.beat([...this.joins.values()]), this.o.heartbeatMs);
    return {
      clientId: p.client_id,
      leave: async () => {
        this.joins.delete(k);
        if (!this.joins.size) this.timers.beat = clearInterval(this.timers.beat);
        await this.call({ op: 'leave', topic, client_id: p.client_id });
      },
    };
  }

  private beat(list: any[]): void {
    if (this.state === 'connected') for (const p of list) this.call({ op: 'heartbeat', ...p }).catch((e) => this.emit('error', e));
  }

  /** The sessions present on `topic`, kept live: a snapshot reconciled with the
   *  `$presence.<topic>` events that follow the subscription's position. */
  watch(topic: string): PresenceWatch {
    const w = new PresenceWatch();
    let buffer: HeraldEvent[] | undefined = [];
    const apply = (e: HeraldEvent) => {
      const d = e.data as any;
      const cur = w.members.get(d.client_id);
      // An event about an older session than the one the snapshot shows.
      if (cur && (cur.connected_at_ns ?? 0) > d.connected_at_ns) return;
      const { topic: _, ...session } = d;
      if (e.type === 'presence.join') w.members.set(d.client_id, session);
      else w.members.delete(d.client_id);
    };
    const load = async () => {
      buffer = [];
      const r = await this.call({ op: 'presence', topic });
      w.members = new Map(r.present.map((p: PresenceSession) => [p.client_id, p]));
      buffer.forEach(apply);
      buffer = undefined;
      w.emit('change', w.list);
    };
    const s = this.add(
      '$presence.' + topic,
      (e: HeraldEvent) => {
        if (buffer) buffer.push(e);
        else {
          apply(e);
          w.emit('change', w.list);
        }
      },
      { key: '', resync: () => load().catch((e) => this.emit('error', e)) },
    );
    s.ready.then(() => load().catch((e) => this.emit('error', e)));
    w.close_ = () => s.unsubscribe();
    return w;
  }

  // ---- tokens ----

  private async token(force = false): Promise<string | undefined> {
    const g = this.o.getToken;
    if (!g) return this.tok;
    const exp = jwtExp(this.tok);
    if (force || this.stale || !this.tok || (exp !== undefined && exp * 1000 - Date.now() < this.o.refreshBeforeMs)) {
      this.tokP ??= Promise.resolve(g()).finally(() => (this.tokP = undefined));
      this.tok = await this.tokP;
      this.stale = false;
    }
    return this.tok;
  }

  private async streamAuth(): Promise<string> {
    const tok = await this.token();
    this.streamExp = jwtExp(tok);
    if (!tok) return '';
    if (!this.noTickets) {
      try {
        return 'ticket=' + encodeURIComponent((await this.http('POST', '/v1/tickets', {})).ticket);
      } catch (e) {
        // A server without tickets: the token goes in the query instead.
        if (!(e instanceof HeraldError && (e.status === 404 || e.status === 405))) throw e;
        this.noTickets = true;
      }
    }
    return 'access_token=' + encodeURIComponent((await this.token())!);
  }

  private async http(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<any> {
    for (let i = 0; ; i++) {
      const tok = await this.token(i > 0);
      const h = { ...headers };
      if (tok) h.Authorization = 'Bearer ' + tok;
      if (body !== undefined) h['Content-Type'] = 'application/json';
      let r: Response;
      try {
        r = await this.host.fetch(this.host.base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal });
      } catch (e: any) {
        throw new HeraldError('disconnected', `${method} ${path}: ${e?.message ?? e}`);
      }
      const text = await r.text();
      let j: any;
      try {
        j = JSON.parse(text);
      } catch {
        j = { error: text };
      }
      if (r.ok) return j;
      // Refresh the token once; a second refusal is final.
      if (r.status === 401 && !i && this.o.getToken) continue;
      throw r.status === 401 ? new HeraldAuthError(j.error) : new HeraldError(j.code ?? 'http', j.error || `HTTP ${r.status}`, r.status);
    }
  }

  /** Refreshes the token in-band, `refreshBeforeMs` before `exp` (unix seconds). */
  private arm(exp: number | undefined, floorMs = 0): void {
    clearTimeout(this.timers.refresh);
    if (exp === undefined || !this.o.getToken || this.t?.kind !== 'websocket') return;
    this.timers.refresh = setTimeout(async () => {
      const t = this.t;
      try {
        const before = this.streamExp ?? 0;
        const r = await t!.req({ op: 'auth', token: await this.token(true) });
        this.streamExp = r.exp;
        // getToken gave no later token (a cached one): ask again after a
        // pause, not at once in a loop.
        this.arm(r.exp, r.exp > before ? 0 : 5000);
        this.emit('token', { exp: r.exp });
      } catch (e: any) {
        // A failed refresh leaves the old token: the server closes at its expiry (4001) and the reconnect takes a fresh one.
        if (e.code !== 'disconnected') this.emit('error', e);
      }
    }, Math.max(floorMs, exp * 1000 - Date.now() - this.o.refreshBeforeMs));
  }

  private notice(m: any): void {
    // A warning about a token already replaced is stale.
    if (m.type === 'token_expiring' && m.exp >= (this.streamExp ?? 0)) this.arm(m.exp);
  }

  // ---- connection lifecycle ----

  private isClosed(): boolean {
    return this.state === 'closed';
  }

  private set(state: State, extra: Partial<StateChange> = {}): void {
    this.state = state;
    const c: StateChange = { state, transport: this.transport, attempt: this.attempt, ...extra };
    this.emit('state', c);
    this.emit(state, c);
  }

  private backoff(): number {
    const b = this.o.backoff ?? {};
    return Math.random() * Math.min(b.maxMs ?? 20000, (b.minMs ?? 500) * 2 ** this.attempt++);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const done = () => {
        clearTimeout(this.timers.sleep);
        this.wake = undefined;
        r();
      };
      this.wake = done;
      if (ms < Infinity) this.timers.sleep = setTimeout(done, ms);
    });
  }

  private async loop(): Promise<void> {
    const kinds = this.o.transports ?? ['websocket', 'sse', 'poll'];
    while (!this.isClosed()) {
      if (this.offline) {
        this.set('disconnected', { reason: 'offline' });
        await this.sleep(Infinity);
        continue;
      }
      this.set('connecting');
      let t: Transport | undefined;
      let error: any;
      for (const kind of kinds) {
        this.held = [];
        const c = new (kind === 'websocket' ? WsTransport : kind === 'sse' ? SseTransport : PollTransport)(this.host);
        try {
          const subs = [...this.subs.values()].filter((s) => s.loaded);
          for (const s of subs) await this.position(s, kind);
          await c.open(subs.map((s) => this.spec(s)));
          subs.forEach((s) => (s.on_ = c));
          t = c;
          break;
        } catch (e) {
          error = e;
          if (e instanceof HeraldAuthError || this.isClosed()) break;
        }
      }
      if (this.isClosed()) return t?.close();
      if (!t) {
        if (error instanceof HeraldAuthError) return this.shut(error);
        const delayMs = this.backoff();
        this.set('disconnected', { error, delayMs });
        await this.sleep(delayMs);
        continue;
      }
      this.t = t;
      this.transport = t.kind;
      const since = Date.now();
      this.set('connected');
      // What arrived while opening (subscribed, replayed events) follows the
      // `connected` state, so a resolved `ready` always sees the transport.
      const held = this.held ?? [];
      this.held = null;
      for (const [id, d] of held) this.deliver(id, d);
      this.connected(t);
      const { code, reason } = await t.closed;
      this.held = [];
      this.t = undefined;
      clearTimeout(this.timers.refresh);
      if (this.isClosed()) return;
      const lasted = Date.now() - since;
      if (lasted >= (this.o.backoff?.stableMs ?? 10000)) this.attempt = 0;
      if (code === 4001 && !this.o.getToken) return this.shut(new HeraldAuthError('the token expired and there is no getToken to refresh it'));
      if (code === 4001) this.stale = true;
      if (code === 4008) this.resumeAt(reason);
      // 4008 and 4001 resume at once (unless the last connection was short-lived:
      // no tight loop); 1001 (shutdown) and failures back off with jitter.
      const delayMs = (code === 4008 || code === 4001) && lasted > 1000 ? 0 : this.backoff();
      this.set('disconnected', { code, reason, delayMs });
      this.transport = null;
      await this.sleep(delayMs);
    }
  }

  /** A slow client's close reason names, per subscription, the last global and
   *  topic sequence sent: `s1=812/17`. */
  private resumeAt(reason: string): void {
    for (const [, id, seq, topicSeq] of reason.matchAll(/([^\s=;,]+)=(\d+)\/(\d+)/g)) {
      const s = this.subs.get(id!);
      if (s) s.seen = +(s.single ? topicSeq! : seq!);
    }
  }

  private connected(t: Transport): void {
    this.everConnected = true;
    for (const s of this.subs.values()) {
      if (s.loaded && s.on_ !== t) {
        s.on_ = t;
        t.sub(this.spec(s));
      }
    }
    this.sweep();
    for (const it of [...this.retry.splice(0), ...this.queue.splice(0)]) this.run(it);
    this.flushAcks();
    this.beat([...this.joins.values()]);
    this.arm(this.streamExp);
  }

  private shut(error?: HeraldError): void {
    if (this.state === 'closed') return;
    this.set('closed', { error });
    this.transport = null;
    for (const k in this.timers) {
      clearTimeout(this.timers[k]);
      clearInterval(this.timers[k]);
    }
    this.unlisten?.();
    this.t?.close();
    this.wake?.();
    for (const it of this.queue.splice(0).concat(this.retry.splice(0))) it.rej(error ?? closedError());
    if (error) this.emit('error', error);
  }
}

const result = (r: any): PublishResult => {
  const o: PublishResult = { seq: r.seq, topicSeq: r.topic_seq };
  if (r.duplicate) o.duplicate = true;
  return o;
};

export function createClient<M extends EventMap = EventMap>(options: ClientOptions<M>): HeraldClient<M> {
  return new HeraldClient<M>(options);
}
