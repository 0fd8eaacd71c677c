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
    private final ThreadLocal<Memory> scratch = ThreadLocal.withInitial(() -> new Memory(40));

    Publisher(Pointer ptr) {
        this.ptr = ptr;
    }

    private Pointer options(Memory m, long origin) {
        if (origin == 0) return null;
        m.setLong(16, origin);
        m.setPointer(24, null);
        m.setLong(32, 0);
        return m.share(16);
    }

    /** Publishes one event (copying {@code payload}). */
    public Published publish(String type, byte[] payload, long origin) {
        byte[] t = type.getBytes(StandardCharsets.US_ASCII);
        Memory m = scratch.get();
        HeraldException.check(Native.herald_publisher_publish(ptr, t, t.length, payload, payload.length,
                options(m, origin), m));
        return new Published(m.getLong(0), m.getLong(8));
    }

    /** Claim → write → commit: {@code fill} writes {@code size} payload bytes in place. */
    public Published publishWith(String type, int size, Consumer<ByteBuffer> fill, long origin) {
        byte[] t = type.getBytes(StandardCharsets.US_ASCII);
        Memory m = scratch.get();
        HeraldException.check(Native.herald_publisher_claim(ptr, size, m));
        try {
            fill.accept(m.getPointer(0).getByteBuffer(0, size));
        } catch (RuntimeException e) {
            Native.herald_publisher_abort(ptr);
            throw e;
        }
        HeraldException.check(Native.herald_publisher_commit(ptr, t, t.length, size, options(m, origin), m));
        return new Published(m.getLong(0), m.getLong(8));
    }

    @Override
    public void close() {
        Pointer p = ptr;
        ptr = null;
        Native.herald_publisher_free(p);
    }
}
