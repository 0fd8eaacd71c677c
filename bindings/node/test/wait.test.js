'use strict';
// Waiting on the subscriber's fd in the event loop: timeouts, wake-ups,
// close() while waiting, and an idle subscriber never keeping the process alive.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Broker, Durability, HeraldError, codes } = require('..');

function withBroker(fn) {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-wait-'));
    const broker = Broker.open({ dataDir: dir, durability: Durability.NEVER, prefault: false });
    try {
      await fn(broker);
    } finally {
      broker.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('next(timeoutMs) rejects with TIMEOUT when nothing arrives, resolves when something does', withBroker(async (broker) => {
  const sub = broker.subscribe({ topics: ['wait.t'] });
  const t0 = performance.now();
  await assert.rejects(sub.next(50), (e) => e instanceof HeraldError && e.code === codes.TIMEOUT);
  assert.ok(performance.now() - t0 >= 45, 'waited about the timeout');
  assert.equal((await sub.next(0).catch((e) => e)).code, codes.TIMEOUT);

  const pub = broker.publisher('wait.t');
  setTimeout(() => pub.publish('late', 'x'), 30);
  const e = await sub.next(10000);
  assert.equal(e.type, 'late');
  // Something already queued resolves even with a zero timeout.
  pub.publish('now', 'y');
  assert.equal((await sub.next(0)).type, 'now');
  pub.close();
  await sub.close();
}));

test('concurrent next() calls on one subscriber share its wait', withBroker(async (broker) => {
  const sub = broker.subscribe({ topics: ['wait.c'] });
  const a = sub.next();
  const b = sub.next();
  const pub = broker.publisher('wait.c');
  setTimeout(() => { pub.publish('one', '1'); pub.publish('two', '2'); }, 20);
  const got = (await Promise.all([a, b])).map((e) => e.type).sort();
  assert.deepEqual(got, ['one', 'two']);
  pub.close();
  await sub.close();
}));

test('close() ends a pending next() and a for-await loop', withBroker(async (broker) => {
  const sub = broker.subscribe({ topics: ['wait.close'] });
  const pending = sub.next();
  const iterSub = broker.subscribe({ topics: ['wait.close'] });
  const loop = (async () => {
    let n = 0;
    for await (const e of iterSub) n += e ? 1 : 0;
    return n;
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  await Promise.all([sub.close(), iterSub.close()]);
  assert.equal(await pending, null);
  assert.equal(await loop, 0);
  assert.equal(sub.closed, true);
  assert.equal(await sub.next(), null);
}));

test('a subscriber nobody waits on does not keep the process alive', () => {
  const script = `
    const fs = require('node:fs'), os = require('node:os'), path = require('node:path');
    const { Broker } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-node-exit-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    const b = Broker.open({ dataDir: dir, prefault: false });
    const s = b.subscribe({ topics: ['x'] });
    const f = () => {};
    s.on('event', f);
    setTimeout(() => s.off('event', f), 50);
  `;
  const t0 = performance.now();
  execFileSync(process.execPath, ['-e', script], { timeout: 10000, stdio: 'inherit' });
  assert.ok(performance.now() - t0 < 10000);
});
