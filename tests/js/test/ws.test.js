'use strict';
// WebSocket (/v1/ws) end to end with the npm `ws` client against a real
// `herald serve`: subscribe and its `recovered` flag, publish acknowledgements,
// in-order delivery, resume with `after`, error replies, and a restart.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Herald, WsClient, uniqueTopic } = require('../lib/herald.js');

let herald;
const clients = [];

before(async () => {
    herald = await Herald.create();
    await herald.start();
});

after(async () => {
    for (const c of clients) c.close();
    if (herald) await herald.cleanup();
});

async function connect() {
    const c = await WsClient.connect(herald.wsUrl);
    clients.push(c);
    return c;
}

/** The fields of event deliveries a test compares exactly. */
const brief = (m) => ({ sub: m.sub, topic: m.topic, topic_seq: m.topic_seq, event_type: m.event_type, data: m.data });

test('subscribe (recovered=false), publish with acknowledgements, every event in order exactly once', async (t) => {
    try {
        const topic = uniqueTopic('ws.live');
        const sub = await connect();
        const pub = await connect();

        const subscribed = await sub.request({ op: 'subscribe', id: 's1', topic },
            (m) => m.type === 'subscribed' || m.type === 'error', 'subscribed');
        assert.deepEqual(subscribed, { type: 'subscribed', id: 's1', recovered: false });

        // Publish over the WebSocket (with ref) and over HTTP, alternating.
        const acks = [];
        for (let i = 1; i <= 10; i++) {
            if (i % 2) {
                const ack = await pub.request({ op: 'publish', topic, type: 'order.created', data: { n: i }, ref: i },
                    (m) => (m.type === 'published' || m.type === 'error') && m.ref === i, `published ref ${i}`);
                assert.equal(ack.type, 'published', JSON.stringify(ack));
                assert.ok(Number.isInteger(ack.seq) && Number.isInteger(ack.topic_seq), JSON.stringify(ack));
                acks.push({ seq: ack.seq, topic_seq: ack.topic_seq });
            } else {
                acks.push(await herald.publish(topic, 'order.paid', { n: i }));
            }
        }
        // The acknowledged sequences: topic sequences dense from 1, global
        // sequences strictly increasing.
        assert.deepEqual(acks.map((a) => a.topic_seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        for (let i = 1; i < acks.length; i++) assert.ok(acks[i].seq > acks[i - 1].seq, JSON.stringify(acks));

        // A sentinel published last: once it arrived, everything before it has
        // (deliveries are in order), so the list below is complete.
        const sentinel = await herald.publish(topic, 'sentinel', null);
        await sub.waitFor((m) => m.type === 'event' && m.topic_seq === sentinel.topic_seq, 'the sentinel event');

        const expected = [];
        for (let i = 1; i <= 10; i++) {
            expected.push({ sub: 's1', topic, topic_seq: i, event_type: i % 2 ? 'order.created' : 'order.paid', data: { n: i } });
        }
        expected.push({ sub: 's1', topic, topic_seq: 11, event_type: 'sentinel', data: null });
        const events = sub.events('s1');
        assert.deepEqual(events.map(brief), expected);
        // Each delivery carries the global sequence the publisher was told.
        assert.deepEqual(events.map((e) => e.seq), [...acks.map((a) => a.seq), sentinel.seq]);
        for (const e of events) assert.equal(typeof e.timestamp_ns, 'number');
        // The subscriber received nothing but the subscribe reply and these events.
        assert.deepEqual(sub.messages.filter((m) => m.type !== 'event'), [subscribed]);
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        throw e;
    }
});

test('resume with after: recovered=true and exactly the events after that topic sequence', async () => {
    const topic = uniqueTopic('ws.resume');
    for (let i = 1; i <= 6; i++) await herald.publish(topic, 'item', { i });
    const c = await connect();

    const r1 = await c.request({ op: 'subscribe', id: 'from4', topic, after: 3 },
        (m) => (m.type === 'subscribed' || m.type === 'error') && m.id === 'from4', 'subscribed from4');
    assert.deepEqual(r1, { type: 'subscribed', id: 'from4', recovered: true });
    // after=0: from the start of the topic, on the same connection.
    const r2 = await c.request({ op: 'subscribe', id: 'all', topic, after: 0 },
        (m) => (m.type === 'subscribed' || m.type === 'error') && m.id === 'all', 'subscribed all');
    assert.deepEqual(r2, { type: 'subscribed', id: 'all', recovered: true });

    // Live events continue the replay on both subscriptions.
    await herald.publish(topic, 'item', { i: 7 });
    const sentinel = await herald.publish(topic, 'sentinel', 'end');
    await c.waitFor((m) => m.type === 'event' && m.sub === 'from4' && m.topic_seq === sentinel.topic_seq, 'from4 sentinel');
    await c.waitFor((m) => m.type === 'event' && m.sub === 'all' && m.topic_seq === sentinel.topic_seq, 'all sentinel');

    const item = (i) => ({ topic_seq: i, event_type: 'item', data: { i } });
    const pick = (m) => ({ topic_seq: m.topic_seq, event_type: m.event_type, data: m.data });
    const end = { topic_seq: 8, event_type: 'sentinel', data: 'end' };
    assert.deepEqual(c.events('from4').map(pick), [item(4), item(5), item(6), item(7), end]);
    assert.deepEqual(c.events('all').map(pick), [item(1), item(2), item(3), item(4), item(5), item(6), item(7), end]);
    // after = the last topic sequence: nothing replayed, recovered all the same.
    const r3 = await c.request({ op: 'subscribe', id: 'tail', topic, after: 8 },
        (m) => (m.type === 'subscribed' || m.type === 'error') && m.id === 'tail', 'subscribed tail');
    assert.deepEqual(r3, { type: 'subscribed', id: 'tail', recovered: true });
    const s2 = await herald.publish(topic, 'sentinel', 'again');
    await c.waitFor((m) => m.type === 'event' && m.sub === 'tail' && m.topic_seq === s2.topic_seq, 'tail sentinel');
    assert.deepEqual(c.events('tail').map(pick), [{ topic_seq: 9, event_type: 'sentinel', data: 'again' }]);
});

test('errors are replies and never close the connection: bad JSON, unknown or missing op, bad topic, duplicate id', async () => {
    const c = await connect();
    const isError = (m) => m.type === 'error';

    const badJson = await c.request('{"op": "subscribe", ', isError, 'error for bad JSON');
    assert.equal(badJson.type, 'error');
    assert.match(badJson.message, /JSON/i, JSON.stringify(badJson));

    const unknown = await c.request({ op: 'frobnicate', ref: 7 }, isError, 'error for an unknown op');
    assert.equal(unknown.op, 'frobnicate', JSON.stringify(unknown));
    assert.equal(unknown.ref, 7, JSON.stringify(unknown));
    assert.match(unknown.message, /frobnicate/, JSON.stringify(unknown));

    const missing = await c.request({ ref: 'x' }, isError, 'error for a missing op');
    assert.equal(missing.ref, 'x', JSON.stringify(missing));
    assert.match(missing.message, /op/, JSON.stringify(missing));

    const badTopic = await c.request({ op: 'subscribe', id: 'bad', topic: 'no spaces allowed', ref: 3 }, isError, 'error for an invalid topic');
    assert.equal(badTopic.op, 'subscribe', JSON.stringify(badTopic));
    assert.equal(badTopic.ref, 3, JSON.stringify(badTopic));

    const badPub = await c.request({ op: 'publish', topic: 'ws.errors', ref: 4 }, isError, 'error for a publish without type');
    assert.equal(badPub.op, 'publish', JSON.stringify(badPub));
    assert.equal(badPub.ref, 4, JSON.stringify(badPub));

    const topic = uniqueTopic('ws.errors');
    const ok = await c.request({ op: 'subscribe', id: 'dup', topic }, (m) => m.type === 'subscribed' || isError(m), 'subscribed dup');
    assert.deepEqual(ok, { type: 'subscribed', id: 'dup', recovered: false });
    const dup = await c.request({ op: 'subscribe', id: 'dup', topic, ref: 5 }, isError, 'error for a duplicate id');
    assert.equal(dup.ref, 5, JSON.stringify(dup));
    assert.match(dup.message, /dup/, JSON.stringify(dup));

    // Still open and working: ping answers, the subscription delivers.
    const pong = await c.request({ op: 'ping', ref: 'p' }, (m) => m.type === 'pong', 'pong');
    assert.equal(pong.ref, 'p');
    const p = await herald.publish(topic, 'after.errors', [1, 2]);
    const ev = await c.waitFor((m) => m.type === 'event' && m.sub === 'dup', 'the event after the errors');
    assert.deepEqual([ev.topic_seq, ev.seq, ev.event_type, ev.data], [p.topic_seq, p.seq, 'after.errors', [1, 2]]);
    assert.equal(c.closed, null);
    // Exactly one error per bad message, nothing else unexpected.
    assert.deepEqual(c.messages.map((m) => m.type),
        ['error', 'error', 'error', 'error', 'error', 'subscribed', 'error', 'pong', 'event']);
});

test('graceful restart: close code 1001, then resubscribe with after = last topic sequence continues exactly', async (t) => {
    try {
        const topic = uniqueTopic('ws.restart');
        const c = await connect();
        const r = await c.request({ op: 'subscribe', id: 's', topic }, (m) => m.type === 'subscribed' || m.type === 'error', 'subscribed');
        assert.deepEqual(r, { type: 'subscribed', id: 's', recovered: false });
        for (let i = 1; i <= 3; i++) await herald.publish(topic, 'tick', i);
        await c.waitFor((m) => m.type === 'event' && m.topic_seq === 3, 'event 3');

        await herald.stop();
        const closed = await c.waitClosed();
        assert.equal(closed.code, 1001, JSON.stringify(closed));
        await herald.start();

        // Published while no client is connected.
        for (let i = 4; i <= 6; i++) await herald.publish(topic, 'tick', i);
        const last = c.events('s').at(-1).topic_seq;
        assert.equal(last, 3);
        const c2 = await connect();
        const r2 = await c2.request({ op: 'subscribe', id: 's', topic, after: last },
            (m) => m.type === 'subscribed' || m.type === 'error', 'resubscribed');
        assert.deepEqual(r2, { type: 'subscribed', id: 's', recovered: true });
        const ack = await c2.request({ op: 'publish', topic, type: 'tick', data: 7, ref: 'last' },
            (m) => m.type === 'published' || m.type === 'error', 'published 7');
        assert.equal(ack.topic_seq, 7, JSON.stringify(ack));
        await c2.waitFor((m) => m.type === 'event' && m.topic_seq === 7, 'event 7');

        const all = [...c.events('s'), ...c2.events('s')];
        assert.deepEqual(all.map((m) => [m.topic_seq, m.data]), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6], [7, 7]]);
        // Global sequences survive the restart: still strictly increasing.
        for (let i = 1; i < all.length; i++) assert.ok(all[i].seq > all[i - 1].seq, JSON.stringify(all.map((m) => m.seq)));
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        throw e;
    }
});
