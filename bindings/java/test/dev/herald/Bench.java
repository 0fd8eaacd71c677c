package dev.herald;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Iterator;
import java.util.stream.Stream;

/** Events/s received through the JVM binding, 64-byte events (docs/BENCHMARKS.md, "C ABI"). */
public final class Bench {
    public static void main(String[] args) throws Exception {
        int events = args.length > 0 ? Integer.parseInt(args[0]) : 500_000;
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        double[] pub = new double[rounds], next = new double[rounds], iter = new double[rounds];
        for (int r = 0; r < rounds; r++) {
            Path dir = Files.createTempDirectory("herald-java-bench-");
            Broker.Config c = new Broker.Config(dir.toString());
            c.ringCapacity = 1 << 28;
            c.segmentSize = 1L << 30;
            c.durability = Codes.DURABILITY_NEVER;
            c.prefault = false;
            try (Broker b = Broker.open(c);
                 Publisher p = b.publisher("bench.topic");
                 Subscriber s1 = b.subscribe(Filter.topics("bench.topic"), Start.now());
                 Subscriber s2 = b.subscribe(Filter.topics("bench.topic"), Start.now())) {
                byte[] payload = new byte[64];
                long t = System.nanoTime();
                for (int i = 0; i < events; i++) p.publish("e", payload, 0);
                pub[r] = events / ((System.nanoTime() - t) / 1e9);
                t = System.nanoTime();
                for (int i = 0; i < events; i++) {
                    if (s1.next(0).payload().length != 64) throw new AssertionError();
                }
                next[r] = events / ((System.nanoTime() - t) / 1e9);
                t = System.nanoTime();
                Iterator<Event> it = s2.iterator();
                for (int i = 0; i < events; i++) {
                    if (it.next().payload().length != 64) throw new AssertionError();
                }
                iter[r] = events / ((System.nanoTime() - t) / 1e9);
            }
            try (Stream<Path> walk = Files.walk(dir)) {
                walk.sorted(Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
            }
        }
        System.out.printf("java publish %.0f%njava receive_next %.0f%njava receive_iterator %.0f%n", median(pub),
                median(next), median(iter));
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
