package dev.herald;

/** Where a subscription starts (the same choices as the Rust API). */
public record Start(int kind, long value) {
    public static Start now() { return new Start(0, 0); }
    public static Start seq(long seq) { return new Start(1, seq); }
    public static Start topicSeq(long topicSeq) { return new Start(2, topicSeq); }
    public static Start time(long epochNanos) { return new Start(3, epochNanos); }
    public static Start lastN(long n) { return new Start(4, n); }
}
