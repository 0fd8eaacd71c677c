'use strict';
// TLS termination end to end: `openssl` makes a CA and a certificate for
// 127.0.0.1 in a temporary directory, `herald serve --tls-cert --tls-key`
// serves it, and Node's own TLS stack is the client: an SSE stream read
// with `https`, a `wss://` WebSocket with the npm `ws` package, both
// trusting only the generated CA. Plain HTTP on the TLS port and a client
// that does not trust the certificate are refused, the server keeps
// serving, and /metrics counts the handshakes.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const { Herald, WsClient, tempDir, uniqueTopic, waitUntil } = require('../lib/herald.js');

let herald;
let certDir;
let ca;
const cleanups = [];

/** A CA and a certificate it signed for 127.0.0.1 and localhost. */
function makeCerts(dir) {
    const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    run('req', '-x509', '-days', '2', '-subj', '/CN=Herald test CA', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem');
    run('req', '-subj', '/CN=localhost', ...ec, '-keyout', 'key.pem', '-out', 'cert.csr');
    fs.writeFileSync(path.join(dir, 'ext.cnf'), [
        'subjectAltName = DNS:localhost, IP:127.0.0.1',
        'basicConstraints = critical, CA:FALSE',
        'keyUsage = digitalSignature',
        'extendedKeyUsage = serverAuth',
    ].join('\n') + '\n');
    run('x509', '-req', '-in', 'cert.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '2',
        '-days', '2', '-extfile', 'ext.cnf', '-out', 'cert.pem');
    return { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem'), ca: path.join(dir, 'ca.pem') };
}

before(async () => {
    certDir = tempDir('herald-js-tls-');
    const tls = makeCerts(certDir);
    ca = fs.readFileSync(tls.ca);
    herald = await Herald.create({ tls });
    await herald.start();
});

after(async () => {
    for (const c of cleanups) c();
    if (herald) await herald.cleanup();
    if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

/** An SSE stream read with Node's https: every event as {id, type, data}. */
function sseStream(url) {
    const rec = { events: [], status: null, error: null };
    let buffer = '';
    const req = https.get(url, { ca, headers: { Accept: 'text/event-stream' } }, (res) => {
        rec.status = res.statusCode;
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
            buffer += chunk;
            let end;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
                const frame = buffer.slice(0, end);
                buffer = buffer.slice(end + 2);
                const ev = {};
                for (const line of frame.split('\n')) {
                    const i = line.indexOf(': ');
                    if (i > 0) ev[line.slice(0, i)] = line.slice(i + 2);
                }
                // Events carry an id (the stream's other notices do not).
                if (ev.id !== undefined && ev.data !== undefined) {
                    rec.events.push({ id: ev.id, type: ev.event, data: JSON.parse(ev.data) });
                }
            }
        });
    });
    req.on('error', (e) => { rec.error = e; });
    cleanups.push(() => req.destroy());
    return rec;
}

async function metric(name) {
    const res = await herald.request('GET', '/metrics');
    assert.equal(res.status, 200);
    const line = res.body.split('\n').find((l) => l.startsWith(`${name} `));
    assert.ok(line, `no ${name} in\n${res.body}`);
    return Number(line.slice(name.length + 1));
}

test('SSE over https: events arrive in order through TLS', async () => {
    const topic = uniqueTopic('tls.sse');
    const rec = sseStream(`${herald.url}/v1/topics/${topic}/events`);
    await waitUntil(() => rec.status || rec.error, 'the SSE response');
    assert.equal(rec.error, null);
    assert.equal(rec.status, 200);
    // Larger than one TLS record (16 KiB) to cross record boundaries.
    const big = 'z'.repeat(20000);
    const published = [];
    for (let n = 1; n <= 5; n++) published.push(await herald.publish(topic, 'tick', { n, big: n === 3 ? big : '' }));
    await waitUntil(() => rec.events.length >= 5, 'five SSE events');
    assert.deepEqual(rec.events.map((e) => e.data.n), [1, 2, 3, 4, 5]);
    assert.deepEqual(rec.events.map((e) => e.id), published.map((p) => String(p.topic_seq)));
    assert.equal(rec.events[2].data.big, big);
    assert.ok(rec.events.every((e) => e.type === 'tick'));
});

test('wss:// with the ws package: subscribe, publish, receive', async () => {
    const topic = uniqueTopic('tls.ws');
    const c = await WsClient.connect(herald.wsUrl, { ca });
    cleanups.push(() => c.close());
    const subscribed = await c.request({ op: 'subscribe', id: 's', topic }, (m) => m.type === 'subscribed', 'subscribed');
    assert.deepEqual(subscribed, { type: 'subscribed', id: 's', recovered: false });
    c.send({ op: 'publish', topic, type: 'over.ws', data: { via: 'wss' }, ref: 1 });
    await c.waitFor((m) => m.type === 'published' && m.ref === 1, 'the publish ack');
    await herald.publish(topic, 'over.https', { via: 'https' });
    await waitUntil(() => c.events('s').length >= 2, 'two events on the WebSocket');
    assert.deepEqual(c.events('s').map((e) => [e.event_type, e.data.via]), [['over.ws', 'wss'], ['over.https', 'https']]);
    c.ws.close(1000);
    const closed = await c.waitClosed();
    assert.equal(closed.code, 1000);
});

test('plain HTTP and an untrusting client are refused; the server keeps serving', async () => {
    const failuresBefore = await metric('herald_server_tls_handshake_failures_total');
    // Plain HTTP to the TLS port: no HTTP answer comes back.
    const plain = await new Promise((resolve) => {
        const req = http.get(`http://127.0.0.1:${herald.port}/readyz`, { timeout: 10000 }, (res) => resolve({ status: res.statusCode }));
        req.on('error', (e) => resolve({ error: e }));
        req.on('timeout', () => req.destroy(new Error('timed out')));
    });
    assert.ok(plain.error, `plain HTTP was answered: ${JSON.stringify(plain)}`);
    assert.notEqual(plain.error.message, 'timed out');
    // A TLS client that trusts only the system's CAs rejects the certificate.
    const untrusting = await new Promise((resolve) => {
        const req = https.get(`${herald.url}/readyz`, { timeout: 10000 }, (res) => resolve({ status: res.statusCode }));
        req.on('error', (e) => resolve({ error: e }));
    });
    assert.ok(untrusting.error, 'the certificate was trusted without the test CA');
    assert.match(untrusting.error.code, /CERT|SIGNATURE|ISSUER/);
    // The server still answers TLS clients and counted both failures.
    assert.equal((await herald.request('GET', '/readyz')).status, 200);
    await waitUntil(async () => (await metric('herald_server_tls_handshake_failures_total')) >= failuresBefore + 2,
        'the two failed handshakes to be counted');
    assert.equal(await metric('herald_server_tls_handshake_failures_total'), failuresBefore + 2);
    // At least the https connection(s) (Node's agent keeps them alive), the
    // SSE stream and the WebSocket.
    assert.ok((await metric('herald_server_tls_handshakes_total')) >= 3);
});
