package dev.herald;

/**
 * The layout of herald_record_header (include/herald.h), the little-endian
 * header of each record herald_subscriber_read writes: the offset of each
 * field, named after it, and the size, where the record's body starts.
 * ffi/tests/bindings_agree.rs checks these against the header.
 */
final class RecordHeader {
    private RecordHeader() {}

    static final int KIND = 0, RECORD_LEN = 4, SEQ = 8, TOPIC_SEQ = 16, TIMESTAMP_NS = 24, ORIGIN = 32,
            GAP_FROM = 40, GAP_TO = 48, PAYLOAD_LEN = 56, TOPIC_LEN = 60, EVENT_TYPE_LEN = 61,
            CORRELATION_LEN = 62, RESERVED = 63;

    /** HERALD_RECORD_HEADER: sizeof(herald_record_header). */
    static final int SIZE = 64;

    /** HERALD_DELIVERY_GAP: the kind of a gap notice. */
    static final int DELIVERY_GAP = 1;
}
