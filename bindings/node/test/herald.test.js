'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const { Broker, HeraldError, codes, Durability, version } = require('..');

const TOTAL = 100000;
const TOPIC = 'acme.workspace.42';

function open(dir) {
  return Broker.open({ dataDir: dir, ringCapacity: 1 << 20, maxPayload: 4096, segmentSize: 8 << 20,
    durability: Durability.NEVER, prefault: false });
}

function checker() {
  const next = [0, 0];
  let lastSeq = 0;
  let topicSeq = 0;
  let count = 0;
  return {
    see(e) {
      assert.equal(e.gap, undefined);
      assert.equal(e.topic, TOPIC);
      assert.equal(e.type, 'order.created');
      assert.ok(e.seq > lastSeq, 'global order');
      assert.equal(e.topicSeq, topicSeq + 1, 'dense topic sequence');
      const w = e.payload.readUInt32LE(0);
      assert.equal(e.payload.readUInt32LE(4), next[w], 'per-publisher order');
      assert.equal(e.origin, w + 1);
      next[w]++;
      lastSeq = e.seq;
      topicSeq = e.topicSeq;
      count++;
    },
    get count() { return count; },
    get next() { return next; },
  };
}

test('two workers publish 100 000 events; an async iterator and an EventEmitter see them in order; replay; durable consumer', async () => {
  assert.match(version(), /^\d+\.\d+\.\d+/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-'));
  let broker = open(dir);
  const iterSub = broker.subscribe({ topics: [TOPIC] }, { now: true });
  const emitterSub = broker.subscribe({ topics: ['acme.*.42'], types: ['order.created'] }, { seq: 1 });

  const viaIterator = (async () => {
    const c = checker();
    for await (const e of iterSub) {
      c.see(e);
      if (c.count === TOTAL) break;
    }
    return c;
  })();
  const viaEmitter = new Promise((resolve, reject) => {
    const c = checker();
    emitterSub.on('error', reject);
    emitterSub.on('gap', (g) => reject(new Error(`unexpected gap ${JSON.stringify(g)}`)));
    emitterSub.on('event', (e) => {
      try {
        c.see(e);
      } catch (err) {
        reject(err);
      }
      if (c.count === TOTAL) resolve(c);
    });
  });
  const workers = [0, 1].map((w) => new Promise((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, '..', 'workers', 'publisher.js'), {
      workerData: { broker: broker.address, topic: TOPIC, worker: w, count: TOTAL / 2 },
    });
    worker.on('error', reject);
    worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exit ${code}`))));
  }));
  await Promise.all(workers);
  const [a, b] = await Promise.all([viaIterator, viaEmitter]);
  for (const c of [a, b]) assert.deepEqual(c.next, [TOTAL / 2, TOTAL / 2]);
  await Promise.all([iterSub.close(), emitterSub.close()]);
  assert.equal(broker.metrics().published, TOTAL);
  assert.equal(broker.nextSeq(), TOTAL + 1);
  broker.close();

  // Reopen and replay from a sequence.
  broker = open(dir);
  const replay = broker.subscribe({ topics: [TOPIC] }, { seq: 50001 });
  for (let want = 50001; want <= TOTAL; want++) {
    const e = replay.tryNext();
    assert.equal(e.seq, want);
    assert.equal(e.topicSeq, want);
  }
  assert.equal(replay.tryNext(), null);
  await replay.close();

  // A durable consumer resumes after its acknowledgement.
  let c = broker.consumer('billing', { topics: [TOPIC] }, { seq: 1 });
  let last = 0;
  for (let i = 0; i < 1000; i++) {
    const e = await c.next();
    assert.equal(e.seq, last + 1);
    last = e.seq;
  }
  c.ackUpTo(last);
  await c.close();
  assert.equal(broker.consumerCheckpoint('billing'), 1000);
  c = broker.consumer('billing', { topics: [TOPIC] });
  assert.equal((await c.next()).seq, 1001);
  await c.close();
  broker.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('bad calls return the documented codes', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-'));
  const code = (fn) => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof HeraldError, String(e));
      return e.code;
    }
    return codes.OK;
  };
  assert.equal(code(() => Broker.open({ dataDir: '' })), codes.INVALID_CONFIG);
  const broker = open(dir);
  assert.equal(code(() => broker.publisher('bad topic')), codes.INVALID_TOPIC);
  assert.equal(code(() => broker.subscribe({ topics: ['a.>.b'] })), codes.INVALID_TOPIC);
  assert.equal(code(() => broker.subscribe({ topics: ['a.>'] }, { topicSeq: 1 })), codes.NEEDS_SINGLE_TOPIC);
  assert.equal(code(() => Broker.fromAddress(0).publisher('x')), codes.NULL);
  const p = broker.publisher('bad.calls');
  const s = broker.subscribe({ topics: ['bad.calls'] });
  assert.equal(code(() => p.publish('bad type!', 'x')), codes.INVALID_EVENT_TYPE);
  assert.equal(code(() => p.publish('t', Buffer.alloc(5000))), codes.PAYLOAD_TOO_LARGE);
  p.publish('t', Buffer.alloc(100, 1), { origin: 3, correlation: 'req-1' });
  let needed = 0;
  assert.equal(code(() => {
    try {
      s.nextInto(Buffer.alloc(10), 1000);
    } catch (e) {
      needed = e.needed;
      throw e;
    }
  }), codes.BUFFER_TOO_SMALL);
  assert.equal(needed, 100 + 'bad.calls'.length + 1 + 'req-1'.length);
  const e = s.nextInto(Buffer.alloc(needed));
  assert.equal(e.payload.length, 100);
  assert.equal(e.correlation, 'req-1');
  assert.equal(e.origin, 3);
  assert.equal(code(() => s.nextInto(Buffer.alloc(10), 0)), codes.TIMEOUT);
  assert.equal(code(() => s.ack(1)), codes.NOT_A_CONSUMER);
  assert.deepEqual(s.lag(), { behind: 0, live: true });
  // A freed handle passes NULL to the library.
  p.close();
  assert.equal(code(() => p.publish('t', 'x')), codes.NULL);
  // Presence.
  broker.presenceJoin('room.1', 'c1', 'alice', 'phone', '{"v":1}');
  const list = broker.presence('room.1');
  assert.equal(list.length, 1);
  assert.equal(list[0].user, 'alice');
  assert.deepEqual(list[0].metadata, { v: 1 });
  assert.equal(broker.presenceLeave('room.1', 'c1'), true);
  s.close();
  broker.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
