package dev.herald;

/**
 * One delivery: an event, or ({@code gap} true) a notice that retention
 * deleted {@code gapFrom..=gapTo} before this subscriber read them.
 */
public record Event(boolean gap, long seq, long topicSeq, long timestampNs, long origin, String topic, String type,
        String correlation, byte[] payload, long gapFrom, long gapTo) {}
