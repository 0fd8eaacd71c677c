'use strict';
// The fallback order in Node: WebSocket refused → SSE (publishing, acks and
// presence over HTTP); no EventSource either → long-polling. The same API on
// each, the transport named in the state events.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
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

/** A WebSocket that never connects (as behind a proxy that refuses upgrades). */
class Refused {
    constructor() {
        setTimeout(() => { this.onerror?.({}); this.onclose?.({ code: 1006, reason: '' }); }, 5);
    }
    send() { throw new Error('not open'); }
    close() {}
}

for (const [kind, extra] of [['sse', {}], ['poll', { EventSource: undefined }]]) {
    test(`WebSocket refused${kind === 'poll' ? ', no EventSource' : ''}: falls back to ${kind}; subscribe, publish, batch, consume and presence work`, { timeout: 30000 }, async () => {
        const h = await server();
        const c = makeClient(cleanups, { url: h.url, WebSocket: Refused, ...extra });
        await c.ready();
        assert.equal(c.transport, kind);
        assert.deepEqual(c.stateLog.map((s) => [s.state, s.transport]), [['connecting', null], ['connected', kind]]);

        const topic = uniqueTopic(`fb${kind}`);
        const got = [];
        const sub = c.subscribe(topic, (e) => { got.push(e.data); });
        await sub.ready;
        const r = await c.publish(topic, 'n', 1);
        assert.equal(r.topicSeq, 1);
        const b = await c.publishBatch(topic, [{ type: 'n', data: 2 }, { type: 'n', data: 3 }]);
        assert.deepEqual(b.events.map((e) => e.topicSeq), [2, 3]);
        await waitUntil(() => got.length === 3, 'the events');
        assert.deepEqual(got, [1, 2, 3]);

        // A consumer made by a WebSocket client, continued over HTTP from its checkpoint.
        const name = `fb-${kind}-${process.pid}`;
        const ws = makeClient(cleanups, { url: h.url, transports: ['websocket'] });
        const first = [];
        await ws.consume(name, topic, (e) => { first.push(e.data); }).ready;
        await h.publish(topic, 'n', 4);
        await waitUntil(() => first.length === 1, 'the WebSocket consumer');
        await new Promise((res) => setTimeout(res, 100)); // its acknowledgement
        await ws.close();
        await h.publish(topic, 'n', 5);
        const later = [];
        c.consume(name, topic, (e) => { later.push(e.data); });
        await waitUntil(() => later.length === 1, 'the consumer over HTTP');
        assert.deepEqual(later, [5]);
        await waitUntil(async () => {
            const list = await h.request('GET', '/v1/consumers');
            return list.body.consumers.find((x) => x.consumer === name).lag === 0;
        }, 'the acknowledgement over HTTP');

        const room = uniqueTopic('fbroom');
        const p = c.join(room, { user: 'carol' });
        await waitUntil(async () => (await h.request('GET', `/v1/topics/${room}/presence`)).body.present.length === 1, 'the join');
        await p.leave();
        assert.equal((await h.request('GET', `/v1/topics/${room}/presence`)).body.present.length, 0);
    });
}
