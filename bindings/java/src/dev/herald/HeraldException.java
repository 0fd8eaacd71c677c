package dev.herald;

/** A failed call: its stable result code (see {@link Codes}) and the library's message. */
public final class HeraldException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final int code;
    private final long needed;

    HeraldException(int code, String message, long needed) {
        super(Native.herald_strerror(code) + " (code " + code + ")" + (message.isEmpty() ? "" : ": " + message));
        this.code = code;
        this.needed = needed;
    }

    /** The stable herald_result code. */
    public int code() {
        return code;
    }

    /** For {@link Codes#BUFFER_TOO_SMALL}: the buffer size needed. */
    public long needed() {
        return needed;
    }

    static void check(int rc) {
        if (rc != 0) {
            throw new HeraldException(rc, Native.herald_last_error(), 0);
        }
    }
}
