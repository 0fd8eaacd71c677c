'use strict';
// Shared by the client's tests: a real `herald serve` on a free loopback port
// with its own data directory (restartable on the same port and data), tokens
// minted with `herald token`, and the built client (dist/index.cjs).

const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const HERALD_BIN = process.env.HERALD_BIN || path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'herald');
const client = require('../dist/index.cjs');

async function waitUntil(predicate, what, timeoutMs = 15000, intervalMs = 10) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await predicate();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

let topics = 0;
const uniqueTopic = (prefix) => `${prefix}.p${process.pid}-${++topics}-${Math.floor(Math.random() * 1e6)}`;

class Herald {
    /** `config`: extra TOML; `auth`: true to configure an HS256 secret (tokens required). */
    static async create({ config = '', auth = false } = {}) {
        const h = new Herald();
        h.port = await freePort();
        h.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-client-'));
        h.output = [];
        let toml = config;
        if (auth) {
            h.secretFile = path.join(h.dataDir, 'secret.txt');
            fs.writeFileSync(h.secretFile, 'a-test-secret-of-enough-length-0123456789');
            toml = `jwt_secret_file = "${h.secretFile}"\n${toml}`;
        }
        if (toml) {
            h.configFile = path.join(h.dataDir, 'herald.toml');
            fs.writeFileSync(h.configFile, toml);
        }
        return h;
    }

    get url() { return `http://127.0.0.1:${this.port}`; }

    async start() {
        const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')));
        env.RUST_LOG = env.RUST_LOG || 'warn';
        const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data', path.join(this.dataDir, 'log')];
        if (this.configFile) args.push('--config', this.configFile);
        const proc = spawn(HERALD_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
        this.proc = proc;
        const keep = (c) => {
            this.output.push(...c.toString().split('\n').filter(Boolean));
            if (this.output.length > 200) this.output.splice(0, this.output.length - 200);
        };
        proc.stdout.on('data', keep);
        proc.stderr.on('data', keep);
        proc.exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
        await waitUntil(async () => {
            if (proc.exitCode !== null) throw new Error(`herald exited: ${this.output.join('\n')}`);
            try {
                const r = await fetch(`${this.url}/readyz`);
                return r.status === 200;
            } catch { return false; }
        }, 'herald to be ready', 30000, 25);
    }

    async kill(sig = 'SIGKILL') {
        const p = this.proc;
        if (!p) return null;
        this.proc = null;
        if (p.exitCode === null && p.signalCode === null) p.kill(sig);
        return p.exited;
    }

    async cleanup() {
        await this.kill();
        fs.rmSync(this.dataDir, { recursive: true, force: true });
    }

    /** An HS256 token from `herald token`. */
    token({ tenant = 'acme', ttl = 3600, publish = ['>'], subscribe = ['>'], sub = 'test' } = {}) {
        const args = ['token', '--secret-file', this.secretFile, '--tenant', tenant, '--sub', sub, '--ttl', String(ttl)];
        for (const p of publish) args.push('--publish', p);
        for (const s of subscribe) args.push('--subscribe', s);
        return execFileSync(HERALD_BIN, args, { encoding: 'utf8' }).trim();
    }

    /** A plain HTTP request: {status, body}. */
    async request(method, p, { body, token, headers = {} } = {}) {
        const h = { ...headers };
        if (token) h.Authorization = `Bearer ${token}`;
        if (body !== undefined) h['Content-Type'] = 'application/json';
        const r = await fetch(this.url + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
        const text = await r.text();
        let json;
        try { json = JSON.parse(text); } catch { json = text; }
        return { status: r.status, body: json, headers: r.headers };
    }

    /** Publishes over HTTP (not through the client): {seq, topic_seq}. */
    async publish(topic, type, data, token) {
        const r = await this.request('POST', `/v1/topics/${encodeURIComponent(topic)}/events`, { body: { type, data }, token });
        if (r.status !== 200) throw new Error(`publish: ${r.status} ${JSON.stringify(r.body)}`);
        return r.body;
    }

    /** All stored events of a topic (poll from the start). */
    async events(topic, token) {
        const r = await this.request('GET', `/v1/topics/${encodeURIComponent(topic)}/events?after=0&limit=1000`, { token });
        return r.body.events;
    }
}

/** A client with short, test-sized timings, closed by `after`. */
function makeClient(cleanups, options) {
    const c = client.createClient({
        WebSocket: require('ws'),
        EventSource: require('eventsource').EventSource,
        backoff: { minMs: 50, maxMs: 500, stableMs: 2000 },
        connectTimeoutMs: 3000,
        pollWaitMs: 2000,
        ...options,
        autoConnect: false,
    });
    const log = [];
    c.on('state', (s) => log.push(s));
    c.on('error', () => {}); // asserted through `log` where a test cares
    c.stateLog = log;
    cleanups.push(() => c.close());
    if (options.autoConnect !== false) c.connect();
    return c;
}

/** Runs cleanups (last first) after the file's tests. */
function cleanupsFor(after) {
    const cleanups = [];
    after(async () => {
        for (const f of cleanups.reverse()) {
            try { await f(); } catch (e) { console.error('cleanup:', e); }
        }
    });
    return cleanups;
}

module.exports = { HERALD_BIN, Herald, client, cleanupsFor, freePort, makeClient, uniqueTopic, waitUntil };
