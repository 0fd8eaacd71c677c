package dev.herald;

/**
 * One event of {@link Broker#publishBatch}: its topic's publisher (of the
 * same broker), type, payload (copied), origin (0: none) and correlation id
 * (null: none).
 */
public record BatchEvent(Publisher publisher, String type, byte[] payload, long origin, String correlation) {
    public BatchEvent(Publisher publisher, String type, byte[] payload) {
        this(publisher, type, payload, 0, null);
    }
}
