#!/usr/bin/env python3
"""A minimal WebSocket load for instruction counts of a server under Valgrind.

    ws_load.py HOST PORT EVENTS SUBSCRIBERS [CONNS:SUBS:PATTERNS]

Opens SUBSCRIBERS connections subscribed to one topic; with the last
argument also CONNS idle connections of SUBS subscriptions of PATTERNS
wildcard patterns each that match no published topic, some sharing its
first tokens (what a hostile client holds to make every event cost more);
then one publisher
that pipelines EVENTS `publish` ops (128-byte JSON payloads), and returns
once every publish is acknowledged and every subscriber has every event.
With HERALD_LOAD_BATCH=N in the environment, the publisher sends batches
of N events per `publish` op and the subscribers ask for batched delivery
of up to N events per message.
Standard library only (no WebSocket package): masked client text frames,
unmasked server frames.
"""
import base64
import json
import os
import selectors
import socket
import struct
import sys

TOPIC = "bench.t"


def connect(host, port):
    s = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    return s, buf.split(b"\r\n\r\n", 1)[1]


def frame(text):
    p = text.encode()
    mask = b"\x01\x02\x03\x04"
    if len(p) < 126:
        head = bytes([0x81, 0x80 | len(p)])
    elif len(p) < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(p))
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", len(p))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p))


def frames(buf):
    """Complete frames' payloads at the front of buf, and the rest."""
    out = []
    while len(buf) >= 2:
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        out.append(buf[off : off + n])
        buf = buf[off + n :]
    return out, buf


def subscribe_patterns(host, port, c, subs, patterns):
    """A connection holding subs subscriptions of non-matching patterns."""
    s, buf = connect(host, port)
    for i in range(subs):
        shapes = ["%s.h{0}.>" % TOPIC, "*.h{0}", "bench.*.h{0}", "h{0}.x.*"]
        topics = [shapes[p % 4].format("%ds%dp%d" % (c, i, p)) for p in range(patterns)]
        s.sendall(frame(json.dumps({"op": "subscribe", "id": "h%d" % i, "topics": topics})))
    answered = 0
    while answered < subs:
        buf += s.recv(65536)
        got, buf = frames(buf)
        for f in got:
            if b'"subscribed"' not in f:
                sys.exit(f"hostile subscription refused: {f!r}")
        answered += len(got)
    return s


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    events, subscribers = int(sys.argv[3]), int(sys.argv[4])
    hostile = [int(n) for n in sys.argv[5].split(":")] if len(sys.argv) > 5 else [0, 0, 0]
    # Held open (and subscribed) until the load is done.
    held = [subscribe_patterns(host, port, c, *hostile[1:]) for c in range(hostile[0])]
    batch = int(os.environ.get("HERALD_LOAD_BATCH", "1"))
    sel = selectors.DefaultSelector()
    for _ in range(subscribers):
        s, buf = connect(host, port)
        delivery = ',"batch":{"max_events":%d,"max_delay_ms":0}' % batch if batch > 1 else ""
        s.sendall(frame('{"op":"subscribe","id":"s","topic":"%s"%s}' % (TOPIC, delivery)))
        while True:
            buf += s.recv(65536)
            got, buf = frames(buf)
            if got:
                break
        # Each event of a delivery carries one "seq" field.
        sel.register(s, selectors.EVENT_READ, {"buf": buf, "want": events, "kind": b'"seq":'})
    publisher, buf = connect(host, port)
    payload = json.dumps({"p": "x" * 90, "t": 10**18})
    if batch > 1:
        event = '{"topic":"%s","type":"e","data":%s}' % (TOPIC, payload)
        ops = [
            '{"op":"publish","ref":%d,"events":[%s]}' % (i, ",".join([event] * min(batch, events - i)))
            for i in range(0, events, batch)
        ]
    else:
        ops = [
            '{"op":"publish","topic":"%s","type":"e","ref":%d,"data":%s}' % (TOPIC, i, payload)
            for i in range(events)
        ]
    publisher.sendall(b"".join(frame(op) for op in ops))
    # Each acknowledged event has one "seq" field in the answers.
    sel.register(publisher, selectors.EVENT_READ, {"buf": buf, "want": events, "kind": b'"seq":'})
    left = subscribers + 1
    while left:
        for key, _ in sel.select():
            state = key.data
            state["buf"] += key.fileobj.recv(1 << 20)
            got, state["buf"] = frames(state["buf"])
            for f in got:
                if b'"type":"error"' in f:
                    sys.exit(f"error: {f!r}")
            state["want"] -= sum(f.count(state["kind"]) for f in got)
            if state["want"] <= 0:
                sel.unregister(key.fileobj)
                left -= 1


if __name__ == "__main__":
    main()
