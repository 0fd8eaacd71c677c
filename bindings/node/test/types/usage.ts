// Compiled with tsc --noEmit (never run): the declarations in index.d.ts
// must accept this use of the API and reject the misuse marked below.
import { Broker, Durability, HeraldError, codes, load, type Delivery, type HeraldEvent } from 'herald-embedded';

export async function main(dir: string): Promise<number> {
  const path: string = load();
  const broker = Broker.open({ dataDir: dir, durability: Durability.INTERVAL });
  const pub = broker.publisher('acme.orders');
  const { seq, topicSeq } = pub.publish('order.created', '{"id":1}', { origin: 7, correlation: 'req-1' });
  pub.publishWith('order.created', 8, (view: Uint8Array) => view.set(Buffer.from('{"id":2}')));
  const sub = broker.subscribe({ topics: ['acme.>'] }, { seq: 1 });
  sub.on('event', (e: HeraldEvent) => console.log(e.seq, e.payload.toString()));
  sub.on('gap', (g) => console.log(g.from, g.to));
  for await (const d of sub) {
    if (d.gap) console.log(d.from);
    else console.log(d.type, d.correlation);
    break;
  }
  try {
    const d: Delivery | null = await sub.next(100);
    if (d && !d.gap) console.log(d.topicSeq);
  } catch (e) {
    if (e instanceof HeraldError && e.code === codes.TIMEOUT) console.log('nothing yet');
  }
  // @ts-expect-error: publish needs a payload
  pub.publish('order.created');
  // @ts-expect-error: unknown start kind
  broker.subscribe({ topics: ['x'] }, { from: 1 });
  await sub.close();
  pub.close();
  broker.close();
  return seq + topicSeq + path.length;
}
