'use strict';
// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a real `herald serve`: a page subscribes with the browser's own
// EventSource and WebSocket, herald is killed (SIGKILL) and restarted on the
// same port and data directory mid-stream, and the page must reconnect
// (EventSource by itself, the WebSocket through a small reconnect loop that
// resubscribes with `after`) and get every event exactly once, in order.
//
// The page is herald's own origin (`/healthz`, with the script injected), so
// EventSource and WebSocket are same-origin and no CORS headers are needed.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { chromium } = require('playwright-core');
const {
    CHROMIUM, CHROMIUM_ARGS, Herald, tempDir, uniqueTopic, waitUntil,
} = require('../lib/herald.js');


const cleanups = [];
after(async () => {
    for (const f of cleanups.reverse()) {
        try { await f(); } catch (e) { console.error('cleanup:', e); }
    }
});

/** The page's client, run inside the browser (serialized by page.evaluate). */
function pageClient({ topic, types }) {
    const T = {
        es: [], esOpens: 0, esErrors: 0,
        ws: [], wsSubscribed: [], wsOther: [], wsCloses: [], wsOpens: 0,
        holdWs: false,
    };
    window.__herald = T;

    const es = new EventSource(`/v1/topics/${topic}/events`);
    for (const type of types) {
        es.addEventListener(type, (e) => T.es.push({ id: e.lastEventId, type: e.type, data: JSON.parse(e.data) }));
    }
    es.onmessage = (e) => T.es.push({ id: e.lastEventId, type: e.type, data: e.data }); // unexpected
    es.onopen = () => { T.esOpens += 1; };
    es.onerror = () => { T.esErrors += 1; };

    let last = null; // the last topic sequence received over the WebSocket
    function connect() {
        const ws = new WebSocket(`ws://${location.host}/v1/ws`);
        ws.onopen = () => {
            T.wsOpens += 1;
            const sub = { op: 'subscribe', id: 'page', topic };
            if (last !== null) sub.after = last;
            ws.send(JSON.stringify(sub));
        };
        ws.onmessage = (m) => {
            const msg = JSON.parse(m.data);
            if (msg.type === 'event') {
                T.ws.push({ id: msg.topic_seq, type: msg.event_type, data: msg.data });
                last = msg.topic_seq;
            } else if (msg.type === 'subscribed') {
                T.wsSubscribed.push(msg);
            } else {
                T.wsOther.push(msg);
            }
        };
        ws.onclose = (e) => {
            T.wsCloses.push(e.code);
            reconnectSoon();
        };
    }
    function reconnectSoon() {
        setTimeout(() => (T.holdWs ? reconnectSoon() : connect()), 200);
    }
    connect();
}

/** A page in a fresh headless Chromium (closed after the tests), with its
 * console captured, its `window.__herald` state and a waiter on it. */
async function openPage() {
    const profile = tempDir('herald-js-chromium-');
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000,
    });
    cleanups.push(async () => {
        let timer;
        const deadline = new Promise((r) => { timer = setTimeout(r, 15000); });
        await Promise.race([context.close(), deadline]);
        clearTimeout(timer);
        fs.rmSync(profile, { recursive: true, force: true });
    });
    const page = context.pages()[0] || await context.newPage();
    const console_ = [];
    page.on('console', (m) => console_.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
    const state = () => page.evaluate(() => window.__herald);
    const waitPage = (fn, what, arg) => page.waitForFunction(fn, arg, { polling: 50, timeout: 30000 })
        .catch(async (e) => { throw new Error(`waiting for ${what}: ${e.message}\npage state: ${JSON.stringify(await state())}`); });
    return { page, console_, state, waitPage };
}

test('Chromium: EventSource and WebSocket survive a herald kill and restart, every event exactly once', { timeout: 90000 }, async (t) => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian package chromium)`);
    const herald = await Herald.create();
    cleanups.push(() => herald.cleanup());
    await herald.start();

    const { page, console_, state, waitPage } = await openPage();

    try {
        // The EventSource's requests (their URLs); while `esHold` is set they
        // wait before going to the server. (Chromium adds Last-Event-ID below
        // what Playwright sees, so the header itself is not visible here: the
        // exact event lists after the held reconnect are the proof of resume.)
        const esRequests = [];
        let esHold = null;
        await page.route((url) => url.pathname.endsWith('/events'), async (route) => {
            esRequests.push(route.request().url());
            if (esHold) await esHold;
            await route.continue();
        });

        await page.goto(`${herald.url}/healthz`);
        const topic = uniqueTopic('browser');
        const types = ['order.created', 'order.paid', 'sentinel'];
        await page.evaluate(pageClient, { topic, types });
        await waitPage(() => window.__herald.esOpens === 1 && window.__herald.wsSubscribed.length === 1,
            'the EventSource to open and the WebSocket to subscribe');

        for (let i = 1; i <= 3; i++) await herald.publish(topic, 'order.created', { i });
        await waitPage(() => window.__herald.es.length === 3 && window.__herald.ws.length === 3, 'events 1-3 on both');

        // Kill herald mid-stream. Reconnects are held until the events
        // published after the restart exist, so that only a resume
        // (Last-Event-ID, `after`) can deliver them.
        let releaseEs;
        esHold = new Promise((r) => { releaseEs = r; });
        await page.evaluate(() => { window.__herald.holdWs = true; });
        const killed = await herald.kill();
        assert.equal(killed.signal, 'SIGKILL');
        await waitPage(() => window.__herald.esErrors >= 1 && window.__herald.wsCloses.length >= 1,
            'the page to see both connections drop');
        // The EventSource's reconnect (after the server's `retry:`) is held here.
        await waitUntil(() => esRequests.length === 2, 'the EventSource to try to reconnect', 20000);

        await herald.start();
        for (let i = 4; i <= 6; i++) await herald.publish(topic, 'order.paid', { i });
        releaseEs();
        esHold = null;
        await page.evaluate(() => { window.__herald.holdWs = false; });

        await waitPage(() => window.__herald.esOpens === 2 && window.__herald.wsSubscribed.length === 2,
            'the EventSource and the WebSocket to reconnect');
        await herald.publish(topic, 'sentinel', { i: 7 });
        await waitPage(() => window.__herald.es.some((e) => e.type === 'sentinel')
            && window.__herald.ws.some((e) => e.type === 'sentinel'), 'the sentinel on both');

        const s = await state();
        const expected = [1, 2, 3, 4, 5, 6, 7].map((i) => ({
            type: i <= 3 ? 'order.created' : i <= 6 ? 'order.paid' : 'sentinel', data: { i },
        }));
        assert.deepEqual(s.es, expected.map((e, k) => ({ id: String(k + 1), ...e })), 'EventSource events');
        assert.deepEqual(s.ws, expected.map((e, k) => ({ id: k + 1, ...e })), 'WebSocket events');
        assert.deepEqual(s.wsSubscribed, [
            { type: 'subscribed', id: 'page', recovered: false },
            { type: 'subscribed', id: 'page', recovered: true },
        ]);
        assert.deepEqual(s.wsOther, []);
        // One held reconnect each: the EventSource's second request, and the
        // page's WebSocket opened twice.
        assert.equal(esRequests.length, 2, JSON.stringify(esRequests));
        assert.equal(s.wsOpens, 2, JSON.stringify(s));
        t.diagnostic(`WebSocket close codes seen by the page: ${JSON.stringify(s.wsCloses)}`);
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        for (const line of console_) t.diagnostic(line);
        throw e;
    }
});

test('Chromium: an unnamed stream on several topics reaches onmessage alone, naming each topic', { timeout: 60000 }, async (t) => {
    const herald = await Herald.create();
    cleanups.push(() => herald.cleanup());
    await herald.start();
    const { page, console_, state, waitPage } = await openPage();
    try {
        await page.goto(`${herald.url}/healthz`);
        const a = uniqueTopic('rooma');
        const b = uniqueTopic('roomb');
        const before = await herald.publish(a, 'before', {});
        await page.evaluate(({ topics }) => {
            const T = { messages: [], opens: 0 };
            window.__herald = T;
            const es = new EventSource(`/v1/events?topics=${topics}&named=false`);
            es.onmessage = (m) => T.messages.push({ id: m.lastEventId, type: m.type, data: JSON.parse(m.data) });
            es.onopen = () => { T.opens += 1; };
        }, { topics: `${a},${b}` });
        await waitPage(() => window.__herald.messages.length === 1, 'the connected notice');
        const x = await herald.publish(a, 'chat.message', { text: 'hi' });
        const y = await herald.publish(b, 'user.joined', { user: 'ann' });
        await waitPage(() => window.__herald.messages.length === 3, 'both events');
        const s = await state();
        assert.deepEqual(s.messages[0], {
            id: '', type: 'message', data: { connected: { position: before.seq } },
        });
        const events = s.messages.slice(1).map((m) => ({
            id: m.id, type: m.type, topic: m.data.topic, eventType: m.data.type, data: m.data.data,
        }));
        assert.deepEqual(events, [
            { id: String(x.seq), type: 'message', topic: a, eventType: 'chat.message', data: { text: 'hi' } },
            { id: String(y.seq), type: 'message', topic: b, eventType: 'user.joined', data: { user: 'ann' } },
        ]);
        assert.equal(s.opens, 1);
    } catch (e) {
        for (const line of herald.output) t.diagnostic(line);
        for (const line of console_) t.diagnostic(line);
        throw e;
    }
});
