'use strict';
// Tokens: a refused token is refreshed once, then fails with a typed error;
// in-band refresh (op `auth`) before expiry; the close at expiry (4001)
// without one; SSE streams ended at expiry resume with a fresh token; stream
// tickets (used instead of tokens in URLs, single use, short-lived); idempotent
// publishing (same key: `duplicate`, stored once; a retry after a lost reply).

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { EventSource } = require('eventsource');
const { Herald, client, cleanupsFor, makeClient, uniqueTopic, waitUntil } = require('./lib.js');

const cleanups = cleanupsFor(after);
let herald;
const server = async () => {
    if (!herald) {
        herald = await Herald.create({ auth: true });
        cleanups.push(() => herald.cleanup());
        await herald.start();
    }
    return herald;
};

/** WebSocket and EventSource classes that record the URLs they open. */
function recording(urls) {
    return {
        WebSocket: class extends WebSocket { constructor(u, ...a) { urls.push(u); super(u, ...a); } },
        EventSource: class extends EventSource { constructor(u, ...a) { urls.push(u); super(u, ...a); } },
    };
}

test('a refused token is refreshed once through getToken, then the client closes with a HeraldAuthError', async () => {
    const h = await server();
    let calls = 0;
    const c = makeClient(cleanups, { url: h.url, getToken: () => { calls += 1; return 'not.a.token'; } });
    const e = await c.ready().then(() => null, (x) => x);
    assert.ok(e instanceof client.HeraldAuthError, `typed error: ${e}`);
    assert.equal(e.code, 'unauthenticated');
    assert.equal(calls, 2, 'the first token and one refresh');
    assert.equal(c.state, 'closed');
    assert.ok(c.stateLog.at(-1).error instanceof client.HeraldAuthError);

    const fixed = makeClient(cleanups, { url: h.url, token: 'not.a.token' });
    await assert.rejects(fixed.ready(), client.HeraldAuthError);
});

test('streams authenticate with single-use tickets, never with the token in the URL', async () => {
    const h = await server();
    const urls = [];
    const token = h.token();
    for (const kind of ['websocket', 'sse']) {
        const c = makeClient(cleanups, { url: h.url, token, transports: [kind], ...recording(urls) });
        const got = [];
        await c.subscribe(uniqueTopic('t'), (e) => got.push(e)).ready;
        assert.equal(c.transport, kind);
    }
    assert.equal(urls.length, 2);
    for (const u of urls) {
        assert.match(u, /[?&]ticket=[A-Za-z0-9_-]{43}(&|$)/, u);
        assert.doesNotMatch(u, /access_token/);
    }
});

test('tickets: single use, refused after their lifetime', async () => {
    const h = await Herald.create({ auth: true, config: 'ticket_ttl_ms = 1000\n' });
    cleanups.push(() => h.cleanup());
    await h.start();
    const token = h.token();
    const ticket = async () => {
        const r = await h.request('POST', '/v1/tickets', { token, body: {} });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        assert.equal(r.body.expires_in_ms, 1000);
        return r.body.ticket;
    };
    const open = async (t) => {
        const ctl = new AbortController();
        const r = await fetch(`${h.url}/v1/topics/x/events?ticket=${t}`, { headers: { Accept: 'text/event-stream' }, signal: ctl.signal });
        const status = r.status;
        ctl.abort();
        return status;
    };
    const t1 = await ticket();
    assert.equal(await open(t1), 200);
    assert.equal(await open(t1), 401, 'a used ticket');
    const t2 = await ticket();
    await new Promise((r) => setTimeout(r, 1300));
    assert.equal(await open(t2), 401, 'an expired ticket');
    // The client, given a server whose tickets expire fast, still connects (one fresh ticket per stream).
    const c = makeClient(cleanups, { url: h.url, token, transports: ['sse'] });
    await c.subscribe('y', () => {}).ready;
});

test('in-band refresh: a short-lived token is replaced on the open WebSocket before it expires', { timeout: 40000 }, async () => {
    const h = await server();
    let minted = 0;
    const c = makeClient(cleanups, {
        url: h.url, transports: ['websocket'], refreshBeforeMs: 3000,
        getToken: () => { minted += 1; return h.token({ ttl: 7 }); },
    });
    const refreshed = [];
    c.on('token', (x) => refreshed.push(x.exp));
    const topic = uniqueTopic('refresh');
    const got = [];
    await c.subscribe(topic, (e) => { got.push(e.data); }).ready;
    const admin = h.token();
    for (let i = 1; i <= 12; i++) {
        await h.publish(topic, 'n', i, admin);
        await new Promise((r) => setTimeout(r, 1000));
    }
    await waitUntil(() => got.length === 12, 'every event');
    assert.deepEqual(got, Array.from({ length: 12 }, (_, k) => k + 1));
    assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
    assert.ok(refreshed[1] > refreshed[0]);
    assert.deepEqual(c.stateLog.map((s) => s.state), ['connecting', 'connected'], 'one connection throughout');
    assert.ok(minted >= 3);
});

test('a getToken that keeps returning the same token is asked again after a pause, not in a loop', { timeout: 30000 }, async () => {
    const h = await server();
    const cached = h.token({ ttl: 9 });
    const sent = [];
    const c = makeClient(cleanups, {
        url: h.url, transports: ['websocket'], refreshBeforeMs: 7000, getToken: () => cached,
        WebSocket: class extends WebSocket { send(d) { sent.push(JSON.parse(d).op); super.send(d); } },
    });
    await c.ready();
    // The first refresh is due at once (9 s token, 7 s ahead); it gets the same expiry back.
    await new Promise((r) => setTimeout(r, 4000));
    const auths = sent.filter((op) => op === 'auth').length;
    assert.ok(auths >= 1 && auths <= 2, `${auths} auth ops in 4 s`);
});

test('without a refresh the server closes at expiry (4001) and the client stops with a HeraldAuthError', { timeout: 30000 }, async () => {
    const h = await server();
    const c = makeClient(cleanups, { url: h.url, transports: ['websocket'], token: h.token({ ttl: 2 }) });
    await c.ready();
    await waitUntil(() => c.state === 'closed', 'the close at expiry', 20000);
    const d = c.stateLog.find((s) => s.state === 'closed');
    assert.ok(d.error instanceof client.HeraldAuthError);
    assert.ok(c.stateLog.some((s) => s.code === 4001) || /expired/.test(d.error.message), JSON.stringify(c.stateLog));
});

test('SSE: the stream ends at token expiry; the client reconnects with a fresh token and resumes exactly', { timeout: 40000 }, async () => {
    const h = await server();
    const c = makeClient(cleanups, {
        url: h.url, transports: ['sse'], refreshBeforeMs: 1000, getToken: () => h.token({ ttl: 3 }),
    });
    const topic = uniqueTopic('sseexp');
    const got = [];
    await c.subscribe(topic, (e) => { got.push(e.data); }).ready;
    const admin = h.token();
    for (let i = 1; i <= 8; i++) {
        await h.publish(topic, 'n', i, admin);
        await new Promise((r) => setTimeout(r, 1000));
    }
    await waitUntil(() => got.length === 8, 'every event');
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(c.stateLog.some((s) => s.state === 'disconnected' && s.code === 4001), JSON.stringify(c.stateLog.map((s) => [s.state, s.code])));
});

test('idempotent publish: the same key twice is stored once and answered duplicate', async () => {
    const h = await server();
    const token = h.token();
    const topic = uniqueTopic('idem');
    for (const kind of ['websocket', 'sse']) {
        const c = makeClient(cleanups, { url: h.url, token, transports: [kind] });
        await c.ready();
        const key = `k-${kind}-${Date.now()}`;
        const a = await c.publish(topic, 'n', kind, { idempotencyKey: key });
        const b = await c.publish(topic, 'n', kind, { idempotencyKey: key });
        assert.equal(a.duplicate, undefined);
        assert.deepEqual(b, { seq: a.seq, topicSeq: a.topicSeq, duplicate: true }, kind);
        const batchKey = `b-${kind}-${Date.now()}`;
        const x = await c.publishBatch(topic, [{ type: 'b', data: 1 }, { type: 'b', data: 2 }], { idempotencyKey: batchKey });
        const y = await c.publishBatch(topic, [{ type: 'b', data: 1 }, { type: 'b', data: 2 }], { idempotencyKey: batchKey });
        assert.deepEqual(y, { events: x.events, duplicate: true });
    }
    const stored = await h.events(topic, token);
    assert.equal(stored.length, 6, 'two single events and two batches of two, once each');
});

test('a publish whose reply is lost with the connection is retried under its key: stored once', async () => {
    const h = await server();
    const token = h.token();
    const topic = uniqueTopic('lost');
    let dropped = false;
    // Drops the first `published` reply and the connection with it.
    class LosesReply extends WebSocket {
        set onmessage(f) {
            super.onmessage = f && ((ev) => {
                if (!dropped && String(ev.data).includes('"type":"published"')) { dropped = true; this.terminate(); return; }
                f(ev);
            });
        }
        get onmessage() { return super.onmessage; }
    }
    const c = makeClient(cleanups, { url: h.url, token, transports: ['websocket'], WebSocket: LosesReply });
    await c.ready();
    const r = await c.publish(topic, 'n', 'once');
    assert.ok(dropped);
    assert.equal(r.duplicate, true, 'the retry found the first publish');
    const stored = await h.events(topic, token);
    assert.equal(stored.length, 1);
    assert.equal(stored[0].seq, r.seq);
});

test('a refreshed token without a grant ends the subscriptions it no longer covers (error event), the others go on', { timeout: 30000 }, async () => {
    const h = await server();
    const a = uniqueTopic('granted');
    const b = uniqueTopic('revoked');
    let n = 0;
    const c = makeClient(cleanups, {
        url: h.url, transports: ['websocket'], refreshBeforeMs: 4000,
        // The first token covers both topics, the later ones only `a`.
        getToken: () => (n++ === 0 ? h.token({ ttl: 6 }) : h.token({ ttl: 3600, subscribe: [a] })),
    });
    const gotA = [];
    const errors = [];
    const sa = c.subscribe(a, (e) => { gotA.push(e.data); });
    const sb = c.subscribe(b, () => {});
    sb.on('error', (e) => errors.push(e));
    await sa.ready;
    await sb.ready;
    await waitUntil(() => errors.length === 1, 'the revoked subscription to end', 15000);
    assert.equal(errors[0].code, 'forbidden');
    const admin = h.token();
    await h.publish(a, 'n', 1, admin);
    await waitUntil(() => gotA.length === 1, 'the granted subscription to go on');
    assert.deepEqual(c.stateLog.map((s) => s.state), ['connecting', 'connected']);
});
