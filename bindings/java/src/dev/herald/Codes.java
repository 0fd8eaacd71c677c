package dev.herald;

/** The stable result codes of include/herald.h. */
public final class Codes {
    private Codes() {}

    public static final int OK = 0, NULL = 1, INVALID_HANDLE = 2, INVALID_ARGUMENT = 3, INVALID_UTF8 = 4,
            INVALID_TOPIC = 5, INVALID_FILTER = 6, INVALID_EVENT_TYPE = 7, INVALID_CORRELATION = 8,
            PAYLOAD_TOO_LARGE = 9, NEEDS_SINGLE_TOPIC = 10, INVALID_CONFIG = 11, BUFFER_TOO_SMALL = 12, TIMEOUT = 13,
            BUSY = 14, NO_CLAIM = 15, UNKNOWN_CONSUMER = 16, NOT_A_CONSUMER = 17, ACK = 18, CHECKPOINT = 19,
            PRESENCE = 20, LOG = 21, IO = 22, CORRUPT = 23, PANIC = 24, CANCELLED = 25;

    /** Durability policies. */
    public static final int DURABILITY_NEVER = 0, DURABILITY_INTERVAL = 1, DURABILITY_ALWAYS = 2;
}
