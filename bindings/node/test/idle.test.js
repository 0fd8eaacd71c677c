'use strict';
// Idle subscribers must not occupy libuv's thread pool (4 threads by
// default), which every fs, dns, zlib and crypto call of the process shares.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Broker, Durability } = require('..');

const SUBSCRIBERS = 8;
const CALLS = 200;
// Unloaded, 200 stats take well under a second; with subscribers waiting on
// the pool each one queues behind their waits (~100 ms each: ~20 s).
const LIMIT_MS = 8000;

test(`${SUBSCRIBERS} idle subscribers leave the thread pool free for fs calls`, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-idle-'));
  const broker = Broker.open({ dataDir: dir, durability: Durability.NEVER, prefault: false });
  const subs = [];
  for (let i = 0; i < SUBSCRIBERS; i++) subs.push(broker.subscribe({ topics: ['idle.test'] }));
  try {
    const pending = subs.map((s) => s.next());
    await new Promise((resolve) => setTimeout(resolve, 200)); // let every subscriber settle into its wait

    const times = [];
    const started = performance.now();
    const deadline = new Promise((_, reject) => {
      const t = setTimeout(() => reject(new Error(
        `only ${times.length} of ${CALLS} fs.stat calls finished in ${LIMIT_MS} ms (p50 so far ${median(times)} ms)`)), LIMIT_MS);
      t.unref();
    });
    const stats = (async () => {
      for (let i = 0; i < CALLS; i++) {
        const t0 = performance.now();
        await fs.promises.stat(__filename);
        times.push(performance.now() - t0);
      }
    })();
    await Promise.race([stats, deadline]);
    const total = performance.now() - started;
    console.log(`fs.stat with ${SUBSCRIBERS} idle subscribers: p50 ${median(times).toFixed(3)} ms, ` +
      `max ${Math.max(...times).toFixed(3)} ms, ${CALLS} calls in ${total.toFixed(0)} ms`);

    // The subscribers were really waiting: one publish wakes them all.
    const p = broker.publisher('idle.test');
    p.publish('ping', 'x');
    const got = await Promise.all(pending);
    for (const e of got) assert.equal(e.type, 'ping');
    p.close();
  } finally {
    await Promise.all(subs.map((s) => s.close()));
    broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function median(xs) {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
