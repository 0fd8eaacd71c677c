package dev.herald;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import java.nio.charset.StandardCharsets;

/**
 * An open broker. Thread-safe: share it between threads. Closing it flushes
 * the log; publishers and subscribers made from it keep working until they
 * are closed themselves.
 */
public final class Broker implements AutoCloseable {
    /** Settings; zero fields keep the library's defaults. */
    public static final class Config {
        public String dataDir;
        public long ringCapacity, maxPayload, segmentSize, retentionMaxRecords;
        public Integer durability;
        public Boolean prefault;

        public Config(String dataDir) {
            this.dataDir = dataDir;
        }
    }

    private volatile Pointer ptr;

    private Broker(Pointer ptr) {
        this.ptr = ptr;
    }

    /** The library's version. */
    public static String version() {
        return Native.herald_version();
    }

    public static Broker open(Config c) {
        Memory cfg = new Memory(88);
        HeraldException.check(Native.herald_config_init(cfg));
        byte[] dir = c.dataDir == null ? new byte[0] : c.dataDir.getBytes(StandardCharsets.UTF_8);
        Memory dirMem = new Memory(Math.max(1, dir.length));
        dirMem.write(0, dir, 0, dir.length);
        cfg.setPointer(0, dir.length == 0 ? null : dirMem);
        cfg.setLong(8, dir.length);
        if (c.ringCapacity != 0) cfg.setLong(16, c.ringCapacity);
        if (c.maxPayload != 0) cfg.setLong(24, c.maxPayload);
        if (c.segmentSize != 0) cfg.setLong(32, c.segmentSize);
        if (c.durability != null) cfg.setInt(40, c.durability);
        cfg.setLong(64, c.retentionMaxRecords);
        if (c.prefault != null) cfg.setByte(80, (byte) (c.prefault ? 1 : 0));
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_broker_open(cfg, out));
        return new Broker(out.getPointer(0));
    }

    Pointer ptr() {
        return ptr;
    }

    public Publisher publisher(String topic) {
        byte[] t = topic.getBytes(StandardCharsets.UTF_8);
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_publisher_new(ptr, t, t.length, out));
        return new Publisher(out.getPointer(0));
    }

    public Subscriber subscribe(Filter filter, Start start) {
        return Subscriber.open(this, null, filter, start);
    }

    /** The durable consumer {@code name}: resumes after its last ack, or at {@code start} if new. */
    public Subscriber consumer(String name, Filter filter, Start start) {
        return Subscriber.open(this, name, filter, start);
    }

    public long nextSeq() {
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_broker_next_seq(ptr, out));
        return out.getLong(0);
    }

    public long published() {
        Memory m = new Memory(80);
        HeraldException.check(Native.herald_broker_metrics(ptr, m));
        return m.getLong(0);
    }

    public long consumerCheckpoint(String name) {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_broker_consumer_checkpoint(ptr, n, n.length, out));
        return out.getLong(0);
    }

    @Override
    public void close() {
        Pointer p = ptr;
        ptr = null;
        if (p != null) {
            HeraldException.check(Native.herald_broker_close(p));
        }
    }
}
