'use strict';
// Server-Sent Events end to end with the npm `eventsource` client against a
// real `herald serve`: `id:` is the topic sequence, `event:` the event type,
// and after the server is restarted the client reconnects by itself with
// Last-Event-ID and continues exactly once. Events are published over HTTP
// with Node's global fetch.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { EventSource } = require('eventsource');
const { Herald, uniqueTopic, waitUntil } = require('../lib/herald.js');

let herald;
const sources = [];

before(async () => {
    herald = await Herald.create();
    await herald.start();
});

after(async () => {
    for (const es of sources) es.close();
    if (herald) await herald.cleanup();
});

const TYPES = ['order.created', 'order.paid', 'sentinel'];

/**
 * An EventSource that records every event of TYPES as {id, type, data} and,
 * through its `fetch` option, every request it makes (with the Last-Event-ID
 * it sent). While `hold` is set, requests wait for it before going out.
 */
function recordingSource(url) {
    const rec = { events: [], requests: [], opens: 0, errors: 0, hold: null };
    const fetchSpy = async (input, init) => {
        rec.requests.push({ lastEventId: init.headers['Last-Event-ID'] ?? null, accept: init.headers.Accept });
        if (rec.hold) await rec.hold;
        return fetch(input, init);
    };
    const es = new EventSource(url, { fetch: fetchSpy });
    sources.push(es);
    for (const type of TYPES) {
        es.addEventListener(type, (e) => rec.events.push({ id: e.lastEventId, type: e.type, data: JSON.parse(e.data) }));
    }
    // Events of other types (or without `event:`) would land here: recorded
    // too, so that an unexpected event fails the exact comparisons.
    es.onmessage = (e) => rec.events.push({ id: e.lastEventId, type: e.type, data: e.data });
    es.addEventListener('open', () => { rec.opens += 1; });
    es.addEventListener('error', () => { rec.errors += 1; });
    return { es, rec };
}

test('SSE: id is the topic sequence, event is the type, data the payload, in order', async (t) => {
    try {
        const topic = uniqueTopic('sse.live');
        const { es, rec } = recordingSource(`${herald.url}/v1/topics/${topic}/events`);
        // The stream starts with the next event published: wait until it is open.
        await waitUntil(() => rec.opens === 1, 'the EventSource to open');

        const published = [];
        for (let i = 1; i <= 5; i++) {
            published.push(await herald.publish(topic, i % 2 ? 'order.created' : 'order.paid', { i, text: `line ${i}` }));
        }
        assert.deepEqual(published.map((p) => p.topic_seq), [1, 2, 3, 4, 5]);
        await herald.publish(topic, 'sentinel', { end: true });
        await waitUntil(() => rec.events.some((e) => e.type === 'sentinel'), 'the sentinel event');

        assert.deepEqual(rec.events, [
            { id: '1', type: 'order.created', data: { i: 1, text: 'line 1' } },
            { id: '2', type: 'order.paid', data: { i: 2, text: 'line 2' } },
            { id: '3', type: 'order.created', data: { i: 3, text: 'line 3' } },
            { id: '4', type: 'order.paid', data: { i: 4, text: 'line 4' } },
            { id: '5', type: 'order.created', data: { i: 5, text: 'line 5' } },
            { id: '6', type: 'sentinel', data: { end: true } },
        ]);
        assert.deepEqual(rec.requests, [{ lastEventId: null, accept: 'text/event-stream' }]);
        assert.equal(rec.errors, 0);
        assert.equal(es.readyState, EventSource.OPEN);
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        throw e;
    }
});

test('SSE: ?after=N replays from the log, then continues live', async () => {
    const topic = uniqueTopic('sse.after');
    for (let i = 1; i <= 4; i++) await herald.publish(topic, 'order.created', { i });
    const { es, rec } = recordingSource(`${herald.url}/v1/topics/${topic}/events?after=2`);
    await waitUntil(() => rec.events.length >= 2, 'the replayed events');
    await herald.publish(topic, 'sentinel', { i: 5 });
    await waitUntil(() => rec.events.some((e) => e.type === 'sentinel'), 'the sentinel event');
    assert.deepEqual(rec.events, [
        { id: '3', type: 'order.created', data: { i: 3 } },
        { id: '4', type: 'order.created', data: { i: 4 } },
        { id: '5', type: 'sentinel', data: { i: 5 } },
    ]);
    es.close();
});

test('SSE: after a server restart the EventSource reconnects with Last-Event-ID and gets every event exactly once', async (t) => {
    try {
        const topic = uniqueTopic('sse.restart');
        const { es, rec } = recordingSource(`${herald.url}/v1/topics/${topic}/events`);
        await waitUntil(() => rec.opens === 1, 'the EventSource to open');

        for (let i = 1; i <= 3; i++) await herald.publish(topic, 'order.created', { i });
        await waitUntil(() => rec.events.length === 3, 'events 1-3');

        // Hold the client's reconnects until the events published while it
        // was away exist: then only Last-Event-ID can bring them.
        let release;
        rec.hold = new Promise((r) => { release = r; });
        const stopped = await herald.stop();
        assert.deepEqual(stopped, { code: 0, signal: null }, 'herald exits 0 on SIGTERM');
        await waitUntil(() => rec.errors >= 1, 'the EventSource to notice the closed stream');
        assert.equal(es.readyState, EventSource.CONNECTING, 'the EventSource reconnects by itself');
        // Its reconnect (after the server's `retry:`) is held in fetchSpy.
        await waitUntil(() => rec.requests.length === 2, 'the EventSource to try to reconnect', 20000);

        await herald.start();
        for (let i = 4; i <= 6; i++) await herald.publish(topic, 'order.paid', { i });
        release();
        rec.hold = null;

        await waitUntil(() => rec.opens === 2, 'the EventSource to reconnect', 20000);
        await herald.publish(topic, 'sentinel', { i: 7 });
        await waitUntil(() => rec.events.some((e) => e.type === 'sentinel'), 'the sentinel event', 20000);

        assert.deepEqual(rec.events, [
            { id: '1', type: 'order.created', data: { i: 1 } },
            { id: '2', type: 'order.created', data: { i: 2 } },
            { id: '3', type: 'order.created', data: { i: 3 } },
            { id: '4', type: 'order.paid', data: { i: 4 } },
            { id: '5', type: 'order.paid', data: { i: 5 } },
            { id: '6', type: 'order.paid', data: { i: 6 } },
            { id: '7', type: 'sentinel', data: { i: 7 } },
        ]);
        // First request without Last-Event-ID, the (held) reconnect with "3".
        assert.deepEqual(rec.requests.map((r) => r.lastEventId), [null, '3']);
        es.close();
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        throw e;
    }
});

// On a reconnect, an EventSource sends the URL it was opened with (here
// `?after=1`) plus Last-Event-ID; the header must win, or the client gets
// the events between `after` and Last-Event-ID again.
test('SSE: a stream opened with ?after=N resumes from Last-Event-ID (not N) after a reconnect', async (t) => {
    try {
        const topic = uniqueTopic('sse.afterresume');
        await herald.publish(topic, 'order.created', { i: 1 });
        await herald.publish(topic, 'order.created', { i: 2 });
        const { es, rec } = recordingSource(`${herald.url}/v1/topics/${topic}/events?after=1`);
        await waitUntil(() => rec.events.length === 1, 'event 2');
        await herald.publish(topic, 'order.created', { i: 3 });
        await waitUntil(() => rec.events.length === 2, 'event 3');

        let release;
        rec.hold = new Promise((r) => { release = r; });
        await herald.stop();
        await waitUntil(() => rec.requests.length === 2, 'the EventSource to try to reconnect', 20000);
        await herald.start();
        await herald.publish(topic, 'order.paid', { i: 4 });
        release();
        rec.hold = null;
        await waitUntil(() => rec.opens === 2, 'the EventSource to reconnect', 20000);
        await herald.publish(topic, 'sentinel', { i: 5 });
        await waitUntil(() => rec.events.some((e) => e.type === 'sentinel'), 'the sentinel event', 20000);
        es.close();

        assert.deepEqual(rec.requests.map((r) => r.lastEventId), [null, '3']);
        assert.deepEqual(rec.events, [
            { id: '2', type: 'order.created', data: { i: 2 } },
            { id: '3', type: 'order.created', data: { i: 3 } },
            { id: '4', type: 'order.paid', data: { i: 4 } },
            { id: '5', type: 'sentinel', data: { i: 5 } },
        ]);
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        throw e;
    }
});
