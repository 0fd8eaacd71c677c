'use strict';
// STOMP over WebSocket (`/v1/stomp`) with the client Spring and RabbitMQ
// users already have: npm `@stomp/stompjs` in Node (over npm `ws`) and in
// headless Chromium (the page's own WebSocket), against a real
// `herald serve`. Every comparison is exact; no sleep decides a result.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const WebSocket = require('ws');
const { Client } = require('@stomp/stompjs');
const { chromium } = require('playwright-core');
const {
    CHROMIUM, CHROMIUM_ARGS, Herald, WsClient, uniqueTopic, waitUntil,
} = require('../lib/herald.js');

const SUBPROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];

const cleanups = [];
after(async () => {
    for (const f of cleanups.reverse()) {
        try { await f(); } catch (e) { console.error('cleanup:', e); }
    }
});

async function server(config) {
    const h = await Herald.create({ config });
    cleanups.push(() => h.cleanup());
    await h.start();
    return h;
}

/** A connected stompjs client that records everything it receives. */
async function stompClient(h, extra = {}) {
    const c = {
        messages: [], errors: [], receipts: [], closes: [], connects: 0,
    };
    c.client = new Client({
        webSocketFactory: () => new WebSocket(h.stompUrl, SUBPROTOCOLS),
        reconnectDelay: 0,
        heartbeatIncoming: 0,
        heartbeatOutgoing: 0,
        onConnect: (frame) => { c.connects += 1; c.connected = frame; if (extra.onConnect) extra.onConnect(c); },
        onStompError: (frame) => c.errors.push(frame),
        onWebSocketClose: (evt) => c.closes.push(evt.code),
        ...extra.options,
    });
    c.client.onUnhandledReceipt = (frame) => c.receipts.push(frame.headers['receipt-id']);
    c.client.activate();
    cleanups.push(() => c.client.deactivate());
    await waitUntil(() => c.connects > 0 || c.errors.length > 0, 'CONNECTED');
    return c;
}

/** `promise`, or a failure naming `what` after `ms` (a server that never
 *  answers fails the test instead of hanging it). */
function within(promise, what, ms = 15000) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise of the RECEIPT `id`, failing after 15 s. */
function receipt(c, id) {
    return within(new Promise((resolve) => c.client.watchForReceipt(id, resolve)), `RECEIPT ${id}`);
}

/** SEND with a receipt; resolves once the server confirms it. */
function sendWithReceipt(c, destination, body, headers = {}) {
    const id = `r-${Math.random().toString(36).slice(2)}`;
    const done = receipt(c, id);
    c.client.publish({ destination, body, headers: { ...headers, receipt: id } });
    return done;
}

/** A raw WebSocket speaking STOMP frames by hand (for what stompjs hides). */
async function rawStomp(h) {
    const ws = new WebSocket(h.stompUrl, SUBPROTOCOLS);
    const r = { ws, frames: [], closed: null };
    ws.on('message', (data) => r.frames.push(data.toString()));
    ws.on('close', (code) => { r.closed = code; });
    ws.on('error', () => {});
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('close', reject); });
    cleanups.push(() => ws.terminate());
    return r;
}

test('subscribe, SEND with receipt, MESSAGE headers; the same events over STOMP, JSON WebSocket and SSE', async () => {
    const h = await server();
    const topic = uniqueTopic('stomp.interop');
    const c = await stompClient(h);
    assert.equal(c.connected.headers.version, '1.2');
    // Every reader starts at the topic's beginning, so none can miss an
    // event by subscribing late.
    const got = [];
    c.client.subscribe(`/topic/${topic}`, (m) => got.push(m), { id: 'sub-0', 'herald-after': '0' });
    const json = await WsClient.connect(h.wsUrl);
    await json.request({ op: 'subscribe', id: 's', topic, after: 0 }, (m) => m.type === 'subscribed', 'subscribed');
    await sendWithReceipt(c, `/topic/${topic}`, JSON.stringify({ n: 1 }),
        { 'herald-type': 'item.added', 'herald-correlation-id': 'req-1' });
    await h.publish(topic, 'item.added', { n: 2 });
    await sendWithReceipt(c, `/topic/${topic}`, 'plain text', { 'content-type': 'text/plain' });

    // SSE reads the same topic from its beginning once it exists.
    let sseError = null;
    const sse = [];
    const ac = new AbortController();
    cleanups.push(() => ac.abort());
    const sseDone = (async () => {
        const res = await fetch(`${h.url}/v1/topics/${topic}/events?after=0`, { signal: ac.signal, headers: { Accept: "text/event-stream" } });
        if (res.status !== 200) throw new Error(`SSE: HTTP ${res.status}: ${await res.text()}`);
        const dec = new TextDecoder();
        let buf = '';
        for await (const chunk of res.body) {
            buf += dec.decode(chunk, { stream: true });
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
                const block = buf.slice(0, i); buf = buf.slice(i + 2);
                const id = /^id: (.*)$/m.exec(block); const data = /^data: (.*)$/m.exec(block);
                if (id && data) sse.push({ id: Number(id[1]), data: JSON.parse(data[1]) });
            }
        }
    })().catch((e) => { if (!ac.signal.aborted) sseError = e; });


    await waitUntil(() => got.length === 3 && json.events('s').length === 3 && sse.length === 3,
        'three deliveries on every transport').catch((e) => {
        throw new Error(`${e.message}: stomp ${got.length}, json ${json.events('s').length}, sse ${sse.length} (${sseError}); errors ${JSON.stringify(c.errors.map((f) => f.headers))}`);
    });
    const m = got[0];
    assert.equal(m.headers.destination, `/topic/${topic}`);
    assert.equal(m.headers.subscription, 'sub-0');
    assert.equal(m.headers['herald-type'], 'item.added');
    assert.equal(m.headers['herald-correlation-id'], 'req-1');
    assert.equal(m.headers['herald-topic-seq'], '1');
    assert.equal(m.headers['content-type'], 'application/json');
    assert.deepEqual(got.map((x) => JSON.parse(x.body)), [{ n: 1 }, { n: 2 }, 'plain text']);
    // Same events, same order, same sequences everywhere.
    assert.deepEqual(got.map((x) => Number(x.headers['herald-seq'])), json.events('s').map((e) => e.seq));
    assert.deepEqual(got.map((x) => Number(x.headers['herald-topic-seq'])), sse.map((e) => e.id));
    assert.deepEqual(json.events('s').map((e) => e.data), sse.map((e) => e.data));
    ac.abort();
    await sseDone;
});

test('client acks on a durable consumer: a resubscription resumes after the last ACK', async () => {
    const h = await server();
    const topic = uniqueTopic('stomp.acks');
    for (let n = 1; n <= 5; n += 1) await h.publish(topic, 'job', { n });
    const c = await stompClient(h);
    const got = [];
    const subscribe = () => c.client.subscribe(`/topic/${topic}`, (m) => got.push(m),
        { id: 'jobs', ack: 'client-individual', 'herald-consumer': 'worker-1', 'herald-after': '0' });
    let sub = subscribe();
    await waitUntil(() => got.length === 5, 'five jobs');
    // client-individual: an ACK is for its message alone. 3 and 1 acked,
    // 2 not: the checkpoint passes 1 only, and a new subscription starts
    // at 2 (3 comes again: at least once).
    got[2].ack();
    got[0].ack();
    got[1].nack();
    const resubscribe = async (receiptId) => {
        const unsubscribed = receipt(c, receiptId);
        sub.unsubscribe({ receipt: receiptId });
        await unsubscribed;
        got.length = 0;
        sub = subscribe();
    };
    await resubscribe('u1');
    await waitUntil(() => got.length === 4, 'the jobs after the checkpoint');
    assert.deepEqual(got.map((m) => JSON.parse(m.body).n), [2, 3, 4, 5]);
    // Acking 2 lets the checkpoint pass 2 and the 3 acknowledged before.
    got[0].ack();
    await resubscribe('u2');
    await waitUntil(() => got.length === 2, 'the two jobs after the checkpoint');
    assert.deepEqual(got.map((m) => JSON.parse(m.body).n), [4, 5]);
    assert.equal(c.errors.length, 0, JSON.stringify(c.errors.map((e) => e.headers)));
    // An ACK on an auto-ack subscription is refused with an ERROR.
    const auto = [];
    c.client.subscribe(`/topic/${topic}`, (m) => auto.push(m), { id: 'auto', 'herald-after': '4' });
    await waitUntil(() => auto.length === 1, 'one message');
    c.client.ack(auto[0].headers.ack, 'auto');
    await waitUntil(() => c.errors.length === 1, 'ERROR');
    assert.match(c.errors[0].headers.message, /acknowledges automatically/);
    assert.equal(c.errors[0].headers['herald-code'], 'invalid');
});

test('resume with herald-after across a SIGKILL restart: every event exactly once, in order', async () => {
    const h = await server();
    const topic = uniqueTopic('stomp.resume');
    let last = 0;
    const seen = [];
    const c = await stompClient(h, {
        options: { reconnectDelay: 100 },
        onConnect: (cl) => {
            cl.client.subscribe(`/topic/${topic}`, (m) => {
                seen.push(Number(m.headers['herald-topic-seq']));
                last = Number(m.headers['herald-topic-seq']);
            }, { id: 'r', 'herald-after': String(last) });
        },
    });
    for (let n = 1; n <= 5; n += 1) await h.publish(topic, 'e', { n });
    await waitUntil(() => seen.length === 5, 'five before the kill');
    await h.kill();
    await h.start();
    for (let n = 6; n <= 10; n += 1) await h.publish(topic, 'e', { n });
    await waitUntil(() => c.connects >= 2 && seen.length >= 10, 'the rest after the restart', 30000);
    await sendWithReceipt(c, `/topic/${topic}`, '"end"');
    await waitUntil(() => seen.length >= 11, 'the sentinel');
    assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
});

test('transactions: COMMIT stores the SENDs together, ABORT stores nothing', async () => {
    const h = await server();
    const topic = uniqueTopic('stomp.tx');
    const c = await stompClient(h);
    const got = [];
    const subscribed = receipt(c, 's');
    c.client.subscribe(`/topic/${topic}`, (m) => got.push(m), { id: 't', receipt: 's' });
    await subscribed;
    const aborted = c.client.begin('tx-a');
    c.client.publish({ destination: `/topic/${topic}`, body: '"dropped"', headers: { transaction: 'tx-a' } });
    aborted.abort();
    const tx = c.client.begin('tx-1');
    for (const n of [1, 2, 3]) {
        c.client.publish({ destination: `/topic/${topic}`, body: String(n), headers: { transaction: 'tx-1' } });
    }
    assert.equal(got.length, 0);
    tx.commit();
    await sendWithReceipt(c, `/topic/${topic}`, '"end"');
    await waitUntil(() => got.length === 4, 'the committed events and the sentinel');
    assert.deepEqual(got.map((m) => JSON.parse(m.body)), [1, 2, 3, 'end']);
    const seqs = got.slice(0, 3).map((m) => Number(m.headers['herald-seq']));
    assert.deepEqual(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2], 'consecutive: stored as one batch');
});

test('refusals are ERROR frames followed by a close', async () => {
    const h = await server();
    const cases = [
        ['SEND\ndestination:/topic/a\n\n{}\0', /send CONNECT first/],
        ['CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0', /Herald serves topics/],
        ['CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/topic/a\n\nnot json\0', /not JSON/],
        ['CONNECT\naccept-version:1.2\n\n\0FROB\n\n\0', /unknown command/],
        ['CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/topic/a\nx:\\t\n\n{}\0', /undefined escape/],
        ['CONNECT\naccept-version:2.0\n\n\0', /no common STOMP version/],
    ];
    for (const [frames, expected] of cases) {
        const r = await rawStomp(h);
        r.ws.send(frames);
        await waitUntil(() => r.closed !== null, `close after ${JSON.stringify(frames)}`);
        const error = r.frames.find((f) => f.startsWith('ERROR\n'));
        assert.ok(error, `an ERROR for ${JSON.stringify(frames)}: ${JSON.stringify(r.frames)}`);
        assert.match(error, expected);
    }
});

test('a client silent past its heart-beat is closed; one that beats stays', async () => {
    const h = await server('stomp_heartbeat_ms = 300\n');
    const silent = await rawStomp(h);
    const beating = await rawStomp(h);
    for (const r of [silent, beating]) r.ws.send('CONNECT\naccept-version:1.2\nheart-beat:200,300\n\n\0');
    await waitUntil(() => silent.frames.length > 0 && beating.frames.length > 0, 'CONNECTED');
    assert.match(silent.frames[0], /^CONNECTED\n(.*\n)*heart-beat:300,300\n/);
    const beat = setInterval(() => beating.ws.send('\n'), 100);
    cleanups.push(() => clearInterval(beat));
    await waitUntil(() => silent.closed !== null, 'the silent client closed', 10000);
    assert.ok(silent.frames.some((f) => f.startsWith('ERROR\n') && /heart-beat/.test(f)));
    // The beating client got server beats (EOL messages) and is still open.
    await waitUntil(() => beating.frames.filter((f) => f === '\n').length >= 2, 'server heart-beats');
    assert.equal(beating.closed, null);
    clearInterval(beat);
});

test('headless Chromium: stompjs on the page subscribes, sends with a receipt and receives', async () => {
    const h = await server();
    const topic = uniqueTopic('stomp.browser');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    await page.goto(`${h.url}/healthz`);
    await page.addScriptTag({ path: path.join(__dirname, '..', 'node_modules', '@stomp', 'stompjs', 'bundles', 'stomp.umd.js') });
    await page.evaluate(({ topic }) => {
        const T = { got: [], receipts: [], connected: false, errors: [] };
        window.__t = T;
        const client = new StompJs.Client({
            brokerURL: `ws://${location.host}/v1/stomp`,
            reconnectDelay: 0,
            onConnect: () => {
                T.connected = true;
                client.watchForReceipt('sub', () => {
                    T.subscribed = true;
                });
                client.subscribe(`/topic/${topic}`, (m) => T.got.push({
                    body: JSON.parse(m.body), seq: m.headers['herald-topic-seq'],
                }), { id: 'b', receipt: 'sub' });
            },
            onStompError: (f) => T.errors.push(f.headers.message),
        });
        window.__send = (body) => {
            client.watchForReceipt('pub', () => T.receipts.push('pub'));
            client.publish({ destination: `/topic/${topic}`, body: JSON.stringify(body), headers: { receipt: 'pub' } });
        };
        client.activate();
    }, { topic });
    await waitUntil(() => page.evaluate(() => window.__t.subscribed === true), 'the page subscribed');
    await page.evaluate(() => window.__send({ from: 'page' }));
    await waitUntil(() => page.evaluate(() => window.__t.receipts.length === 1), 'the receipt');
    await h.publish(topic, 'x', { from: 'http' });
    await waitUntil(() => page.evaluate(() => window.__t.got.length === 2), 'both events on the page');
    const t = await page.evaluate(() => window.__t);
    assert.deepEqual(t.got, [{ body: { from: 'page' }, seq: '1' }, { body: { from: 'http' }, seq: '2' }]);
    assert.deepEqual(t.errors, []);
});
