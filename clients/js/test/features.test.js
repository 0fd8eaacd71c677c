'use strict';
// Publishing details (batches, typed events and validation), the offline
// queue's bounds, durable consumers and presence, over the WebSocket.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { Herald, cleanupsFor, makeClient, uniqueTopic, waitUntil } = require('./lib.js');

const cleanups = cleanupsFor(after);
let herald;
const server = async () => {
    if (!herald) {
        herald = await Herald.create({ config: 'presence_expiry_secs = 2\n' });
        cleanups.push(() => herald.cleanup());
        await herald.start();
    }
    return herald;
};

/** `ws` that records the client's messages (to count acknowledgements). */
function recordingWs(sent) {
    return class extends WebSocket {
        send(data) { sent.push(JSON.parse(data)); super.send(data); }
    };
}

test('batch publish: stored together, consecutive sequences, one result each', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    await c.ready();
    const topic = uniqueTopic('batch');
    const r = await c.publishBatch(topic, [{ type: 'a', data: 1 }, { type: 'b', data: 2, correlationId: 'x' }]);
    assert.equal(r.events.length, 2);
    assert.equal(r.events[1].seq, r.events[0].seq + 1);
    assert.deepEqual(r.events.map((e) => e.topicSeq), [1, 2]);
    const stored = await h.events(topic);
    assert.deepEqual(stored.map((e) => [e.type, e.data, e.correlation_id]), [['a', 1, undefined], ['b', 2, 'x']]);
});

test('validation hook: an invalid event is reported, not handled, and does not stop the stream', async () => {
    const h = await server();
    const c = makeClient(cleanups, {
        url: h.url, transports: ['websocket'],
        validate: (e) => e.type !== 'order.created' || typeof e.data?.id === 'number',
    });
    const topic = uniqueTopic('valid');
    const got = [];
    const invalid = [];
    const sub = c.subscribe(topic, (e) => { got.push(e.data); });
    sub.on('invalid', (x) => invalid.push(x.event.data));
    await sub.ready;
    await h.publish(topic, 'order.created', { id: 1 });
    await h.publish(topic, 'order.created', { id: 'nope' });
    await h.publish(topic, 'order.created', { id: 3 });
    await waitUntil(() => got.length === 2, 'the valid events');
    assert.deepEqual(got, [{ id: 1 }, { id: 3 }]);
    assert.deepEqual(invalid, [{ id: 'nope' }]);
    assert.equal(sub.position, 3);
});

test('offline queue: off by default (rejects); bounded by count, bytes and age; flushed once on reconnect', async () => {
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const topic = uniqueTopic('queue');

    const off = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    await off.ready();
    await h.kill();
    await waitUntil(() => off.state !== 'connected', 'the client to see the server gone');
    await assert.rejects(off.publish(topic, 'n', 1), (e) => e.code === 'offline');

    const q = makeClient(cleanups, {
        url: h.url, transports: ['websocket'], offlineQueue: { maxCount: 3, maxBytes: 100000, maxAgeMs: 60000 },
    });
    const queued = [1, 2, 3].map((i) => q.publish(topic, 'n', i));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(q.queued, 3);
    await assert.rejects(q.publish(topic, 'n', 4), (e) => e.code === 'queue_full');

    const bytes = makeClient(cleanups, { url: h.url, transports: ['websocket'], offlineQueue: { maxCount: 100, maxBytes: 300 } });
    const small = bytes.publish(topic, 'small', 'x'.repeat(50));
    await assert.rejects(bytes.publish(topic, 'big', 'x'.repeat(300)), (e) => e.code === 'queue_full');

    const aged = makeClient(cleanups, { url: h.url, transports: ['websocket'], offlineQueue: { maxAgeMs: 100 } });
    const old = aged.publish(topic, 'old', 1);
    old.catch(() => {});
    await new Promise((r) => setTimeout(r, 200));
    const young = aged.publish(topic, 'young', 1); // sweeps the old one out
    await assert.rejects(old, (e) => e.code === 'expired');
    await aged.close();
    await assert.rejects(young, (e) => e.code === 'closed');

    await h.start();
    const results = await Promise.all(queued);
    await small;
    const seqs = results.map((r) => r.topicSeq);
    assert.ok(seqs[0] < seqs[1] && seqs[1] < seqs[2], `queued in order: ${seqs}`);
    const stored = await h.events(topic);
    const key = (e) => JSON.stringify([e.type, e.data]);
    assert.deepEqual(stored.map(key).sort(), [['n', 1], ['n', 2], ['n', 3], ['small', 'x'.repeat(50)]].map(([type, data]) => key({ type, data })).sort());
    assert.equal(stored.length, 4, 'each queued publish stored once; the rejected ones not at all');
});

test('durable consumer: acknowledged after the handler resolves, acknowledgements coalesced, resumes after the checkpoint', async () => {
    const h = await server();
    const topic = uniqueTopic('jobs');
    const name = `w${process.pid}${Date.now() % 100000}`;
    const sent = [];
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'], WebSocket: recordingWs(sent), ackDelayMs: 50 });
    const got = [];
    let fail = true;
    const sub = c.consume(name, topic, async (e) => {
        await new Promise((r) => setTimeout(r, 1));
        // The first delivery of event 3 fails: it is not acknowledged.
        if (e.data === 3 && fail) { fail = false; throw new Error('handler failed'); }
        got.push(e.data);
    });
    await sub.ready;
    for (let i = 1; i <= 20; i++) await h.publish(topic, 'job', i);
    await waitUntil(() => got.length === 19, 'the jobs');
    await waitUntil(async () => {
        const r = await h.request('GET', '/v1/consumers');
        const me = r.body.consumers.find((x) => x.consumer === name);
        return me && me.checkpoint > 0 ? me : null;
    }, 'the checkpoint to move');
    await waitUntil(() => sent.filter((m) => m.op === 'ack').flatMap((a) => a.seqs).length >= 19, 'the acknowledgements');
    await new Promise((r) => setTimeout(r, 200)); // no more than those
    const acks = sent.filter((m) => m.op === 'ack');
    assert.ok(acks.length >= 1 && acks.length < 19, `${acks.length} ack messages for 19 events (coalesced)`);
    const acked = acks.flatMap((a) => a.seqs);
    assert.equal(acked.length, 19, 'every handled event acknowledged once, the failed one not');
    await c.close();

    // A new client with the same consumer: the checkpoint stopped before event 3
    // (never acknowledged), so it comes again, with what followed it.
    await h.publish(topic, 'job', 21);
    const c2 = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const again = [];
    c2.consume(name, topic, (e) => { again.push(e.data); });
    await waitUntil(() => again.includes(21), 'the new job');
    assert.deepEqual(again, Array.from({ length: 19 }, (_, k) => k + 3));
    await waitUntil(async () => {
        const r = await h.request('GET', '/v1/consumers');
        return r.body.consumers.find((x) => x.consumer === name).lag === 0;
    }, 'everything acknowledged');
    await c2.close();

    // Everything acknowledged: the next subscription gets only what is new.
    await h.publish(topic, 'job', 22);
    const c3 = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const third = [];
    c3.consume(name, topic, (e) => { third.push(e.data); });
    await waitUntil(() => third.length === 1, 'job 22');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(third, [22]);
});

test('presence: join heartbeats by itself past the expiry, watch keeps the live set, close leaves', async () => {
    const h = await server(); // sessions expire after 2 s without a heartbeat
    const room = uniqueTopic('room');
    const watcher = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const w = watcher.watch(room);
    const sets = [];
    w.on('change', (l) => sets.push(l.map((p) => p.user).sort()));

    const alice = makeClient(cleanups, { url: h.url, transports: ['websocket'], heartbeatMs: 500 });
    const a = alice.join(room, { user: 'alice', device: 'web', metadata: { x: 1 } });
    await waitUntil(() => w.members.size === 1, 'alice in the watched set');
    const m = w.members.get(a.clientId);
    assert.equal(m.user, 'alice');
    assert.deepEqual(m.metadata, { x: 1 });

    const bob = makeClient(cleanups, { url: h.url, transports: ['websocket'], heartbeatMs: 500 });
    bob.join(room, { user: 'bob' });
    await waitUntil(() => w.members.size === 2, 'bob too');

    await new Promise((r) => setTimeout(r, 3000)); // past the 2 s expiry: heartbeats keep both
    assert.deepEqual(w.list.map((p) => p.user).sort(), ['alice', 'bob']);
    const listed = await h.request('GET', `/v1/topics/${room}/presence`);
    assert.equal(listed.body.present.length, 2);

    await alice.close(); // leaves
    await waitUntil(() => w.members.size === 1, 'alice gone');
    assert.deepEqual(w.list.map((p) => p.user), ['bob']);

    // A second watcher starts from a snapshot.
    const late = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const w2 = late.watch(room);
    await waitUntil(() => w2.members.size === 1, 'the snapshot');
    assert.equal(w2.list[0].user, 'bob');
    assert.deepEqual(sets[sets.length - 1], ['bob']);
});

test('gap: events retention deleted arrive as one gap {from, to} on every transport, then the events after it', { timeout: 30000 }, async () => {
    // Its own server: retention by age would delete the other tests' events.
    const h = await Herald.create({ config: 'retention_max_age_secs = 1\n' });
    cleanups.push(() => h.cleanup());
    await h.start();
    const topic = uniqueTopic('gap');
    for (let i = 1; i <= 3; i++) await h.publish(topic, 'n', i);
    await waitUntil(async () => (await h.events(topic))[0]?.gap !== undefined, 'retention to delete the events', 15000, 100);
    await h.publish(topic, 'n', 4);
    for (const kind of ['websocket', 'sse', 'poll']) {
        const c = makeClient(cleanups, { url: h.url, transports: [kind] });
        const got = [];
        const gaps = [];
        const sub = c.subscribe(topic, (e) => { got.push(e.data); }, { after: 0 });
        sub.on('gap', (g) => gaps.push(g));
        await waitUntil(() => got.length === 1, `${kind}: the event after the gap`);
        assert.deepEqual(gaps.map(({ from, to }) => ({ from, to })), [{ from: 1, to: 3 }], kind);
        assert.deepEqual(got, [4], kind);
        assert.equal(sub.position, 4, kind);
        await c.close();
    }
});
