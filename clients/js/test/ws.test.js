'use strict';
// The client over the WebSocket transport against a live herald: publish and
// subscribe, positions (resume, duplicates dropped, persisted, reset), the
// slow-client close 4008, batches, typed events with validation, the offline
// queue's bounds, durable consumers and presence.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { Herald, cleanupsFor, makeClient, uniqueTopic, waitUntil } = require('./lib.js');
const { fileStore } = require('../dist/node.cjs');

const cleanups = cleanupsFor(after);
let herald;
const server = async () => {
    if (!herald) {
        herald = await Herald.create({ config: 'presence_expiry_secs = 2\nmax_output = 65536\nslow_client_deadline_secs = 1\n' });
        cleanups.push(() => herald.cleanup());
        await herald.start();
    }
    return herald;
};

/** A `ws` WebSocket whose instances the test can reach (to drop or stall them). */
function trackedWs() {
    const sockets = [];
    class Tracked extends WebSocket {
        constructor(...a) { super(...a); sockets.push(this); }
    }
    return { Tracked, sockets, last: () => sockets[sockets.length - 1] };
}

const datas = (list) => list.map((e) => e.data);

test('publish and subscribe: each event once, in order, with its positions; state events and ready()', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    await c.ready();
    assert.equal(c.state, 'connected');
    assert.equal(c.transport, 'websocket');
    assert.deepEqual(c.stateLog.map((s) => s.state), ['connecting', 'connected']);
    assert.equal(c.stateLog[1].transport, 'websocket');

    const topic = uniqueTopic('basic');
    await h.publish(topic, 'before', { i: 0 }); // before the subscription: not delivered
    const got = [];
    const sub = c.subscribe(topic, (e) => { got.push(e); });
    await sub.ready;
    const results = [];
    for (let i = 1; i <= 5; i++) results.push(await c.publish(topic, 'n', { i }, { correlationId: `c${i}` }));
    await waitUntil(() => got.length === 5, 'five events');
    assert.deepEqual(datas(got), [1, 2, 3, 4, 5].map((i) => ({ i })));
    assert.deepEqual(got.map((e) => e.topicSeq), [2, 3, 4, 5, 6]);
    assert.deepEqual(got.map((e) => e.seq), results.map((r) => r.seq));
    assert.deepEqual(results.map((r) => r.topicSeq), [2, 3, 4, 5, 6]);
    assert.equal(got[0].type, 'n');
    assert.equal(got[0].topic, topic);
    assert.equal(got[0].correlationId, 'c1');
    assert.equal(sub.position, 6);
    sub.unsubscribe();
    await c.publish(topic, 'n', { i: 6 });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got.length, 5, 'nothing after unsubscribe');
});

test('resume after a dropped connection: from the position, nothing lost; duplicates the server repeats are dropped', async () => {
    const h = await server();
    const { Tracked, last } = trackedWs();
    // Every event message arrives twice: the client must drop the copies.
    class Doubling extends Tracked {
        set onmessage(f) {
            super.onmessage = f && ((ev) => { f(ev); if (String(ev.data).includes('"type":"event"')) f(ev); });
        }
        get onmessage() { return super.onmessage; }
    }
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'], WebSocket: Doubling });
    const topic = uniqueTopic('resume');
    const got = [];
    const recovered = [];
    const sub = c.subscribe(topic, (e) => { got.push(e.data.i); });
    sub.on('recovered', (r) => recovered.push(r));
    await sub.ready;
    for (let i = 1; i <= 3; i++) await h.publish(topic, 'n', { i });
    await waitUntil(() => got.length === 3, 'events 1-3');
    last().terminate();
    // The state log, not the state: the reconnect may be over between two polls.
    await waitUntil(() => c.stateLog.some((s) => s.state === 'disconnected'), 'the client to notice');
    for (let i = 4; i <= 6; i++) await h.publish(topic, 'n', { i }); // while it is away
    await waitUntil(() => got.length === 6, 'events 4-6 after the reconnect');
    await h.publish(topic, 'n', { i: 7 });
    await waitUntil(() => got.length === 7, 'event 7');
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7]);
    assert.ok(sub.dropped >= 7, `duplicates dropped: ${sub.dropped}`);
    assert.deepEqual(recovered, [{ position: 3 }]);
    const states = c.stateLog.map((s) => s.state);
    assert.deepEqual(states.slice(0, 4), ['connecting', 'connected', 'disconnected', 'connecting']);
    const d = c.stateLog.find((s) => s.state === 'disconnected');
    assert.equal(d.transport, 'websocket');
    assert.ok(d.delayMs >= 0 && d.delayMs <= 500, `backoff ${d.delayMs} within the configured bound`);
});

test('a subscription from now resumes exactly even if the connection drops before its first event', async () => {
    const h = await server();
    const { Tracked, last } = trackedWs();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'], WebSocket: Tracked });
    const topic = uniqueTopic('fromnow');
    await h.publish(topic, 'old', {});
    const got = [];
    const sub = c.subscribe(topic, (e) => { got.push(e.type); });
    await sub.ready;
    assert.equal(sub.position, 1, 'the head, learned at subscribe');
    last().terminate();
    await h.publish(topic, 'during', {});
    await waitUntil(() => got.length === 1, 'the event published while disconnected');
    assert.deepEqual(got, ['during']);
});

test('positions persist in a file store: a new client continues after the last processed event', async () => {
    const h = await server();
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'herald-store-')), 'positions.json');
    const topic = uniqueTopic('persist');
    const a = makeClient(cleanups, { url: h.url, transports: ['websocket'], store: fileStore(file) });
    const gotA = [];
    await a.subscribe(topic, (e) => { gotA.push(e.data); }, { key: 'orders' }).ready;
    for (let i = 1; i <= 3; i++) await h.publish(topic, 'n', i);
    await waitUntil(() => gotA.length === 3, 'three events');
    await a.close();
    assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { orders: 3 });
    for (let i = 4; i <= 5; i++) await h.publish(topic, 'n', i);
    const b = makeClient(cleanups, { url: h.url, transports: ['websocket'], store: fileStore(file) });
    const gotB = [];
    const sub = b.subscribe(topic, (e) => { gotB.push(e.data); }, { key: 'orders' });
    await waitUntil(() => gotB.length === 2, 'the two events after the stored position');
    assert.deepEqual(gotB, [4, 5]);
    assert.equal(sub.position, 5);
});

test('a position past the end of the log: a reset event with the head, then the events after it', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const topic = uniqueTopic('reset');
    await h.publish(topic, 'n', 1);
    const got = [];
    const resets = [];
    const sub = c.subscribe(topic, (e) => { got.push(e.data); }, { after: 50 });
    sub.on('reset', (r) => resets.push(r));
    await sub.ready;
    await waitUntil(() => resets.length === 1, 'the reset');
    assert.deepEqual(resets, [{ head: 1 }]);
    await h.publish(topic, 'n', 2);
    await waitUntil(() => got.length === 1, 'the next event');
    assert.deepEqual(got, [2]);
});

test('sync(): reads the position, loads state as of it, then subscribes after it', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const topic = uniqueTopic('sync');
    for (let i = 1; i <= 3; i++) await h.publish(topic, 'add', i);
    let state = null;
    const loads = [];
    const sub = await c.sync(topic, async (position) => {
        loads.push(position);
        // The application's own state source: here, the log itself up to `position`.
        const events = await h.events(topic);
        state = events.filter((e) => e.topic_seq <= position).reduce((n, e) => n + e.data, 0);
    }, (e) => { state += e.data; });
    assert.deepEqual(loads, [3]);
    assert.equal(state, 6);
    await h.publish(topic, 'add', 10);
    await waitUntil(() => state === 16, 'the event after the loaded state');
    assert.equal(sub.position, 4);
});

test('patterns and several topics: positions are global sequences', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const base = uniqueTopic('pat');
    const got = [];
    const sub = c.subscribe([`${base}.*`, `${base}x`], (e) => { got.push([e.topic, e.data]); });
    await sub.ready;
    const r1 = await c.publish(`${base}.a`, 'n', 1);
    await c.publish(`${base}x`, 'n', 2);
    const r3 = await c.publish(`${base}.b`, 'n', 3);
    await waitUntil(() => got.length === 3, 'three events');
    assert.deepEqual(got, [[`${base}.a`, 1], [`${base}x`, 2], [`${base}.b`, 3]]);
    assert.equal(sub.position, r3.seq);
    assert.ok(r1.seq < r3.seq);
});

test('close 4008 (slow client): resumes at once from the positions in the close reason, every event once', async () => {
    const h = await server();
    const { Tracked, last } = trackedWs();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'], WebSocket: Tracked });
    const topic = uniqueTopic('slow');
    const got = [];
    const sub = c.subscribe(topic, (e) => { got.push(e.data.i); });
    await sub.ready;
    last().pause(); // stop reading: the server's output for this client piles up
    const pad = 'x'.repeat(16000);
    const N = 400;
    // Published over HTTP: the stalled socket would hold the client's own replies too.
    for (let i = 1; i <= N; i++) await h.publish(topic, 'n', { i, pad });
    await new Promise((r) => setTimeout(r, 1500)); // past the 1 s slow-client deadline
    last().resume();
    await waitUntil(() => c.stateLog.some((s) => s.code === 4008), 'the 4008 close', 20000);
    await waitUntil(() => got.length >= N, 'every event', 30000);
    const d = c.stateLog.find((s) => s.code === 4008);
    assert.match(d.reason, /s\d+=\d+\/\d+/);
    assert.equal(d.delayMs, 0, 'a 4008 reconnects at once');
    assert.deepEqual(got, Array.from({ length: N }, (_, k) => k + 1));
});

test('a subscription the server refuses: ready rejects and the subscription emits error', async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const sub = c.subscribe('bad topic!', () => {});
    const errors = [];
    sub.on('error', (e) => errors.push(e));
    await assert.rejects(sub.ready, (e) => e.code === 'invalid');
    assert.equal(errors.length, 1);
    // The connection is unaffected.
    const topic = uniqueTopic('after');
    await c.publish(topic, 'n', 1);
});
