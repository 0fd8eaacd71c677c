package dev.herald;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.NoSuchElementException;
import java.util.concurrent.Flow;
import java.util.concurrent.SubmissionPublisher;

/**
 * A subscription. Calls are serialised on the object's monitor (the C
 * handle takes one call at a time); use finite timeouts so that
 * {@link #close} is not held up. Read it with {@link #next(int)}, as a blocking
 * {@link Iterator}, or as a {@link Flow.Publisher} ({@link #publisher()}),
 * which reads on its own thread.
 */
public final class Subscriber implements AutoCloseable, Iterable<Event> {
    private volatile Pointer ptr;
    private volatile boolean closed;
    private Memory buf = new Memory(4096);
    private final Memory meta = new Memory(120);
    private final Memory len = new Memory(8);
    private final Memory count = new Memory(8);
    private Memory batch = new Memory(256 * 1024);
    private final java.util.ArrayDeque<Event> queue = new java.util.ArrayDeque<>();
    private String lastTopic = "", lastType = "", lastCorr = "";

    private Subscriber(Pointer ptr) {
        this.ptr = ptr;
    }

    static Subscriber open(Broker broker, String name, Filter filter, Start start) {
        Pointer f = filter.build();
        try {
            Memory out = new Memory(8);
            if (name == null) {
                HeraldException.check(Native.herald_subscriber_open(broker.ptr(), f, start.kind(), start.value(), out));
            } else {
                byte[] n = name.getBytes(StandardCharsets.UTF_8);
                HeraldException.check(Native.herald_subscriber_open_consumer(broker.ptr(), n, n.length, f,
                        start.kind(), start.value(), out));
            }
            return new Subscriber(out.getPointer(0));
        } finally {
            Native.herald_filter_free(f);
        }
    }

    /** The raw call with a caller buffer: throws with {@link Codes#BUFFER_TOO_SMALL} and {@code needed()}. */
    public synchronized Event nextInto(Memory buffer, int timeoutMs) {
        if (closed) throw new HeraldException(Codes.NULL, "closed", 0);
        int rc = Native.herald_subscriber_next(ptr, buffer, buffer == null ? 0 : buffer.size(), len, meta, timeoutMs);
        if (rc != 0) {
            long needed = rc == Codes.BUFFER_TOO_SMALL ? len.getLong(0) : 0;
            throw new HeraldException(rc, Native.herald_last_error(), needed);
        }
        return decode(buffer);
    }

    /**
     * The next delivery within {@code timeoutMs} (negative: forever), or null
     * on timeout. Reads in batches (herald_subscriber_read: one native call
     * for up to 1024 deliveries, queued here).
     */
    public synchronized Event next(int timeoutMs) {
        if (closed) return null;
        Event e = queue.poll();
        if (e != null) return e;
        for (;;) {
            int rc = Native.herald_subscriber_read(ptr, batch, batch.size(), 1024, len, count, timeoutMs);
            if (rc == 0) {
                decodeBatch((int) len.getLong(0), (int) count.getLong(0));
                return queue.poll();
            }
            if (rc == Codes.TIMEOUT) return null;
            if (rc == Codes.BUFFER_TOO_SMALL) {
                batch = new Memory(Math.max(2 * batch.size(), len.getLong(0)));
                continue;
            }
            HeraldException.check(rc);
        }
    }

    private String intern(byte[] all, int at, int n, String last) {
        if (last.length() == n) {
            boolean same = true;
            for (int i = 0; i < n && same; i++) same = all[at + i] == (byte) last.charAt(i);
            if (same) return last;
        }
        return new String(all, at, n, StandardCharsets.ISO_8859_1);
    }

    private void decodeBatch(int total, int n) {
        byte[] all = batch.getByteArray(0, total);
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(all).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        int at = 0;
        for (int k = 0; k < n; k++) {
            int rlen = b.getInt(at + RecordHeader.RECORD_LEN), pl = b.getInt(at + RecordHeader.PAYLOAD_LEN);
            int tl = all[at + RecordHeader.TOPIC_LEN] & 0xff, yl = all[at + RecordHeader.EVENT_TYPE_LEN] & 0xff,
                    cl = all[at + RecordHeader.CORRELATION_LEN] & 0xff;
            int body = at + RecordHeader.SIZE;
            String topic = lastTopic = intern(all, body + pl, tl, lastTopic);
            if (b.getInt(at + RecordHeader.KIND) == RecordHeader.DELIVERY_GAP) {
                queue.add(new Event(true, 0, 0, 0, 0, topic, "", "", new byte[0], b.getLong(at + RecordHeader.GAP_FROM),
                        b.getLong(at + RecordHeader.GAP_TO)));
            } else {
                String type = lastType = intern(all, body + pl + tl, yl, lastType);
                String corr = lastCorr = intern(all, body + pl + tl + yl, cl, lastCorr);
                queue.add(new Event(false, b.getLong(at + RecordHeader.SEQ), b.getLong(at + RecordHeader.TOPIC_SEQ),
                        b.getLong(at + RecordHeader.TIMESTAMP_NS), b.getLong(at + RecordHeader.ORIGIN), topic, type, corr,
                        java.util.Arrays.copyOfRange(all, body, body + pl), 0, 0));
            }
            at += rlen;
        }
    }

    private Event decode(Memory b) {
        int pl = (int) meta.getLong(112), tl = (int) meta.getLong(64), yl = (int) meta.getLong(80),
                cl = (int) meta.getLong(96);
        byte[] all = b.getByteArray(0, pl + tl + yl + cl);
        String topic = new String(all, pl, tl, StandardCharsets.UTF_8);
        if (meta.getInt(0) == 1) {
            return new Event(true, 0, 0, 0, 0, topic, "", "", new byte[0], meta.getLong(40), meta.getLong(48));
        }
        byte[] payload = java.util.Arrays.copyOf(all, pl);
        return new Event(false, meta.getLong(8), meta.getLong(16), meta.getLong(24), meta.getLong(32), topic,
                new String(all, pl + tl, yl, StandardCharsets.US_ASCII),
                new String(all, pl + tl + yl, cl, StandardCharsets.US_ASCII), payload, 0, 0);
    }

    public synchronized void ack(long seq) {
        HeraldException.check(Native.herald_subscriber_ack(ptr, seq));
    }

    public synchronized void ackUpTo(long seq) {
        HeraldException.check(Native.herald_subscriber_ack_up_to(ptr, seq));
    }

    /** Global sequences published that this subscriber has not examined yet. */
    public synchronized long lag() {
        Memory behind = new Memory(8);
        HeraldException.check(Native.herald_subscriber_lag(ptr, behind, null));
        return behind.getLong(0);
    }

    /** Whether the subscriber reads the live ring (false: it is replaying the log, e.g. after it was lapped). */
    public synchronized boolean live() {
        Memory behind = new Memory(8), live = new Memory(1);
        HeraldException.check(Native.herald_subscriber_lag(ptr, behind, live));
        return live.getByte(0) != 0;
    }

    /**
     * Waits up to {@code timeoutMs} (negative: no limit) until a delivery may
     * be ready, without taking it; true if one may be. Read it with
     * {@link #next(int)}: a true answer can still be followed by a timeout
     * (e.g. an event the filter leaves out).
     */
    public synchronized boolean await(int timeoutMs) {
        if (closed) return false;
        if (!queue.isEmpty()) return true;
        Memory ready = new Memory(1);
        HeraldException.check(Native.herald_subscriber_wait(ptr, timeoutMs, ready));
        return ready.getByte(0) != 0;
    }

    /** A blocking iterator: {@code hasNext} waits for the next delivery until the subscriber is closed. */
    @Override
    public Iterator<Event> iterator() {
        return new Iterator<>() {
            private Event next;

            @Override
            public boolean hasNext() {
                while (next == null && !closed) {
                    next = Subscriber.this.next(100);
                }
                return next != null;
            }

            @Override
            public Event next() {
                if (!hasNext()) throw new NoSuchElementException();
                Event e = next;
                next = null;
                return e;
            }
        };
    }

    /**
     * A {@link Flow.Publisher} fed by a reader thread (back-pressure: the
     * thread blocks while subscribers' buffers are full). Closing this
     * subscriber completes it.
     */
    public Flow.Publisher<Event> publisher() {
        SubmissionPublisher<Event> pub = new SubmissionPublisher<>();
        Thread t = new Thread(() -> {
            try {
                for (Event e : this) pub.submit(e);
                pub.close();
            } catch (RuntimeException e) {
                pub.closeExceptionally(e);
            }
        }, "herald-subscriber");
        t.setDaemon(true);
        t.start();
        return pub;
    }

    /** Frees the subscriber, after any call in flight on another thread returns. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        Native.herald_subscriber_free(ptr);
        ptr = null;
    }
}
