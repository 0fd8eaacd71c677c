package dev.herald;

import com.sun.jna.Memory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
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
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
