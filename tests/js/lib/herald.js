'use strict';
// Helpers shared by the end-to-end tests: a real `herald serve` process on a
// free loopback port with a temporary data directory, HTTP publishing with
// Node's global fetch, and a WebSocket client (npm `ws`) that queues messages.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');

const HERALD_BIN = process.env.HERALD_BIN
    || path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'herald');

/** Polls `predicate` (sync or async) every `intervalMs` until it returns a
 *  truthy value, which is returned; throws `what` after `timeoutMs`. */
async function waitUntil(predicate, what, timeoutMs = 15000, intervalMs = 20) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await predicate();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

/** A loopback TCP port that was free a moment ago (bind port 0, close). */
function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** A fresh, empty temporary directory (removed by `Herald.cleanup`). */
function tempDir(prefix) {
    return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * One herald server: `start()` runs `herald serve --listen 127.0.0.1:PORT
 * --data DIR` and waits for `GET /readyz`; `stop()` sends SIGTERM (or
 * `kill()` SIGKILL) and waits for the exit; `start()` again reuses the same
 * port and data directory (a restart).
 */
class Herald {
    constructor({ port, dataDir, config, tls }) {
        this.port = port;
        this.dataDir = dataDir;
        this.config = config; // TOML text for --config, if any
        this.tls = tls; // {cert, key, ca}: PEM file paths; serve https:// and wss://
        this.proc = null;
        this.output = []; // last lines of the server's stdout/stderr, for failure messages
        this.starts = 0;
    }

    /** `config`: TOML text given to the server as its --config file;
     *  `tls`: {cert, key, ca} PEM files (--tls-cert, --tls-key; `ca` is what
     *  clients trust). */
    static async create({ config, tls } = {}) {
        return new Herald({ port: await freePort(), dataDir: tempDir('herald-js-data-'), config, tls });
    }

    get url() { return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`; }
    get wsUrl() { return `${this.tls ? 'wss' : 'ws'}://127.0.0.1:${this.port}/v1/ws`; }
    get stompUrl() { return `ws://127.0.0.1:${this.port}/v1/stomp`; }

    async start() {
        if (this.proc) throw new Error('herald is already running');
        // The server reads HERALD_* variables (HERALD_CONFIG, HERALD_LISTEN,
        // ...) as defaults for its flags: keep the caller's out of it.
        const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')));
        env.RUST_LOG = env.RUST_LOG || 'warn';
        const args = ['serve', '--listen', `127.0.0.1:${this.port}`, '--data', this.dataDir];
        if (this.config) {
            const file = path.join(this.dataDir, 'herald.toml');
            fs.writeFileSync(file, this.config);
            args.push('--config', file);
        }
        if (this.tls) args.push('--tls-cert', this.tls.cert, '--tls-key', this.tls.key);
        const proc = spawn(HERALD_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
        this.proc = proc;
        this.starts += 1;
        const tag = `[herald#${this.starts}] `;
        const keep = (chunk) => {
            // eslint-disable-next-line no-control-regex
            for (const line of chunk.toString().replace(/\x1b\[[0-9;]*m/g, '').split('\n')) {
                if (line) this.output.push(tag + line);
            }
            if (this.output.length > 200) this.output.splice(0, this.output.length - 200);
        };
        proc.stdout.on('data', keep);
        proc.stderr.on('data', keep);
        proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
        proc.on('error', (e) => keep(`spawn error: ${e.message}`));
        let exitedEarly = null;
        proc.exited.then((r) => { exitedEarly = r; });
        try {
            await waitUntil(async () => {
                if (exitedEarly) {
                    throw new Error(`herald exited before it was ready (${JSON.stringify(exitedEarly)})`);
                }
                try {
                    if (this.tls) return (await this.request('GET', '/readyz', null, 2000)).status === 200;
                    const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
                    await res.arrayBuffer();
                    return res.status === 200;
                } catch {
                    return false;
                }
            }, `GET ${this.url}/readyz`, 30000, 25);
        } catch (e) {
            await this.kill();
            throw new Error(`${e.message}\n${this.log()}`);
        }
    }

    /** Graceful stop: SIGTERM, then SIGKILL if it has not exited in 15 s. */
    async stop() { return this.#signal('SIGTERM'); }

    /** Abrupt stop: SIGKILL. */
    async kill() { return this.#signal('SIGKILL'); }

    async #signal(sig) {
        const proc = this.proc;
        if (!proc) return null;
        if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig);
        const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
        const result = await proc.exited;
        clearTimeout(timer);
        this.proc = null;
        return result;
    }

    /** Stops the server if it runs and removes the data directory. */
    async cleanup() {
        await this.kill();
        fs.rmSync(this.dataDir, { recursive: true, force: true });
    }

    log() { return `herald output (last lines):\n${this.output.join('\n')}`; }

    /** One HTTPS request to a TLS server (Node's https, trusting `tls.ca`):
     *  resolves to {status, body}. */
    request(method, path, body = null, timeoutMs = 10000) {
        return new Promise((resolve, reject) => {
            const req = https.request(`${this.url}${path}`, {
                method,
                ca: fs.readFileSync(this.tls.ca),
                headers: body === null ? {} : { 'Content-Type': 'application/json' },
                timeout: timeoutMs,
            }, (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
                res.on('error', reject);
            });
            req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
            req.on('error', reject);
            req.end(body);
        });
    }

    /** POST /v1/topics/{topic}/events; returns `{seq, topic_seq}`. */
    async publish(topic, type, data) {
        if (this.tls) {
            const path = `/v1/topics/${encodeURIComponent(topic)}/events`;
            const res = await this.request('POST', path, JSON.stringify({ type, data }));
            if (res.status !== 200) throw new Error(`publish to ${topic}: HTTP ${res.status}: ${res.body}`);
            return JSON.parse(res.body);
        }
        const res = await fetch(`${this.url}/v1/topics/${encodeURIComponent(topic)}/events`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ type, data }),
            signal: AbortSignal.timeout(10000),
        });
        const body = await res.text();
        if (res.status !== 200) throw new Error(`publish to ${topic}: HTTP ${res.status}: ${body}`);
        return JSON.parse(body);
    }
}

/**
 * A WebSocket client (npm `ws`) that parses every text message as JSON and
 * keeps them all, in arrival order, in `messages`.
 */
class WsClient {
    /** `options`: the `ws` client's (e.g. `{ca}` for wss://). */
    constructor(url, options = {}) {
        this.messages = [];
        this.closed = null; // {code, reason} once closed
        this.ws = new WebSocket(url, options);
        this.ws.on('message', (data, isBinary) => {
            this.messages.push(isBinary ? { binary: true } : JSON.parse(data.toString()));
        });
        this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; });
        this.ws.on('error', () => {}); // surfaces as 'close'
        this.opened = new Promise((resolve, reject) => {
            this.ws.once('open', resolve);
            this.ws.once('close', (code) => reject(new Error(`WebSocket closed before it opened (${code})`)));
        });
    }

    static async connect(url, options = {}) {
        const c = new WsClient(url, options);
        await c.opened;
        return c;
    }

    send(msg) { this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)); }

    /** Waits for the first message after index `from` matching `pred`. */
    async waitFor(pred, what, from = 0, timeoutMs = 15000) {
        return waitUntil(() => {
            const m = this.messages.slice(from).find(pred);
            if (!m && this.closed) {
                throw new Error(`WebSocket closed (${JSON.stringify(this.closed)}) while waiting for ${what}`);
            }
            return m;
        }, what, timeoutMs, 5);
    }

    /** Sends `msg` and waits for the reply matching `pred`. */
    async request(msg, pred, what) {
        const from = this.messages.length;
        this.send(msg);
        return this.waitFor(pred, what, from);
    }

    /** The `event` deliveries of subscription `sub`, in arrival order. */
    events(sub) { return this.messages.filter((m) => m.type === 'event' && m.sub === sub); }

    /** Waits for the close and returns `{code, reason}`. */
    async waitClosed(timeoutMs = 15000) {
        return waitUntil(() => this.closed, 'the WebSocket to close', timeoutMs, 10);
    }

    close() { if (!this.closed) this.ws.terminate(); }
}

/** A topic name unique to this test run. */
function uniqueTopic(prefix) {
    return `${prefix}.${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;
}

/** Debian's Chromium, headless, with what this machine's closed network and
 *  a root user need (no sandbox, no background connections). */
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

module.exports = {
    CHROMIUM, CHROMIUM_ARGS, HERALD_BIN, Herald, WsClient, freePort, tempDir, uniqueTopic, waitUntil,
};
