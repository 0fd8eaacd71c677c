package dev.herald;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.function.Consumer;

/**
 * Publishes to one topic. {@link #publish} is thread-safe; {@link #publishWith}
 * holds the publisher's single claim, so use one publisher per thread for it.
 */
public final class Publisher implements AutoCloseable {
    /** The sequences an event got. */
    public record Published(long seq, long topicSeq) {}

    private volatile Pointer ptr;
    // Per thread: the published sequences (0..16), herald_publish_options
    // (16..40) and the correlation id's bytes (40..), so that a publish
    // allocates nothing. 126 bytes is the longest valid correlation id.
    private static final int CORRELATION_AT = 40, CORRELATION_MAX = 126;
    private final ThreadLocal<Memory> scratch =
            ThreadLocal.withInitial(() -> new Memory(CORRELATION_AT + CORRELATION_MAX));

    Publisher(Pointer ptr) {
        this.ptr = ptr;
    }

    Pointer ptr() {
        return ptr;
    }

    private Pointer options(Memory m, long origin, String correlation) {
        if (origin == 0 && (correlation == null || correlation.isEmpty())) return null;
        m.setLong(16, origin);
        byte[] c = correlation == null ? new byte[0] : correlation.getBytes(StandardCharsets.UTF_8);
        if (c.length > CORRELATION_MAX) {
            // The library's own rule (herald.h), checked here because the
            // scratch buffer only holds a valid id.
            throw new HeraldException(Codes.INVALID_CORRELATION,
                    "correlation id of " + c.length + " bytes, more than " + CORRELATION_MAX, 0);
        }
        m.write(CORRELATION_AT, c, 0, c.length);
        m.setPointer(24, c.length == 0 ? null : m.share(CORRELATION_AT));
        m.setLong(32, c.length);
        return m.share(16);
    }

    /** Publishes one event (copying {@code payload}), with no origin and no correlation id. */
    public Published publish(String type, byte[] payload) {
        return publish(type, payload, 0, null);
    }

    /** Publishes one event (copying {@code payload}) with an origin (0: none). */
    public Published publish(String type, byte[] payload, long origin) {
        return publish(type, payload, origin, null);
    }

    /**
     * Publishes one event (copying {@code payload}) with an origin (0: none)
     * and a correlation id carried to subscribers ({@link Event#correlation};
     * null or empty: none; up to 126 printable ASCII characters).
     */
    public Published publish(String type, byte[] payload, long origin, String correlation) {
        byte[] t = type.getBytes(StandardCharsets.US_ASCII);
        Memory m = scratch.get();
        HeraldException.check(Native.herald_publisher_publish(ptr, t, t.length, payload, payload.length,
                options(m, origin, correlation), m));
        return new Published(m.getLong(0), m.getLong(8));
    }

    /** Claim → write → commit: {@code fill} writes {@code size} payload bytes in place. */
    public Published publishWith(String type, int size, Consumer<ByteBuffer> fill, long origin) {
        return publishWith(type, size, fill, origin, null);
    }

    /** As {@link #publishWith(String, int, Consumer, long)}, with a correlation id (null: none). */
    public Published publishWith(String type, int size, Consumer<ByteBuffer> fill, long origin, String correlation) {
        byte[] t = type.getBytes(StandardCharsets.US_ASCII);
        Memory m = scratch.get();
        HeraldException.check(Native.herald_publisher_claim(ptr, size, m));
        Pointer opts;
        try {
            fill.accept(m.getPointer(0).getByteBuffer(0, size));
            opts = options(m, origin, correlation);
        } catch (RuntimeException e) {
            Native.herald_publisher_abort(ptr);
            throw e;
        }
        HeraldException.check(Native.herald_publisher_commit(ptr, t, t.length, size, opts, m));
        return new Published(m.getLong(0), m.getLong(8));
    }

    @Override
    public void close() {
        Pointer p = ptr;
        ptr = null;
        Native.herald_publisher_free(p);
    }
}
