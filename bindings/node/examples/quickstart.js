const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Broker, Durability, HeraldError, codes } = require('herald-embedded');

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-demo-'));
  const broker = Broker.open({ dataDir, durability: Durability.INTERVAL });
  const pub = broker.publisher('acme.orders');
  const sub = broker.subscribe({ topics: ['acme.>'] }, { now: true });

  pub.publish('order.created', '{"id":1}', { origin: 7, correlation: 'req-1' });
  pub.publishWith('order.created', 8, (view) => view.set(Buffer.from('{"id":2}')));

  // EventEmitter style …
  sub.on('gap', (g) => console.warn('missed', g.from, g.to));
  await new Promise((resolve) => {
    let seen = 0;
    sub.on('event', (e) => {
      console.log(e.seq, e.type, e.payload.toString(), e.correlation || '(no correlation)');
      if (++seen === 2) resolve();
    });
  });

  // … or an async iterator on another subscriber …
  const replay = broker.subscribe({ topics: ['acme.orders'] }, { lastN: 2 });
  for await (const e of replay) {
    console.log('replayed', e.seq);
    if (e.payload.toString() === '{"id":2}') break;
  }

  // … or next(timeoutMs), which rejects with code TIMEOUT when nothing comes.
  try {
    await replay.next(100);
  } catch (e) {
    if (!(e instanceof HeraldError && e.code === codes.TIMEOUT)) throw e;
    console.log('nothing more within 100 ms');
  }

  await replay.close();
  await sub.close();
  pub.close();
  broker.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
