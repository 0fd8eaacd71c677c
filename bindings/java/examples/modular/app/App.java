package app;

import dev.herald.Broker;
import dev.herald.Event;
import dev.herald.Filter;
import dev.herald.Publisher;
import dev.herald.Start;
import dev.herald.Subscriber;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

/** A modular program: publishes an event and receives it, and durable-consumer acks it. */
public final class App {
    public static void main(String[] args) throws Exception {
        Path dir = Files.createTempDirectory("herald-app-");
        try (Broker broker = Broker.open(new Broker.Config(dir.toString()));
             Publisher pub = broker.publisher("app.greetings")) {
            System.out.println("library " + Broker.version());
            try (Subscriber sub = broker.consumer("greeter", Filter.topics("app.*"), Start.now())) {
                pub.publish("greeting", "hello".getBytes(StandardCharsets.UTF_8), 0, "trace-42");
                Event e = sub.next(5000);
                if (e == null) throw new IllegalStateException("no event within 5 s");
                sub.ack(e.seq());
                System.out.println("received " + e.topic() + " " + e.type() + " "
                        + new String(e.payload(), StandardCharsets.UTF_8) + " correlation=" + e.correlation());
            }
            System.out.println("checkpoint " + broker.consumerCheckpoint("greeter"));
        } finally {
            try (Stream<Path> files = Files.walk(dir)) {
                files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
