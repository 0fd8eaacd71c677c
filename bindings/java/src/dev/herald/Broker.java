package dev.herald;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * An open broker. Thread-safe: share it between threads. Closing it flushes
 * the log; publishers and subscribers made from it keep working until they
 * are closed themselves.
 */
public final class Broker implements AutoCloseable {
    /**
     * Settings (the fields of herald_config); zero or null fields keep the
     * library's defaults. Retention limits: 0 is no limit.
     */
    public static final class Config {
        public String dataDir;
        public long ringCapacity, maxPayload, segmentSize;
        public long retentionMaxAgeMs, retentionMaxBytes, retentionMaxRecords;
        /** Presence sessions expire after this long without a heartbeat. */
        public long presenceTtlMs;
        /** One of {@code Codes.DURABILITY_*}. */
        public Integer durability;
        /** Sync interval of {@code DURABILITY_INTERVAL}. */
        public int syncIntervalMs;
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
        if (c.syncIntervalMs != 0) cfg.setInt(44, c.syncIntervalMs);
        cfg.setLong(48, c.retentionMaxAgeMs);
        cfg.setLong(56, c.retentionMaxBytes);
        cfg.setLong(64, c.retentionMaxRecords);
        if (c.presenceTtlMs != 0) cfg.setLong(72, c.presenceTtlMs);
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

    /** A snapshot of the broker's counters and publish-to-deliver latency percentiles. */
    public record Metrics(long published, long delivered, long laggedFallbacks, long gaps, long replayed,
            long activeSubscribers, long latencyP50Ns, long latencyP95Ns, long latencyP99Ns, long latencyMaxNs) {}

    public Metrics metrics() {
        Memory m = new Memory(80);
        HeraldException.check(Native.herald_broker_metrics(ptr, m));
        return new Metrics(m.getLong(0), m.getLong(8), m.getLong(16), m.getLong(24), m.getLong(32), m.getLong(40),
                m.getLong(48), m.getLong(56), m.getLong(64), m.getLong(72));
    }

    /** Events published so far (shorthand for {@code metrics().published()}). */
    public long published() {
        return metrics().published();
    }

    /** Syncs the log to stable storage. */
    public void flush() {
        HeraldException.check(Native.herald_broker_flush(ptr));
    }

    /** The last acknowledged global sequence of a durable consumer ({@link Codes#UNKNOWN_CONSUMER} if none). */
    public long consumerCheckpoint(String name) {
        byte[] n = utf8(name);
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_broker_consumer_checkpoint(ptr, n, n.length, out));
        return out.getLong(0);
    }

    /**
     * Acknowledges everything up to {@code seq} for the durable consumer
     * {@code name}, for hosts that track delivery themselves. The consumer
     * must exist; {@code seq} past the last event or below the checkpoint
     * fails with {@link Codes#ACK} and changes nothing.
     */
    public void consumerAck(String name, long seq) {
        byte[] n = utf8(name);
        HeraldException.check(Native.herald_broker_consumer_ack(ptr, n, n.length, seq));
    }

    /** Forgets the durable consumer {@code name} and releases what retention kept for it. */
    public void removeConsumer(String name) {
        byte[] n = utf8(name);
        HeraldException.check(Native.herald_broker_consumer_remove(ptr, n, n.length));
    }

    /**
     * Publishes the events in one go: consecutive global sequences, nothing
     * else in between. One invalid event fails the whole batch and stores
     * nothing. Returns the sequences, in order.
     */
    public List<Publisher.Published> publishBatch(List<BatchEvent> events) {
        int n = events.size();
        if (n == 0) return List.of();
        byte[][] types = new byte[n][], corrs = new byte[n][];
        long bytes = 0;
        for (int i = 0; i < n; i++) {
            BatchEvent e = events.get(i);
            types[i] = e.type().getBytes(StandardCharsets.UTF_8);
            corrs[i] = e.correlation() == null ? new byte[0] : utf8(e.correlation());
            bytes += types[i].length + corrs[i].length + e.payload().length;
        }
        // herald_batch_event[n] (48 bytes each), herald_publish_options[n]
        // (24 bytes each), then the strings and payloads they point to.
        Memory m = new Memory(n * 72L + Math.max(1, bytes));
        long at = n * 72L;
        for (int i = 0; i < n; i++) {
            BatchEvent e = events.get(i);
            long entry = i * 48L, opts = n * 48L + i * 24L;
            m.setPointer(entry, e.publisher().ptr());
            m.setPointer(entry + 8, m.share(at));
            m.setLong(entry + 16, types[i].length);
            m.write(at, types[i], 0, types[i].length);
            at += types[i].length;
            m.setPointer(entry + 24, m.share(at));
            m.setLong(entry + 32, e.payload().length);
            m.write(at, e.payload(), 0, e.payload().length);
            at += e.payload().length;
            m.setPointer(entry + 40, m.share(opts));
            m.setLong(opts, e.origin());
            m.setPointer(opts + 8, m.share(at));
            m.setLong(opts + 16, corrs[i].length);
            m.write(at, corrs[i], 0, corrs[i].length);
            at += corrs[i].length;
        }
        Memory out = new Memory(n * 16L);
        HeraldException.check(Native.herald_broker_publish_batch(ptr, m, n, out));
        Publisher.Published[] r = new Publisher.Published[n];
        for (int i = 0; i < n; i++) r[i] = new Publisher.Published(out.getLong(i * 16L), out.getLong(i * 16L + 8));
        return List.of(r);
    }

    /**
     * Joins (or refreshes) presence session {@code clientId} on {@code topic};
     * a new session publishes {@code presence.join} on {@code $presence.<topic>}.
     * {@code metadata} is null, empty or a JSON document.
     */
    public void presenceJoin(String topic, String clientId, String user, String device, String metadata) {
        byte[] t = utf8(topic), c = utf8(clientId), u = utf8(user), d = utf8(device), m = utf8(metadata);
        HeraldException.check(Native.herald_broker_presence_join(ptr, t, t.length, c, c.length, u, u.length, d,
                d.length, m, m.length));
    }

    /** Refreshes a session ({@link Codes#PRESENCE} if it is unknown or expired). */
    public void presenceHeartbeat(String topic, String clientId) {
        byte[] t = utf8(topic), c = utf8(clientId);
        HeraldException.check(Native.herald_broker_presence_heartbeat(ptr, t, t.length, c, c.length));
    }

    /** Ends a session (publishing {@code presence.leave}); false if there was none. */
    public boolean presenceLeave(String topic, String clientId) {
        byte[] t = utf8(topic), c = utf8(clientId);
        Memory out = new Memory(1);
        HeraldException.check(Native.herald_broker_presence_leave(ptr, t, t.length, c, c.length, out));
        return out.getByte(0) != 0;
    }

    /** Expires the sessions without a recent heartbeat (publishing {@code presence.expire}); returns how many. */
    public long presenceExpire() {
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_broker_presence_expire(ptr, out));
        return out.getLong(0);
    }

    /** Who is present on a topic: the number of sessions and their JSON array (see include/herald.h). */
    public record Presence(long count, String json) {}

    public Presence presenceList(String topic) {
        byte[] t = utf8(topic);
        Memory len = new Memory(8), count = new Memory(8);
        Memory buf = new Memory(4096);
        for (;;) {
            int rc = Native.herald_broker_presence_list(ptr, t, t.length, buf, buf.size(), len, count);
            if (rc == Codes.BUFFER_TOO_SMALL) {
                // Sessions may join between the calls: ask again with room to spare.
                buf = new Memory(len.getLong(0) + 4096);
                continue;
            }
            HeraldException.check(rc);
            byte[] json = buf.getByteArray(0, (int) len.getLong(0));
            return new Presence(count.getLong(0), new String(json, StandardCharsets.UTF_8));
        }
    }

    private static byte[] utf8(String s) {
        return s == null ? new byte[0] : s.getBytes(StandardCharsets.UTF_8);
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
