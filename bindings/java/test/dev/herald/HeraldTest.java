package dev.herald;

import com.sun.jna.Memory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Flow;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/** Host test of the JVM binding, run with plain java (no build tool). */
public final class HeraldTest {
    static final int TOTAL = 100_000;
    static final String TOPIC = "acme.workspace.42";
    static int passed, failed;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static Broker open(Path dir) {
        Broker.Config c = new Broker.Config(dir.toString());
        c.ringCapacity = 1 << 20;
        c.maxPayload = 4096;
        c.segmentSize = 8 << 20;
        c.durability = Codes.DURABILITY_NEVER;
        c.prefault = false;
        return Broker.open(c);
    }

    /** Checks order and completeness of one subscriber's stream. */
    static final class OrderCheck {
        final int[] next = new int[2];
        long lastSeq, topicSeq;
        int count;

        void see(Event e) {
            check(!e.gap() && e.topic().equals(TOPIC) && e.type().equals("order.created"), "event fields " + e);
            check(e.seq() > lastSeq && e.topicSeq() == topicSeq + 1, "order at " + e.seq());
            ByteBuffer b = ByteBuffer.wrap(e.payload()).order(ByteOrder.LITTLE_ENDIAN);
            int w = b.getInt(0), i = b.getInt(4);
            check(w >= 0 && w <= 1 && i == next[w] && e.origin() == w + 1, "per-publisher order");
            next[w]++;
            lastSeq = e.seq();
            topicSeq = e.topicSeq();
            count++;
        }
    }

    static void publishSubscribeReplayConsumer(Path dir) throws Exception {
        check(Broker.version().matches("\\d+\\.\\d+\\.\\d+.*"), "version");
        Broker broker = open(dir);
        Subscriber iterSub = broker.subscribe(Filter.topics(TOPIC), Start.now());
        Subscriber flowSub = broker.subscribe(Filter.topics("acme.*.42").types("order.created"), Start.seq(1));
        CompletableFuture<OrderCheck> viaIterator = CompletableFuture.supplyAsync(() -> {
            OrderCheck c = new OrderCheck();
            for (Event e : iterSub) {
                c.see(e);
                if (c.count == TOTAL) break;
            }
            return c;
        });
        CompletableFuture<OrderCheck> viaFlow = new CompletableFuture<>();
        flowSub.publisher().subscribe(new Flow.Subscriber<Event>() {
            final OrderCheck c = new OrderCheck();
            Flow.Subscription s;

            public void onSubscribe(Flow.Subscription s) {
                this.s = s;
                s.request(Long.MAX_VALUE);
            }

            public void onNext(Event e) {
                try {
                    c.see(e);
                } catch (Throwable t) {
                    viaFlow.completeExceptionally(t);
                    s.cancel();
                }
                if (c.count == TOTAL) viaFlow.complete(c);
            }

            public void onError(Throwable t) {
                viaFlow.completeExceptionally(t);
            }

            public void onComplete() {}
        });
        Thread[] publishers = new Thread[2];
        for (int w = 0; w < 2; w++) {
            final int worker = w;
            publishers[w] = new Thread(() -> {
                try (Publisher p = broker.publisher(TOPIC)) {
                    ByteBuffer payload = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN);
                    for (int i = 0; i < TOTAL / 2; i++) {
                        payload.putInt(0, worker).putInt(4, i);
                        if (worker == 0) {
                            p.publish("order.created", payload.array(), worker + 1);
                        } else {
                            p.publishWith("order.created", 64, buf -> buf.put(payload.array()), worker + 1);
                        }
                    }
                }
            });
            publishers[w].start();
        }
        for (Thread t : publishers) t.join();
        for (OrderCheck c : new OrderCheck[] {viaIterator.get(60, TimeUnit.SECONDS), viaFlow.get(60, TimeUnit.SECONDS)}) {
            check(c.next[0] == TOTAL / 2 && c.next[1] == TOTAL / 2, "complete");
        }
        iterSub.close();
        flowSub.close();
        check(broker.published() == TOTAL, "metrics");
        check(broker.nextSeq() == TOTAL + 1, "next seq");
        broker.close();

        // Reopen and replay from a sequence.
        try (Broker b = open(dir)) {
            try (Subscriber replay = b.subscribe(Filter.topics(TOPIC), Start.seq(50_001))) {
                for (long want = 50_001; want <= TOTAL; want++) {
                    Event e = replay.next(1000);
                    check(e != null && e.seq() == want && e.topicSeq() == want, "replay at " + want);
                }
                check(replay.next(0) == null, "nothing after the replay");
            }
            // A durable consumer resumes after its acknowledgement.
            long last = 0;
            try (Subscriber c = b.consumer("billing", Filter.topics(TOPIC), Start.seq(1))) {
                for (int i = 0; i < 1000; i++) {
                    Event e = c.next(1000);
                    check(e.seq() == last + 1, "consumer order");
                    last = e.seq();
                }
                c.ackUpTo(last);
            }
            check(b.consumerCheckpoint("billing") == 1000, "checkpoint");
            try (Subscriber c = b.consumer("billing", Filter.topics(TOPIC), Start.now())) {
                check(c.next(1000).seq() == 1001, "resumed after the checkpoint");
            }
        }
    }

    static int code(Runnable r) {
        try {
            r.run();
            return Codes.OK;
        } catch (HeraldException e) {
            return e.code();
        }
    }

    static void badCalls(Path dir) {
        check(code(() -> Broker.open(new Broker.Config(""))) == Codes.INVALID_CONFIG, "empty data dir");
        try (Broker b = open(dir)) {
            check(code(() -> b.publisher("bad topic")) == Codes.INVALID_TOPIC, "invalid topic");
            check(code(() -> b.subscribe(Filter.topics("a.>.b"), Start.now())) == Codes.INVALID_TOPIC, "bad pattern");
            check(code(() -> b.subscribe(Filter.topics("a.>"), Start.topicSeq(1))) == Codes.NEEDS_SINGLE_TOPIC,
                    "topic seq needs one topic");
            Publisher p = b.publisher("bad.calls");
            try (Subscriber s = b.subscribe(Filter.topics("bad.calls"), Start.now())) {
                check(code(() -> p.publish("bad type!", new byte[1], 0)) == Codes.INVALID_EVENT_TYPE, "bad type");
                check(code(() -> p.publish("t", new byte[5000], 0)) == Codes.PAYLOAD_TOO_LARGE, "too large");
                p.publish("t", new byte[100], 0);
                HeraldException small = null;
                try {
                    s.nextInto(new Memory(10), 1000);
                } catch (HeraldException e) {
                    small = e;
                }
                check(small != null && small.code() == Codes.BUFFER_TOO_SMALL, "buffer too small");
                check(small.needed() == 100 + "bad.calls".length() + 1, "needed size");
                Event e = s.nextInto(new Memory(small.needed()), 0);
                check(e.payload().length == 100, "event kept after too small");
                check(code(() -> s.nextInto(new Memory(10), 0)) == Codes.TIMEOUT, "timeout");
                check(code(() -> s.ack(1)) == Codes.NOT_A_CONSUMER, "not a consumer");
                check(s.lag() == 0, "lag");
            }
            p.close();
            // A closed handle passes NULL to the library.
            check(code(() -> p.publish("t", new byte[1], 0)) == Codes.NULL, "NULL handle");
            check(Native.herald_broker_next_seq(null, new Memory(8)) == Codes.NULL, "NULL broker");
            check(Native.herald_strerror(Codes.BUFFER_TOO_SMALL).contains("buffer"), "strerror");
        }
    }

    static Event next(Subscriber s) {
        Event e = s.next(2000);
        check(e != null, "a delivery within 2 s");
        return e;
    }

    static void correlationIds(Path dir) {
        String longest = "x".repeat(126);
        try (Broker b = open(dir);
             Publisher p = b.publisher("corr.a");
             Subscriber batched = b.subscribe(Filter.topics("corr.a"), Start.now());
             Subscriber single = b.subscribe(Filter.topics("corr.a"), Start.now())) {
            p.publish("t", new byte[] {1}, 0, "req-1");
            p.publishWith("t", 2, buf -> buf.put(new byte[] {2, 2}), 7, "req-2");
            p.publish("t", new byte[] {3}, 0, longest);
            p.publish("t", new byte[] {4});
            b.publishBatch(List.of(new BatchEvent(p, "t", new byte[] {5}, 9, "req-5")));
            String[] want = {"req-1", "req-2", longest, "", "req-5"};
            for (int i = 0; i < want.length; i++) {
                // Both read paths: herald_subscriber_read and herald_subscriber_next.
                Event viaRead = next(batched);
                Event viaNext = single.nextInto(new Memory(4096), 2000);
                for (Event e : new Event[] {viaRead, viaNext}) {
                    check(e.correlation().equals(want[i]), "correlation " + i + ": " + e.correlation());
                    check(e.payload()[0] == i + 1, "payload " + i);
                }
            }
            check(viaOrigin(b) == 7, "origin beside a correlation id");
            long before = b.nextSeq();
            check(code(() -> p.publish("t", new byte[1], 0, "x".repeat(127))) == Codes.INVALID_CORRELATION,
                    "127 bytes");
            check(code(() -> p.publish("t", new byte[1], 0, "tab\there")) == Codes.INVALID_CORRELATION,
                    "not printable");
            check(code(() -> p.publish("t", new byte[1], 0, "caf\u00e9")) == Codes.INVALID_CORRELATION,
                    "not ASCII");
            check(code(() -> p.publishWith("t", 1, buf -> buf.put((byte) 0), 0, "x".repeat(200)))
                    == Codes.INVALID_CORRELATION, "claim with a bad correlation id");
            check(b.nextSeq() == before, "refused events are not stored");
            // The refused claim was released: the next claim works.
            p.publishWith("t", 1, buf -> buf.put((byte) 6), 0, "after");
            check(next(batched).correlation().equals("after"), "claim released after a refused commit");
        }
    }

    static long viaOrigin(Broker b) {
        try (Subscriber s = b.subscribe(Filter.topics("corr.a"), Start.seq(2))) {
            return next(s).origin();
        }
    }

    static void publishBatch(Path dir) {
        try (Broker b = open(dir);
             Publisher x = b.publisher("batch.x");
             Publisher y = b.publisher("batch.y");
             Subscriber s = b.subscribe(Filter.topics("batch.*"), Start.now())) {
            x.publish("t", new byte[] {0});
            List<Publisher.Published> got = b.publishBatch(List.of(new BatchEvent(x, "a", new byte[] {1}),
                    new BatchEvent(y, "b", new byte[] {2, 2}, 3, null), new BatchEvent(x, "c", new byte[0])));
            check(got.size() == 3, "three sequences");
            check(got.get(0).seq() == 2 && got.get(1).seq() == 3 && got.get(2).seq() == 4, "consecutive: " + got);
            check(got.get(0).topicSeq() == 2 && got.get(1).topicSeq() == 1 && got.get(2).topicSeq() == 3,
                    "topic sequences: " + got);
            check(b.publishBatch(List.of()).isEmpty(), "empty batch");
            check(code(() -> b.publishBatch(List.of(new BatchEvent(x, "ok", new byte[1]),
                    new BatchEvent(y, "bad type", new byte[1])))) == Codes.INVALID_EVENT_TYPE, "bad event in batch");
            check(b.nextSeq() == 5, "a failed batch stores nothing");
            next(s);
            String[] types = {"a", "b", "c"};
            String[] topics = {"batch.x", "batch.y", "batch.x"};
            for (int i = 0; i < 3; i++) {
                Event e = next(s);
                check(e.seq() == i + 2 && e.type().equals(types[i]) && e.topic().equals(topics[i])
                        && e.payload().length == (i == 1 ? 2 : i == 0 ? 1 : 0), "batch event " + e);
            }
            check(s.next(0) == null, "nothing else");
        }
    }

    static void brokerConsumerAckAndRemove(Path dir) {
        try (Broker b = open(dir); Publisher p = b.publisher("acks")) {
            check(code(() -> b.consumerAck("audit", 1)) == Codes.UNKNOWN_CONSUMER, "ack of an unknown consumer");
            check(code(() -> b.removeConsumer("audit")) == Codes.UNKNOWN_CONSUMER, "remove of an unknown consumer");
            // Opening it creates the consumer, without acknowledging anything.
            b.consumer("audit", Filter.topics("acks"), Start.seq(1)).close();
            for (int i = 1; i <= 10; i++) p.publish("t", new byte[] {(byte) i});
            b.consumerAck("audit", 5);
            check(b.consumerCheckpoint("audit") == 5, "checkpoint after the broker-side ack");
            b.consumerAck("audit", 5);
            check(code(() -> b.consumerAck("audit", 4)) == Codes.ACK, "below the checkpoint");
            check(code(() -> b.consumerAck("audit", 11)) == Codes.ACK, "past the last event");
            check(b.consumerCheckpoint("audit") == 5, "refused acks change nothing");
            try (Subscriber c = b.consumer("audit", Filter.topics("acks"), Start.seq(1))) {
                check(next(c).seq() == 6, "resumes after the broker-side ack");
            }
            b.removeConsumer("audit");
            check(code(() -> b.consumerCheckpoint("audit")) == Codes.UNKNOWN_CONSUMER, "removed");
            try (Subscriber c = b.consumer("audit", Filter.topics("acks"), Start.seq(1))) {
                check(next(c).seq() == 1, "a removed consumer starts afresh");
            }
        }
    }

    static void presence(Path dir) throws Exception {
        Broker.Config c = new Broker.Config(dir.toString());
        c.durability = Codes.DURABILITY_NEVER;
        c.prefault = false;
        c.presenceTtlMs = 200;
        try (Broker b = Broker.open(c);
             Subscriber s = b.subscribe(Filter.topics("$presence.room.1"), Start.now())) {
            b.presenceJoin("room.1", "c1", "alice", "phone", "{\"x\": 1}");
            Event join = next(s);
            String body = new String(join.payload(), StandardCharsets.UTF_8);
            check(join.type().equals("presence.join") && join.topic().equals("$presence.room.1"), "join " + join);
            check(body.contains("\"client_id\":\"c1\"") && body.contains("\"user\":\"alice\"")
                    && body.contains("\"metadata\":{\"x\":1}"), "join payload " + body);
            b.presenceJoin("room.1", "c2", null, null, null);
            check(next(s).type().equals("presence.join"), "second join");
            Broker.Presence list = b.presenceList("room.1");
            check(list.count() == 2 && list.json().startsWith("[") && list.json().contains("\"client_id\":\"c1\"")
                    && list.json().contains("\"client_id\":\"c2\""), "list " + list);
            check(b.presenceList("room.2").equals(new Broker.Presence(0, "[]")), "empty list");
            check(code(() -> b.presenceJoin("room.1", "c3", "u", "d", "{not json")) == Codes.PRESENCE,
                    "bad metadata");
            check(code(() -> b.presenceHeartbeat("room.1", "nobody")) == Codes.PRESENCE, "unknown session");
            check(b.presenceLeave("room.1", "c2"), "leave");
            check(next(s).type().equals("presence.leave"), "leave event");
            check(!b.presenceLeave("room.1", "c2"), "second leave");
            // c1 keeps its session alive past the TTL; nothing refreshes c4.
            b.presenceJoin("room.1", "c4", "bob", "", "");
            check(next(s).type().equals("presence.join"), "join c4");
            for (int i = 0; i < 6; i++) {
                Thread.sleep(60);
                b.presenceHeartbeat("room.1", "c1");
            }
            check(b.presenceExpire() == 1, "one expired");
            Event expired = next(s);
            check(expired.type().equals("presence.expire")
                    && new String(expired.payload(), StandardCharsets.UTF_8).contains("\"client_id\":\"c4\""),
                    "expire event " + expired);
            Broker.Presence left = b.presenceList("room.1");
            check(left.count() == 1 && left.json().contains("\"c1\"") && !left.json().contains("\"c4\""),
                    "after expiry " + left);
            check(b.presenceExpire() == 0, "nothing more to expire");
        }
    }

    static void flushMetricsWait(Path dir) {
        try (Broker b = open(dir);
             Publisher p = b.publisher("m.t");
             Subscriber s = b.subscribe(Filter.topics("m.t"), Start.now())) {
            check(!s.await(0), "nothing to wait for");
            long t = System.nanoTime();
            check(!s.await(100), "await times out");
            check(System.nanoTime() - t >= 80_000_000L, "await waited");
            // 32 events: one delivery in 16 is a latency sample.
            for (int i = 0; i < 32; i++) p.publish("t", new byte[8]);
            b.flush();
            check(s.await(1000), "await sees a publish");
            check(s.live(), "reads the live ring");
            for (int i = 0; i < 32; i++) next(s);
            check(s.next(0) == null, "caught up");
            Broker.Metrics m = b.metrics();
            check(m.published() == 32 && m.delivered() == 32 && m.activeSubscribers() == 1 && m.gaps() == 0,
                    "metrics " + m);
            check(m.latencyMaxNs() >= m.latencyP50Ns() && m.latencyP50Ns() > 0, "latency " + m);
        }
    }

    static void run(String name, ThrowingRunnable r) {
        try {
            r.run();
            passed++;
            System.out.println("ok " + name);
        } catch (Throwable t) {
            failed++;
            System.out.println("FAILED " + name + ": " + t);
            t.printStackTrace();
        }
    }

    interface ThrowingRunnable {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        Path root = Files.createTempDirectory("herald-java-");
        run("publish_100k_two_threads_iterator_and_flow_publisher_replay_consumer",
                () -> publishSubscribeReplayConsumer(root.resolve("main")));
        run("bad_calls_return_documented_codes", () -> badCalls(root.resolve("bad")));
        run("correlation_ids_on_publish_claim_batch_and_both_read_paths", () -> correlationIds(root.resolve("corr")));
        run("publish_batch_consecutive_and_all_or_nothing", () -> publishBatch(root.resolve("batch")));
        run("broker_side_consumer_ack_and_remove", () -> brokerConsumerAckAndRemove(root.resolve("acks")));
        run("presence_join_heartbeat_leave_expire_list", () -> presence(root.resolve("presence")));
        run("flush_metrics_wait_live", () -> flushMetricsWait(root.resolve("metrics")));
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
