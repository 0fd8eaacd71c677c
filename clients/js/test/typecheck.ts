// Compiled (not run) by the build: the event map types handlers and publishes;
// each @ts-expect-error line must be a type error, or the build fails.
import { createClient, HeraldAuthError, type HeraldEvent } from '../src/index.js';

type Events = { 'order.created': { id: number }; 'order.paid': { id: number; amount: number } };
const client = createClient<Events>({ url: 'http://127.0.0.1:7070', validate: (e: HeraldEvent<Events>) => e.seq > 0 });

client.subscribe('orders.>', (e) => {
  if (e.type === 'order.paid') {
    const amount: number = e.data.amount;
    void amount;
  } else {
    // @ts-expect-error: an order.created payload has no amount
    void e.data.amount;
  }
});
void client.publish('orders.1', 'order.created', { id: 1 });
// @ts-expect-error: the payload of order.created is { id: number }
void client.publish('orders.1', 'order.created', { id: '1' });
// @ts-expect-error: not an event type of the map
void client.publish('orders.1', 'order.shipped', { id: 1 });
void client.publishBatch('orders.1', [{ type: 'order.paid', data: { id: 1, amount: 5 } }]);
void client.publish('orders.1', 'order.paid', { id: 1, amount: 2 }).then((r) => r.seq + r.topicSeq);
client.ready().catch((e) => e instanceof HeraldAuthError && e.code === 'unauthenticated');
