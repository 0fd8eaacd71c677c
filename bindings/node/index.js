'use strict';
// Node binding of Herald's C ABI (include/herald.h) through koffi.
//
// Library lookup, on first use (or an explicit load()): the `path` given to
// load(), else $HERALD_LIB, else prebuilds/<platform>-<arch>/ in this
// package, else the system loader (libherald.so.0 on Linux).
//
// Threading: a Broker and Publisher may be used from any worker thread
// (pass `broker.address` to a worker and use Broker.fromAddress there). A
// Subscriber belongs to the thread that opened it. It reads on the event
// loop and waits for new events by watching its eventfd in that loop
// (koffi.node.poll, a libuv poll handle): an idle subscriber holds no
// thread, so it never starves libuv's thread pool (fs, dns, zlib, crypto).

const koffi = require('koffi');
const fs = require('node:fs');
const path = require('node:path');
const { EventEmitter } = require('node:events');

if (!koffi.node || typeof koffi.node.poll !== 'function') {
  throw new Error(`herald: koffi ${koffi.version} has no koffi.node.poll; koffi >= 3 is required`);
}

const LIB_FILE = { linux: 'libherald.so', darwin: 'libherald.dylib', win32: 'herald.dll' }[process.platform] || 'libherald.so';
const SYSTEM_NAME = { linux: 'libherald.so.0', darwin: 'libherald.0.dylib', win32: 'herald.dll' }[process.platform] || 'libherald.so.0';

let lib = null;
let libPath = null;
const C = {};

/** Loads libherald (once per thread). Tries `options.path`, $HERALD_LIB, the
 * bundled prebuild and the system loader in that order; the error lists every
 * attempt. Returns the path that was loaded. */
function load(options = {}) {
  if (lib) {
    if (options.path && path.resolve(options.path) !== libPath) {
      throw new Error(`herald: already loaded ${libPath}; cannot load ${options.path} too`);
    }
    return libPath;
  }
  const candidates = [];
  if (options.path) candidates.push(['the path option', path.resolve(options.path)]);
  if (process.env.HERALD_LIB) candidates.push(['$HERALD_LIB', path.resolve(process.env.HERALD_LIB)]);
  candidates.push(['the bundled prebuild', path.join(__dirname, 'prebuilds', `${process.platform}-${process.arch}`, LIB_FILE)]);
  candidates.push(['the system loader', SYSTEM_NAME]);
  const tried = [];
  for (const [what, p] of candidates) {
    if (path.isAbsolute(p) && !fs.existsSync(p)) {
      tried.push(`${p} (${what}): no such file`);
      continue;
    }
    try {
      lib = koffi.load(p);
      libPath = p;
      bind(lib);
      return libPath;
    } catch (e) {
      lib = null;
      tried.push(`${p} (${what}): ${e.message}`);
    }
  }
  throw new Error(`herald: cannot load libherald; tried:\n  ${tried.join('\n  ')}`);
}

function ensureLoaded() {
  if (!lib) load();
}

function bind(l) {
  koffi.struct('herald_config', {
    data_dir: 'const char *', data_dir_len: 'size_t', ring_capacity: 'size_t', max_payload: 'size_t',
    segment_size: 'uint64_t', durability: 'uint32_t', sync_interval_ms: 'uint32_t',
    retention_max_age_ms: 'uint64_t', retention_max_bytes: 'uint64_t', retention_max_records: 'uint64_t',
    presence_ttl_ms: 'uint64_t', prefault: 'bool',
  });
  koffi.struct('herald_publish_options', { origin: 'uint64_t', correlation: 'const char *', correlation_len: 'size_t' });
  koffi.struct('herald_published', { seq: 'uint64_t', topic_seq: 'uint64_t' });
  koffi.struct('herald_metrics', {
    published: 'uint64_t', delivered: 'uint64_t', lagged_fallbacks: 'uint64_t', gaps: 'uint64_t', replayed: 'uint64_t',
    active_subscribers: 'uint64_t', latency_p50_ns: 'uint64_t', latency_p95_ns: 'uint64_t', latency_p99_ns: 'uint64_t',
    latency_max_ns: 'uint64_t',
  });

  // Handles are declared uintptr_t: plain numbers, transferable to workers.
  Object.assign(C, {
    version: l.func('const char *herald_version()'),
    strerror: l.func('const char *herald_strerror(int32_t code)'),
    lastError: l.func('const char *herald_last_error()'),
    configInit: l.func('int32_t herald_config_init(_Out_ herald_config *c)'),
    brokerOpen: l.func('int32_t herald_broker_open(const herald_config *c, _Out_ uintptr_t *out)'),
    brokerClose: l.func('int32_t herald_broker_close(uintptr_t b)'),
    brokerNextSeq: l.func('int32_t herald_broker_next_seq(uintptr_t b, _Out_ uint64_t *out)'),
    brokerMetrics: l.func('int32_t herald_broker_metrics(uintptr_t b, _Out_ herald_metrics *out)'),
    consumerCheckpoint: l.func('int32_t herald_broker_consumer_checkpoint(uintptr_t b, const char *n, size_t len, _Out_ uint64_t *out)'),
    presenceJoin: l.func('int32_t herald_broker_presence_join(uintptr_t b, const char *t, size_t tl, const char *c, size_t cl, const char *u, size_t ul, const char *d, size_t dl, const char *m, size_t ml)'),
    presenceLeave: l.func('int32_t herald_broker_presence_leave(uintptr_t b, const char *t, size_t tl, const char *c, size_t cl, _Out_ bool *was)'),
    presenceList: l.func('int32_t herald_broker_presence_list(uintptr_t b, const char *t, size_t tl, void *buf, size_t cap, _Out_ size_t *len, _Out_ size_t *count)'),
    filterNew: l.func('int32_t herald_filter_new(_Out_ uintptr_t *out)'),
    filterFree: l.func('void herald_filter_free(uintptr_t f)'),
    filterAddTopic: l.func('int32_t herald_filter_add_topic(uintptr_t f, const char *p, size_t n)'),
    filterAddType: l.func('int32_t herald_filter_add_type(uintptr_t f, const char *p, size_t n)'),
    filterExcludeOrigin: l.func('int32_t herald_filter_exclude_origin(uintptr_t f, uint64_t origin)'),
    publisherNew: l.func('int32_t herald_publisher_new(uintptr_t b, const char *t, size_t n, _Out_ uintptr_t *out)'),
    publisherFree: l.func('void herald_publisher_free(uintptr_t p)'),
    publish: l.func('int32_t herald_publisher_publish(uintptr_t p, const char *t, size_t tl, const void *payload, size_t pl, const herald_publish_options *o, _Out_ herald_published *out)'),
    claim: l.func('int32_t herald_publisher_claim(uintptr_t p, size_t len, _Out_ void **out)'),
    commit: l.func('int32_t herald_publisher_commit(uintptr_t p, const char *t, size_t tl, size_t len, const herald_publish_options *o, _Out_ herald_published *out)'),
    abort: l.func('int32_t herald_publisher_abort(uintptr_t p)'),
    subscriberOpen: l.func('int32_t herald_subscriber_open(uintptr_t b, uintptr_t f, uint32_t kind, uint64_t value, _Out_ uintptr_t *out)'),
    consumerOpen: l.func('int32_t herald_subscriber_open_consumer(uintptr_t b, const char *n, size_t nl, uintptr_t f, uint32_t kind, uint64_t value, _Out_ uintptr_t *out)'),
    subscriberFree: l.func('void herald_subscriber_free(uintptr_t s)'),
    read: l.func('int32_t herald_subscriber_read(uintptr_t s, void *buf, size_t cap, size_t limit, void *out_len, void *out_count, int32_t timeout_ms)'),
    next: l.func('int32_t herald_subscriber_next(uintptr_t s, void *buf, size_t cap, void *out_len, void *out_delivery, int32_t timeout_ms)'),
    fd: l.func('int32_t herald_subscriber_fd(uintptr_t s, _Out_ int32_t *out_fd)'),
    arm: l.func('int32_t herald_subscriber_arm(uintptr_t s, void *out_may_sleep)'),
    ack: l.func('int32_t herald_subscriber_ack(uintptr_t s, uint64_t seq)'),
    ackUpTo: l.func('int32_t herald_subscriber_ack_up_to(uintptr_t s, uint64_t seq)'),
    lag: l.func('int32_t herald_subscriber_lag(uintptr_t s, _Out_ uint64_t *behind, _Out_ bool *live)'),
  });
}

/** Stable result codes of include/herald.h. */
const codes = Object.freeze({
  OK: 0, NULL: 1, INVALID_HANDLE: 2, INVALID_ARGUMENT: 3, INVALID_UTF8: 4, INVALID_TOPIC: 5, INVALID_FILTER: 6,
  INVALID_EVENT_TYPE: 7, INVALID_CORRELATION: 8, PAYLOAD_TOO_LARGE: 9, NEEDS_SINGLE_TOPIC: 10, INVALID_CONFIG: 11,
  BUFFER_TOO_SMALL: 12, TIMEOUT: 13, BUSY: 14, NO_CLAIM: 15, UNKNOWN_CONSUMER: 16, NOT_A_CONSUMER: 17, ACK: 18,
  CHECKPOINT: 19, PRESENCE: 20, LOG: 21, IO: 22, CORRUPT: 23, PANIC: 24, CANCELLED: 25,
});
const Durability = Object.freeze({ NEVER: 0, INTERVAL: 1, ALWAYS: 2 });
const START = { now: 0, seq: 1, topicSeq: 2, time: 3, lastN: 4 };

class HeraldError extends Error {
  constructor(code, message, needed) {
    super(`${C.strerror(code)} (code ${code})${message ? `: ${message}` : ''}`);
    this.name = 'HeraldError';
    this.code = code;
    if (needed !== undefined) this.needed = needed;
  }
}

function check(rc) {
  if (rc !== 0) throw new HeraldError(rc, C.lastError());
}

const len = (s) => Buffer.byteLength(s, 'utf8');

class Broker {
  /** Opens (creating or recovering) a broker. Options: dataDir (required),
   * ringCapacity, maxPayload, segmentSize, durability, retentionMaxRecords, prefault. */
  static open(options) {
    ensureLoaded();
    const cfg = {};
    check(C.configInit(cfg));
    const dir = options.dataDir || '';
    cfg.data_dir = dir;
    cfg.data_dir_len = len(dir);
    if (options.ringCapacity) cfg.ring_capacity = options.ringCapacity;
    if (options.maxPayload) cfg.max_payload = options.maxPayload;
    if (options.segmentSize) cfg.segment_size = options.segmentSize;
    if (options.durability !== undefined) cfg.durability = options.durability;
    if (options.retentionMaxRecords) cfg.retention_max_records = options.retentionMaxRecords;
    if (options.prefault !== undefined) cfg.prefault = options.prefault;
    const out = [0];
    check(C.brokerOpen(cfg, out));
    return new Broker(out[0], true);
  }

  /** A non-owning view of a broker opened elsewhere (e.g. in another worker). */
  static fromAddress(address) {
    ensureLoaded();
    return new Broker(address, false);
  }

  constructor(address, owned) {
    this.address = address;
    this.maxPayload = 0;
    this._owned = owned;
  }

  /** Flushes and closes (owning handle only). */
  close() {
    if (this._owned && this.address) {
      const a = this.address;
      this.address = 0;
      check(C.brokerClose(a));
    }
  }

  publisher(topic) {
    const out = [0];
    check(C.publisherNew(this.address, topic, len(topic), out));
    return new Publisher(out[0]);
  }

  nextSeq() {
    const out = [0];
    check(C.brokerNextSeq(this.address, out));
    return Number(out[0]);
  }

  metrics() {
    const m = {};
    check(C.brokerMetrics(this.address, m));
    return m;
  }

  consumerCheckpoint(name) {
    const out = [0];
    check(C.consumerCheckpoint(this.address, name, len(name), out));
    return Number(out[0]);
  }

  presenceJoin(topic, clientId, user = '', device = '', metadata = '') {
    check(C.presenceJoin(this.address, topic, len(topic), clientId, len(clientId), user, len(user), device, len(device),
      metadata, len(metadata)));
  }

  presenceLeave(topic, clientId) {
    const was = [false];
    check(C.presenceLeave(this.address, topic, len(topic), clientId, len(clientId), was));
    return was[0];
  }

  presence(topic) {
    const need = [0];
    const count = [0];
    const rc = C.presenceList(this.address, topic, len(topic), null, 0, need, count);
    if (rc !== codes.BUFFER_TOO_SMALL) check(rc);
    const buf = Buffer.alloc(need[0]);
    check(C.presenceList(this.address, topic, len(topic), buf, buf.length, need, count));
    return JSON.parse(buf.toString('utf8', 0, need[0]));
  }

  /** A Subscriber (EventEmitter + async iterator). filter: {topics, types, excludeOrigin};
   * start: {now: true} | {seq} | {topicSeq} | {time} | {lastN}. */
  subscribe(filter, start = { now: true }) {
    return Subscriber._open(this, null, filter, start);
  }

  /** The durable consumer `name`: resumes after its last ack, or at `start` if new. */
  consumer(name, filter, start = { now: true }) {
    return Subscriber._open(this, name, filter, start);
  }
}

function publishOptions(opts) {
  if (!opts || (!opts.origin && !opts.correlation)) return null;
  const c = opts.correlation || '';
  return { origin: opts.origin || 0, correlation: c || null, correlation_len: len(c) };
}

class Publisher {
  constructor(address) {
    this.address = address;
  }

  /** Publishes (copying payload: Buffer, Uint8Array or string). Returns {seq, topicSeq}. */
  publish(eventType, payload, opts) {
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const out = {};
    check(C.publish(this.address, eventType, len(eventType), body, body ? body.length : 0, publishOptions(opts), out));
    return { seq: Number(out.seq), topicSeq: Number(out.topic_seq) };
  }

  /** Claim → write → commit: `fill(view)` writes the payload in place into the
   * publisher's claimed buffer of `size` bytes (valid only during fill). */
  publishWith(eventType, size, fill, opts) {
    const ptr = [null];
    check(C.claim(this.address, size, ptr));
    try {
      if (size > 0) fill(new Uint8Array(koffi.view(ptr[0], size)));
    } catch (e) {
      C.abort(this.address);
      throw e;
    }
    const out = {};
    check(C.commit(this.address, eventType, len(eventType), size, publishOptions(opts), out));
    return { seq: Number(out.seq), topicSeq: Number(out.topic_seq) };
  }

  close() {
    C.publisherFree(this.address);
    this.address = 0;
  }
}

const DELIVERY_SIZE = 120;
const u64 = (b, at) => b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 4294967296;

// The header of each record herald_subscriber_read writes (its fields are
// little-endian). decodeBatch reads the fields at the offsets koffi lays out
// for this declaration, which ffi/tests/bindings_agree.rs checks against
// include/herald.h.
const RECORD_FIELDS = {
  kind: 'uint32_t', record_len: 'uint32_t', seq: 'uint64_t', topic_seq: 'uint64_t', timestamp_ns: 'uint64_t',
  origin: 'uint64_t', gap_from: 'uint64_t', gap_to: 'uint64_t', payload_len: 'uint32_t', topic_len: 'uint8_t',
  event_type_len: 'uint8_t', correlation_len: 'uint8_t', reserved: 'uint8_t',
};
// Anonymous: a named koffi type could not be declared again by a second copy
// of this module in the same thread.
const RecordHeader = koffi.struct(RECORD_FIELDS);
/** Offset of each field of herald_record_header. */
const REC = Object.freeze(Object.fromEntries(
  Object.keys(RECORD_FIELDS).map((f) => [f, koffi.offsetof(RecordHeader, f)]),
));
/** HERALD_RECORD_HEADER: where a record's body starts. */
const RECORD_HEADER = 64;
if (koffi.sizeof(RecordHeader) !== RECORD_HEADER) {
  throw new Error(`herald: herald_record_header is ${koffi.sizeof(RecordHeader)} bytes, not ${RECORD_HEADER}`);
}
const DELIVERY_GAP = 1;

function buildFilter(filter) {
  const out = [0];
  check(C.filterNew(out));
  const f = out[0];
  try {
    for (const t of filter.topics || []) check(C.filterAddTopic(f, t, len(t)));
    for (const t of filter.types || []) check(C.filterAddType(f, t, len(t)));
    if (filter.excludeOrigin !== undefined) check(C.filterExcludeOrigin(f, filter.excludeOrigin));
  } catch (e) {
    C.filterFree(f);
    throw e;
  }
  return f;
}

function startOf(start) {
  for (const [k, kind] of Object.entries(START)) {
    if (start[k] !== undefined && start[k] !== false) return [kind, k === 'now' ? 0 : start[k]];
  }
  return [START.now, 0];
}

/**
 * A subscription. Use it as an async iterator (`for await (const e of sub)`),
 * with `await sub.next(timeoutMs)`, or as an EventEmitter (`sub.on('event',
 * …)`, `'gap'`, `'error'`; reading starts with the first listener). Events:
 * {seq, topicSeq, timestampNs, origin, topic, type, correlation, payload:
 * Buffer} (the payload is a view into the copy of the batch it was read in).
 * Gaps: {gap: true, from, to, topic} — retention deleted those events before
 * this subscriber read them (never silence).
 */
class Subscriber extends EventEmitter {
  static _open(broker, name, filter, start) {
    const f = buildFilter(filter);
    const out = [0];
    const [kind, value] = startOf(start);
    try {
      if (name === null) check(C.subscriberOpen(broker.address, f, kind, value, out));
      else check(C.consumerOpen(broker.address, name, len(name), f, kind, value, out));
    } finally {
      C.filterFree(f);
    }
    return new Subscriber(out[0]);
  }

  constructor(address) {
    super();
    this.address = address;
    this._meta = Buffer.alloc(DELIVERY_SIZE);
    this._len = Buffer.alloc(8);
    this._maySleep = Buffer.alloc(1);
    this._batch = Buffer.alloc(256 * 1024);
    this._count = Buffer.alloc(8);
    this._queue = [];
    this._qi = 0;
    this._closed = false;
    this._pumping = false;
    this._poll = null; // koffi PollHandle on the subscriber's eventfd, made by the first wait
    this._polling = false;
    this._waiters = new Set();
    this._onPoll = (status) => {
      // koffi passes (status, events); a negative status is a libuv error.
      const err = typeof status === 'number' && status < 0
        ? new Error(`herald: watching the subscriber's fd failed (libuv status ${status})`) : undefined;
      this._wakeAll(err);
    };
    this.on('newListener', (ev) => {
      if (ev === 'event' && !this._pumping) {
        this._pumping = true;
        setImmediate(() => this._pump());
      }
    });
    // A pump waiting with no listener left would keep the loop alive forever.
    this.on('removeListener', (ev) => {
      if (ev === 'event' && this.listenerCount('event') === 0) this._wakeAll();
    });
  }

  /** Whether close() was called. */
  get closed() {
    return this._closed;
  }

  /** The raw call: copies the next delivery into `buf`, blocking the thread
   * up to `timeoutMs`. Throws HeraldError (code BUFFER_TOO_SMALL with
   * `needed`, or TIMEOUT) on failure. */
  nextInto(buf, timeoutMs = 0) {
    const rc = C.next(this.address, buf, buf.length, this._len, this._meta, timeoutMs);
    if (rc !== 0) {
      const needed = rc === codes.BUFFER_TOO_SMALL ? Number(this._len.readBigUInt64LE(0)) : undefined;
      throw new HeraldError(rc, C.lastError(), needed);
    }
    return decode(buf, this._meta);
  }

  /** The next delivery available now, or null (synchronous, never blocks).
   * Reads in batches (herald_subscriber_read): one FFI call per up to 1024
   * deliveries, queued in this object. */
  tryNext() {
    if (this._qi < this._queue.length) return this._take();
    for (;;) {
      const rc = C.read(this.address, this._batch, this._batch.length, 1024, this._len, this._count, 0);
      if (rc === 0) {
        this._queue = decodeBatch(this._batch, this._len.readUInt32LE(0), this._count.readUInt32LE(0));
        this._qi = 0;
        return this._take();
      }
      if (rc === codes.TIMEOUT) return null;
      if (rc === codes.BUFFER_TOO_SMALL) {
        this._batch = Buffer.alloc(Math.max(2 * this._batch.length, this._len.readUInt32LE(0)));
        continue;
      }
      check(rc);
    }
  }

  _take() {
    const d = this._queue[this._qi];
    this._queue[this._qi++] = undefined;
    return d;
  }

  /** After an empty read: resolves once something may be readable, the
   * subscriber is closed, or `timeoutMs` (>= 0) passes. The protocol of
   * herald_subscriber_arm, waiting in the event loop (no thread). */
  _wait(timeoutMs = -1) {
    if (this._closed) return Promise.resolve();
    check(C.arm(this.address, this._maySleep));
    // Something arrived since the read: read again, but on the next turn of
    // the loop so that a run of early wake-ups cannot starve other callbacks.
    if (this._maySleep[0] === 0) return new Promise(setImmediate);
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = (err) => {
        if (timer !== null) clearTimeout(timer);
        this._waiters.delete(done);
        if (this._waiters.size === 0) this._stopPolling();
        if (err) reject(err);
        else resolve();
      };
      this._waiters.add(done);
      if (timeoutMs >= 0) timer = setTimeout(done, timeoutMs);
      try {
        this._startPolling();
      } catch (e) {
        done(e);
      }
    });
  }

  _startPolling() {
    if (this._polling) return;
    if (this._poll === null) {
      const fd = [0];
      check(C.fd(this.address, fd));
      this._poll = koffi.node.poll(fd[0], { readable: true }, this._onPoll);
    } else {
      this._poll.start({ readable: true }, this._onPoll);
    }
    this._polling = true;
  }

  // The eventfd stays readable until the next arm resets it (libuv polls are
  // level-triggered), so the poll runs only while someone waits.
  _stopPolling() {
    if (this._polling) {
      this._polling = false;
      this._poll.stop();
    }
  }

  _wakeAll(err) {
    for (const done of [...this._waiters]) done(err);
  }

  /** Resolves with the next delivery, waiting without blocking the loop or
   * holding a thread: null once the subscriber is closed. With `timeoutMs`
   * (>= 0), rejects with a HeraldError of code TIMEOUT if nothing arrives in
   * time. */
  async next(timeoutMs = -1) {
    const deadline = timeoutMs >= 0 ? performance.now() + timeoutMs : Infinity;
    for (;;) {
      if (this._closed) return null;
      const d = this.tryNext();
      if (d) return d;
      const left = deadline - performance.now();
      if (left <= 0) throw new HeraldError(codes.TIMEOUT, `nothing within ${timeoutMs} ms`);
      await this._wait(left === Infinity ? -1 : Math.ceil(left));
    }
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const d = await this.next();
      if (d === null) return;
      yield d;
    }
  }

  async _pump() {
    try {
      while (!this._closed && this.listenerCount('event') > 0) {
        let n = 0;
        let d;
        while (n < 1024 && !this._closed && (d = this.tryNext())) {
          this.emit(d.gap ? 'gap' : 'event', d);
          n++;
        }
        if (n === 1024) await new Promise(setImmediate);
        else if (!this._closed && this.listenerCount('event') > 0) await this._wait();
      }
    } catch (e) {
      this.emit('error', e);
    } finally {
      this._pumping = false;
    }
  }

  ack(seq) {
    check(C.ack(this.address, seq));
  }

  ackUpTo(seq) {
    check(C.ackUpTo(this.address, seq));
  }

  lag() {
    const behind = [0];
    const live = [false];
    check(C.lag(this.address, behind, live));
    return { behind: Number(behind[0]), live: live[0] };
  }

  /** Stops reading, ends pending next() calls and iterators (with null) and
   * frees the subscriber at once (no call of it is ever in flight on another
   * thread). Returns a resolved promise, kept so that `await sub.close()`
   * reads the same as in earlier versions. */
  close() {
    if (!this._closed) {
      this._closed = true;
      if (this._poll !== null) {
        // Stops watching the fd synchronously, before the free closes it.
        this._poll.close();
        this._poll = null;
        this._polling = false;
      }
      this._wakeAll();
      C.subscriberFree(this.address);
      this.address = 0;
    }
    return Promise.resolve();
  }
}

function decodeBatch(src, total, count) {
  // One copy per batch: payloads are views into it (they keep it alive).
  const b = Buffer.allocUnsafe(total);
  src.copy(b, 0, 0, total);
  const out = new Array(count);
  let at = 0;
  for (let k = 0; k < count; k++) {
    const rlen = b.readUInt32LE(at + REC.record_len);
    const pl = b.readUInt32LE(at + REC.payload_len);
    const tl = b[at + REC.topic_len];
    const yl = b[at + REC.event_type_len];
    const cl = b[at + REC.correlation_len];
    const body = at + RECORD_HEADER;
    if (b.readUInt32LE(at + REC.kind) === DELIVERY_GAP) {
      out[k] = {
        gap: true, from: u64(b, at + REC.gap_from), to: u64(b, at + REC.gap_to),
        topic: b.latin1Slice(body + pl, body + pl + tl),
      };
    } else {
      out[k] = {
        seq: u64(b, at + REC.seq),
        topicSeq: u64(b, at + REC.topic_seq),
        timestampNs: u64(b, at + REC.timestamp_ns),
        origin: u64(b, at + REC.origin),
        payload: b.subarray(body, body + pl),
        topic: b.latin1Slice(body + pl, body + pl + tl),
        type: b.latin1Slice(body + pl + tl, body + pl + tl + yl),
        correlation: cl ? b.latin1Slice(body + pl + tl + yl, body + pl + tl + yl + cl) : '',
      };
    }
    at += rlen;
  }
  if (at !== total) throw new Error(`herald: batch of ${total} bytes decoded to ${at}`);
  return out;
}

function decode(buf, m) {
  const pl = u64(m, 112);
  const tl = u64(m, 64);
  const yl = u64(m, 80);
  const cl = u64(m, 96);
  if (m.readUInt32LE(0) === 1) {
    return { gap: true, from: u64(m, 40), to: u64(m, 48), topic: buf.toString('utf8', pl, pl + tl) };
  }
  return {
    seq: u64(m, 8),
    topicSeq: u64(m, 16),
    timestampNs: u64(m, 24),
    origin: u64(m, 32),
    payload: Buffer.from(buf.subarray(0, pl)),
    topic: buf.toString('latin1', pl, pl + tl),
    type: buf.toString('latin1', pl + tl, pl + tl + yl),
    correlation: buf.toString('latin1', pl + tl + yl, pl + tl + yl + cl),
  };
}

module.exports = {
  Broker, Publisher, Subscriber, HeraldError, codes, Durability,
  load,
  version: () => (ensureLoaded(), C.version()),
  strerror: (code) => (ensureLoaded(), C.strerror(code)),
  libraryPath: () => libPath,
  _raw: C,
};
