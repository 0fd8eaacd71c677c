'use strict';
// herald is killed (SIGKILL) and restarted on the same port and data
// mid-stream while subscribers on each of the three transports receive and a
// publisher (with the offline queue) keeps publishing: each subscriber must end
// with exactly the events of the log, once each, in order. Also: the backoff
// while the server is down, and a graceful shutdown (1001).

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { EventSource } = require('eventsource');
const { Herald, cleanupsFor, makeClient, uniqueTopic, waitUntil } = require('./lib.js');

const cleanups = cleanupsFor(after);

test('SIGKILL restart mid-stream: WebSocket, SSE and long-poll subscribers each get every event exactly once, in order', { timeout: 60000 }, async (t) => {
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const topic = uniqueTopic('restart');
    // While `hold` is set the subscribers' connections go to a closed port: they
    // stay away until events exist that only a resume from their position delivers.
    let hold = false;
    const away = (u) => (hold ? u.replace(`:${h.port}/`, ':1/') : u);
    const gated = {
        WebSocket: class extends WebSocket { constructor(u, ...a) { super(away(u), ...a); } },
        EventSource: class extends EventSource { constructor(u, ...a) { super(away(u), ...a); } },
        fetch: (u, o) => fetch(away(u), o),
    };
    const subs = {};
    for (const kind of ['websocket', 'sse', 'poll']) {
        const c = makeClient(cleanups, { url: h.url, transports: [kind], backoff: { minMs: 100, maxMs: 400, stableMs: 1000 }, ...gated });
        const got = [];
        const sub = c.subscribe(topic, (e) => { got.push({ topicSeq: e.topicSeq, data: e.data }); });
        subs[kind] = { c, got, sub };
        await sub.ready;
        assert.equal(c.transport, kind);
    }
    const pub = makeClient(cleanups, { url: h.url, transports: ['websocket'], offlineQueue: { maxCount: 1000 } });
    await pub.ready();

    const acked = [];
    const N = 60;
    let killed;
    for (let i = 1; i <= N; i++) {
        if (i === 25) {
            // Kill without waiting for the publish in flight: it may or may not be stored.
            killed = (async () => {
                hold = true;
                await h.kill('SIGKILL');
                // Down for a while: several backoff attempts.
                await new Promise((r) => setTimeout(r, 1500));
                await h.start();
                for (let k = 1; k <= 5; k++) await h.publish(topic, 'direct', k);
                hold = false;
            })();
        }
        const p = pub.publish(topic, 'n', i).then((r) => acked.push({ i, ...r }));
        if (i < 25 || i > 30) await p; // a few publishes go out during the outage, queued
        await new Promise((r) => setTimeout(r, 5));
    }
    await killed;
    await waitUntil(() => acked.length === N, 'every publish acknowledged', 20000);
    const stored = await h.events(topic);
    const last = stored[stored.length - 1].topic_seq;
    for (const [kind, s] of Object.entries(subs)) {
        await waitUntil(() => s.sub.position === last, `the ${kind} subscriber to catch up`, 20000);
        assert.deepEqual(s.got, stored.map((e) => ({ topicSeq: e.topic_seq, data: e.data })), `${kind}: exactly the log`);
        const states = s.c.stateLog.map((x) => x.state);
        assert.ok(states.filter((x) => x === 'connected').length >= 2, `${kind} reconnected: ${states}`);
        assert.ok(s.c.stateLog.filter((x) => x.state === 'connected').every((x) => x.transport === kind));
    }
    // Every acknowledged event is in the log, once.
    for (const a of acked) assert.equal(stored.filter((e) => e.type === 'n' && e.data === a.i).length, 1, `event ${a.i} stored once`);
    assert.equal(stored.filter((e) => e.type === 'direct').length, 5);
    assert.deepEqual(acked.map((a) => a.topicSeq).sort((x, y) => x - y), stored.filter((e) => e.type === 'n').map((e) => e.topic_seq));
    // The backoff while down: full jitter, within min(max, min * 2^attempt).
    const downs = subs.websocket.c.stateLog.filter((x) => x.state === 'disconnected');
    t.diagnostic(`websocket backoff delays: ${downs.map((x) => Math.round(x.delayMs)).join(', ')}`);
    assert.ok(downs.length >= 3, 'several attempts while the server was down');
    for (const d of downs) assert.ok(d.delayMs >= 0 && d.delayMs <= 400, `delay ${d.delayMs}`);
});

test('graceful shutdown (1001): the client reconnects after a jittered delay and resumes', { timeout: 30000 }, async () => {
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const topic = uniqueTopic('shutdown');
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
    const got = [];
    await c.subscribe(topic, (e) => { got.push(e.data); }).ready;
    await h.publish(topic, 'n', 1);
    await waitUntil(() => got.length === 1, 'event 1');
    await h.kill('SIGTERM');
    await waitUntil(() => c.stateLog.some((s) => s.state === 'disconnected'), 'the disconnect');
    const d = c.stateLog.find((s) => s.state === 'disconnected');
    assert.equal(d.code, 1001);
    assert.ok(d.delayMs > 0, 'not at once: jittered');
    await h.start();
    await h.publish(topic, 'n', 2);
    await waitUntil(() => got.length === 2, 'event 2 after the restart');
    assert.deepEqual(got, [1, 2]);
});
