'use strict';
// Events/s received through the Node binding, 64-byte events
// (docs/BENCHMARKS.md, "C ABI"). node bench.js [EVENTS] [ROUNDS]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Broker, Durability } = require('.');

const events = Number(process.argv[2] || 500000);
const rounds = Number(process.argv[3] || 5);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const res = { publish: [], receive_sync: [], receive_async_iter: [] };

(async () => {
  for (let r = 0; r < rounds; r++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-bench-'));
    const b = Broker.open({ dataDir: dir, ringCapacity: 1 << 28, segmentSize: 2 ** 30, durability: Durability.NEVER,
      prefault: false });
    const p = b.publisher('bench.topic');
    const s1 = b.subscribe({ topics: ['bench.topic'] });
    const s2 = b.subscribe({ topics: ['bench.topic'] });
    const payload = Buffer.alloc(64, 7);
    let t = process.hrtime.bigint();
    for (let i = 0; i < events; i++) p.publish('e', payload);
    res.publish.push(events / (Number(process.hrtime.bigint() - t) / 1e9));
    t = process.hrtime.bigint();
    let n = 0;
    while (s1.tryNext()) n++;
    if (n !== events) throw new Error(`got ${n}`);
    res.receive_sync.push(n / (Number(process.hrtime.bigint() - t) / 1e9));
    t = process.hrtime.bigint();
    n = 0;
    for await (const e of s2) {
      if (e.payload.length !== 64) throw new Error('bad payload');
      if (++n === events) break;
    }
    res.receive_async_iter.push(n / (Number(process.hrtime.bigint() - t) / 1e9));
    s1.close();
    s2.close();
    p.close();
    b.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const [k, v] of Object.entries(res)) console.log(`node ${k} ${Math.round(median(v))}`);
})();
