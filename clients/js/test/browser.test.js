'use strict';
// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// loads the built browser bundle (dist/herald-client.min.js) into a page on
// herald's own origin and uses the browser's own WebSocket, EventSource and
// fetch: a SIGKILL restart mid-stream with a client on each transport, and
// the fallback to SSE when a proxy refuses WebSocket upgrades.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { Herald, cleanupsFor, uniqueTopic, waitUntil } = require('./lib.js');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const BUNDLE = fs.readFileSync(path.join(__dirname, '..', 'dist', 'herald-client.min.js'), 'utf8');
const cleanups = cleanupsFor(after);

async function openPage(origin) {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-client-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000,
    });
    cleanups.push(async () => {
        await Promise.race([context.close(), new Promise((r) => setTimeout(r, 15000))]);
        fs.rmSync(profile, { recursive: true, force: true });
    });
    const page = context.pages()[0] || await context.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(`console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(`${origin.url}/healthz`);
    await page.addScriptTag({ content: BUNDLE });
    const waitPage = (fn, what, arg) => page.waitForFunction(fn, arg, { polling: 50, timeout: 30000 })
        .catch(async (e) => {
            throw new Error(`waiting for ${what}: ${e.message}\n${JSON.stringify(await page.evaluate(() => window.T))}\n${logs.join('\n')}`);
        });
    return { context, page, logs, waitPage };
}

/** Runs in the page: one client per transport kind, all on `topic`. */
function startClients({ topic, kinds }) {
    window.T = {};
    for (const kind of kinds) {
        const c = Herald.createClient({
            url: location.origin, transports: kind === 'auto' ? undefined : [kind],
            backoff: { minMs: 100, maxMs: 400, stableMs: 1000 }, connectTimeoutMs: 3000, pollWaitMs: 2000, autoConnect: false,
        });
        const rec = { got: [], states: [], transport: null, position: null };
        window.T[kind] = rec;
        c.on('state', (s) => rec.states.push([s.state, s.transport, s.code ?? null]));
        const sub = c.subscribe(topic, (e) => { rec.got.push([e.topicSeq, e.data]); rec.position = sub.position; });
        sub.ready.then(() => { rec.transport = c.transport; });
        c.connect();
    }
}

test('Chromium: the bundle\'s clients on WebSocket, SSE and long-poll survive a herald SIGKILL restart, every event once, in order', { timeout: 90000 }, async (t) => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian package chromium)`);
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const { page, logs, waitPage } = await openPage(h);
    try {
        const topic = uniqueTopic('browser');
        const kinds = ['websocket', 'sse', 'poll'];
        await page.evaluate(startClients, { topic, kinds });
        await waitPage((k) => k.every((x) => window.T[x].transport === x), 'every client connected on its transport', kinds);
        for (let i = 1; i <= 5; i++) await h.publish(topic, 'n', i);
        await waitPage(() => Object.values(window.T).every((r) => r.got.length === 5), 'events 1-5');
        await h.kill('SIGKILL');
        await waitPage(() => Object.values(window.T).every((r) => r.states.some((s) => s[0] === 'disconnected')), 'every client to notice');
        await new Promise((r) => setTimeout(r, 500));
        await h.start();
        for (let i = 6; i <= 10; i++) await h.publish(topic, 'n', i); // may land before the clients are back
        await waitPage(() => Object.values(window.T).every((r) => r.got.length >= 10), 'events 6-10', undefined);
        await h.publish(topic, 'n', 11);
        await waitPage(() => Object.values(window.T).every((r) => r.position === 11), 'event 11 everywhere');
        const T = await page.evaluate(() => window.T);
        const expected = Array.from({ length: 11 }, (_, k) => [k + 1, k + 1]);
        for (const kind of kinds) {
            assert.deepEqual(T[kind].got, expected, `${kind}: every event once, in order`);
            assert.ok(T[kind].states.filter((s) => s[0] === 'connected').length >= 2, `${kind} reconnected`);
            assert.ok(T[kind].states.filter((s) => s[0] === 'connected').every((s) => s[1] === kind));
        }
    } catch (e) {
        for (const l of logs) t.diagnostic(l);
        for (const l of h.output) t.diagnostic(l);
        throw e;
    }
});

/** An HTTP proxy in front of herald that forwards requests (streams too) but
 *  refuses every WebSocket upgrade, as some corporate proxies do. */
async function upgradeBlockingProxy(target) {
    const srv = http.createServer((req, res) => {
        const up = http.request({ host: '127.0.0.1', port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
            res.writeHead(r.statusCode, r.headers);
            r.pipe(res);
        });
        up.on('error', () => res.destroy());
        res.on('close', () => up.destroy());
        req.pipe(up);
    });
    srv.on('upgrade', (req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n'));
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    cleanups.push(() => { srv.closeAllConnections(); srv.close(); });
    return { url: `http://127.0.0.1:${srv.address().port}` };
}

test('Chromium: with WebSocket upgrades blocked, the client falls back to SSE and still publishes and receives', { timeout: 60000 }, async (t) => {
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const proxy = await upgradeBlockingProxy(h);
    const { page, logs, waitPage } = await openPage(proxy);
    try {
        const topic = uniqueTopic('fallback');
        await page.evaluate(startClients, { topic, kinds: ['auto'] });
        await waitPage(() => window.T.auto.transport !== null, 'the client to connect');
        const T0 = await page.evaluate(() => window.T.auto);
        assert.equal(T0.transport, 'sse');
        assert.deepEqual(T0.states[0], ['connecting', null, null]);
        assert.deepEqual(T0.states.find((s) => s[0] === 'connected'), ['connected', 'sse', null]);
        // Publishing goes over HTTP; the event comes back on the stream.
        const r = await page.evaluate(async (tp) => {
            const c = Herald.createClient({ url: location.origin, connectTimeoutMs: 3000 });
            await c.ready();
            const res = await c.publish(tp, 'hello', { from: 'page' });
            const transport = c.transport;
            await c.close();
            return { res, transport };
        }, topic);
        assert.equal(r.transport, 'sse');
        assert.equal(r.res.topicSeq, 1);
        await waitPage(() => window.T.auto.got.length === 1, 'the event on the SSE stream');
        assert.deepEqual((await page.evaluate(() => window.T.auto)).got, [[1, { from: 'page' }]]);
    } catch (e) {
        for (const l of logs) t.diagnostic(l);
        throw e;
    }
});

test('Chromium: offline closes the connection and online reconnects; positions in localStorage survive a reload', { timeout: 60000 }, async (t) => {
    const h = await Herald.create();
    cleanups.push(() => h.cleanup());
    await h.start();
    const { context, page, logs, waitPage } = await openPage(h);
    const topic = uniqueTopic('offline');
    const start = (tp) => {
        const rec = { got: [], states: [] };
        window.T = rec;
        const c = Herald.createClient({
            url: location.origin, transports: ['websocket'], store: Herald.localStorageStore('t:'),
            backoff: { minMs: 5000, maxMs: 5000 }, autoConnect: false,
        });
        c.on('state', (s) => rec.states.push([s.state, s.reason ?? null]));
        c.subscribe(tp, (e) => { rec.got.push(e.data); }, { key: 'k' }).ready.then(() => { rec.ready = true; });
        c.connect();
    };
    try {
        await page.evaluate(start, topic);
        await waitPage(() => window.T.ready, 'the subscription');
        await h.publish(topic, 'n', 1);
        await waitPage(() => window.T.got.length === 1, 'event 1');
        await context.setOffline(true);
        await waitPage(() => window.T.states.some((s) => s[0] === 'disconnected' && s[1] === 'offline'), 'the offline disconnect');
        await h.publish(topic, 'n', 2);
        const before = Date.now();
        await context.setOffline(false);
        await waitPage(() => window.T.got.length === 2, 'event 2 after going online');
        // At once on `online`, not after the 5 s backoff.
        assert.ok(Date.now() - before < 4000, `reconnected in ${Date.now() - before} ms`);
        assert.equal(await page.evaluate(() => localStorage.getItem('t:k')), '2');

        await page.reload();
        await page.addScriptTag({ content: BUNDLE });
        await h.publish(topic, 'n', 3);
        await page.evaluate(start, topic);
        await waitPage(() => window.T.got.length === 1, 'event 3 after the reload');
        assert.deepEqual(await page.evaluate(() => window.T.got), [3]);
    } catch (e) {
        for (const l of logs) t.diagnostic(l);
        throw e;
    }
});
