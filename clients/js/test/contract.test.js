'use strict';
// The client against a stand-in server that speaks only the token-lifetime,
// ticket and idempotency wire (as herald documents it), so that the client's
// side of it is checked on its own: a ticket per stream and never the token in
// a URL, `token_expiring` answered by op `auth` with a fresh token, close 4001
// followed by a reconnect with a fresh token (or, without getToken, a
// HeraldAuthError), an SSE `expired` frame followed by a resume with `after`,
// and `duplicate` passed through. The live-server tests cover the same
// against herald itself.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { WebSocketServer } = require('ws');
const { client, cleanupsFor, makeClient, waitUntil } = require('./lib.js');

const cleanups = cleanupsFor(after);

const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.s`;
const now = () => Math.floor(Date.now() / 1000);

async function standIn({ expIn = 60 } = {}) {
    const S = { tickets: new Map(), urls: [], ops: [], sockets: [], sse: [], keys: new Map(), seq: 0, issued: 0 };
    const srv = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://x');
        S.urls.push(req.url);
        if (req.method === 'POST' && url.pathname === '/v1/tickets') {
            const t = `t${++S.issued}`.padEnd(43, 'x');
            S.tickets.set(t, req.headers.authorization);
            res.writeHead(201, { 'content-type': 'application/json' });
            return res.end(JSON.stringify({ ticket: t, expires_in_ms: 30000 }));
        }
        if (url.pathname.endsWith('/events') && url.searchParams.has('last')) {
            res.writeHead(200, { 'content-type': 'application/json' });
            return res.end(JSON.stringify({ events: [], next_after: 0 }));
        }
        if (url.pathname.endsWith('/events') && url.searchParams.has('ticket')) {
            if (!S.tickets.delete(url.searchParams.get('ticket'))) { res.writeHead(401); return res.end('{}'); }
            res.writeHead(200, { 'content-type': 'text/event-stream' });
            const after = Number(url.searchParams.get('after') ?? 0);
            S.sse.push({ res, after });
            res.write(`data: ${JSON.stringify({ connected: { position: after } })}\n\n`);
            return undefined;
        }
        res.writeHead(404);
        return res.end('{"error":"no","code":"not_found"}');
    });
    const wss = new WebSocketServer({ noServer: true });
    srv.on('upgrade', (req, sock, head) => {
        const t = new URL(req.url, 'http://x').searchParams.get('ticket');
        S.urls.push(req.url);
        if (!S.tickets.delete(t)) return sock.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
        wss.handleUpgrade(req, sock, head, (ws) => {
            S.sockets.push(ws);
            let exp = now() + expIn;
            let timer;
            const arm = () => {
                clearTimeout(timer);
                ws.send(JSON.stringify({ type: 'token_expiring', exp }));
                timer = setTimeout(() => ws.close(4001, 'token expired'), (exp - now()) * 1000);
            };
            arm();
            ws.on('close', () => clearTimeout(timer));
            ws.on('message', (d) => {
                const m = JSON.parse(d);
                S.ops.push(m);
                if (m.op === 'subscribe') ws.send(JSON.stringify({ type: 'subscribed', id: m.id, ref: m.ref, recovered: false }));
                if (m.op === 'auth') {
                    exp = JSON.parse(Buffer.from(m.token.split('.')[1], 'base64url')).exp;
                    ws.send(JSON.stringify({ type: 'authed', ref: m.ref, exp }));
                    arm();
                }
                if (m.op === 'publish') {
                    const prior = S.keys.get(m.idempotency_key);
                    if (prior) return ws.send(JSON.stringify({ ...prior, ref: m.ref, duplicate: true }));
                    const r = { type: 'published', seq: ++S.seq, topic_seq: S.seq };
                    S.keys.set(m.idempotency_key, r);
                    ws.send(JSON.stringify({ ...r, ref: m.ref }));
                }
            });
        });
    });
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    cleanups.push(() => { wss.close(); srv.closeAllConnections(); srv.close(); });
    S.url = `http://127.0.0.1:${srv.address().port}`;
    return S;
}

test('stand-in: tickets in URLs, token_expiring answered in-band with a fresh token, duplicate passed through', async () => {
    const S = await standIn({ expIn: 3 });
    let minted = 0;
    const c = makeClient(cleanups, { url: S.url, transports: ['websocket'], refreshBeforeMs: 1000, getToken: () => jwt(now() + 3 + minted++ * 0) });
    await c.ready();
    assert.match(S.urls.find((u) => u.startsWith('/v1/ws')), /^\/v1\/ws\?ticket=t1x+$/);
    assert.ok(S.urls.every((u) => !u.includes('access_token')));
    await waitUntil(() => S.ops.some((m) => m.op === 'auth'), 'an in-band refresh', 5000);
    assert.ok(minted >= 2);
    const r1 = await c.publish('t', 'x', 1, { idempotencyKey: 'k' });
    const r2 = await c.publish('t', 'x', 1, { idempotencyKey: 'k' });
    assert.deepEqual(r2, { ...r1, duplicate: true });
    const auto = S.ops.filter((m) => m.op === 'publish');
    assert.ok(auto.every((m) => m.idempotency_key === 'k'));
    await c.publish('t', 'x', 2);
    assert.match(S.ops.filter((m) => m.op === 'publish').at(-1).idempotency_key, /^[0-9a-f-]{36}$/);
    await new Promise((r) => setTimeout(r, 3500)); // past the first token's exp: still one connection
    assert.equal(S.sockets.length, 1);
});

test('stand-in: close 4001 reconnects at once with a fresh token; without getToken a HeraldAuthError', async () => {
    const S = await standIn({ expIn: 2 });
    let minted = 0;
    // refreshBeforeMs 0 and a stale token: the refresh comes too late, the server closes.
    const c = makeClient(cleanups, { url: S.url, transports: ['websocket'], refreshBeforeMs: -5000, getToken: () => { minted++; return jwt(now() + 2); } });
    await c.ready();
    await waitUntil(() => S.sockets.length === 2, 'the reconnect after 4001', 8000);
    const d = c.stateLog.find((s) => s.state === 'disconnected');
    assert.equal(d.code, 4001);
    assert.equal(d.delayMs, 0);
    assert.ok(minted >= 2, 'a fresh token for the reconnect');

    const S2 = await standIn({ expIn: 1 });
    const fixed = makeClient(cleanups, { url: S2.url, transports: ['websocket'], token: jwt(now() + 1) });
    await fixed.ready();
    await waitUntil(() => fixed.state === 'closed', 'the close', 5000);
    assert.ok(fixed.stateLog.at(-1).error instanceof client.HeraldAuthError);
});

test('stand-in: an SSE `expired` frame ends the stream; the client resumes with a new ticket and `after`', async () => {
    const S = await standIn();
    let minted = 0;
    const c = makeClient(cleanups, { url: S.url, transports: ['sse'], getToken: () => { minted++; return jwt(now() + 3600); } });
    const got = [];
    await c.subscribe('t', (e) => { got.push(e.data); }).ready;
    const first = S.sse[0];
    first.res.write(`id: 1\ndata: ${JSON.stringify({ seq: 1, topic: 't', topic_seq: 1, type: 'x', data: 'a' })}\n\n`);
    await waitUntil(() => got.length === 1, 'the event');
    first.res.write(`data: ${JSON.stringify({ expired: { exp: now() } })}\n\n`);
    first.res.end();
    await waitUntil(() => S.sse.length === 2, 'the resumed stream', 5000);
    assert.equal(S.sse[1].after, 1);
    assert.ok(minted >= 2, 'a fresh token after the expiry');
    const streams = S.urls.filter((u) => u.includes('named=false'));
    assert.ok(streams.every((u) => /ticket=/.test(u) && !/access_token/.test(u)), streams.join(' '));
    assert.equal(new Set(streams.map((u) => new URL(u, 'http://x').searchParams.get('ticket'))).size, streams.length, 'a new ticket each time');
    assert.ok(c.stateLog.some((s) => s.state === 'disconnected' && s.code === 4001));
});
