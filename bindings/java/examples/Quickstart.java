import dev.herald.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

public final class Quickstart {
    public static void main(String[] args) throws Exception {
        Path dir = Files.createTempDirectory("herald-quickstart-"); // a data dir of its own
        try (Broker broker = Broker.open(new Broker.Config(dir.toString()));
             Publisher pub = broker.publisher("acme.orders");
             Subscriber sub = broker.subscribe(Filter.topics("acme.>"), Start.now())) {
            pub.publish("order.created", "{\"id\":1}".getBytes(StandardCharsets.UTF_8), 0, "req-1");
            pub.publishWith("order.created", 8, buf -> buf.put("{\"id\":2}".getBytes(StandardCharsets.UTF_8)), 0);
            for (int received = 0; received < 2; ) {
                Event e = sub.next(5000); // null after 5 s without a delivery: never hangs
                if (e == null) throw new IllegalStateException("no event within 5 s");
                if (e.gap()) continue;
                System.out.println(e.seq() + " " + e.type() + " " + new String(e.payload(), StandardCharsets.UTF_8)
                        + " correlation=" + e.correlation());
                received++;
            }
        } finally {
            try (Stream<Path> files = Files.walk(dir)) {
                files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
