package dev.herald;

import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;
import java.io.File;
import java.io.IOException;

/**
 * JNA direct mapping of include/herald.h. Handles are {@link Pointer}s;
 * {@code size_t} is {@code long} (64-bit Linux).
 *
 * <p>Library lookup: with the system property {@code jna.library.path} or
 * the environment variable {@code HERALD_LIB_DIR} set, JNA's usual search;
 * otherwise the libherald.so bundled in the jar (JNA resource path, e.g.
 * {@code linux-x86-64/libherald.so}), extracted by JNA to a temporary file,
 * and only if the jar has none, JNA's usual search.
 */
final class Native {
    private Native() {}

    static {
        com.sun.jna.Native.register(Native.class, load());
    }

    private static NativeLibrary load() {
        String dir = System.getenv("HERALD_LIB_DIR");
        if (dir != null && System.getProperty("jna.library.path") == null) {
            System.setProperty("jna.library.path", dir);
        }
        if (System.getProperty("jna.library.path") == null) {
            // The bundled copy first: JNA's usual order would prefer any
            // libherald.so on the system path, maybe of another version.
            File bundled;
            try {
                bundled = com.sun.jna.Native.extractFromResourcePath("herald", Native.class.getClassLoader());
            } catch (IOException notBundled) {
                bundled = null;
            }
            if (bundled != null) {
                return NativeLibrary.getInstance(bundled.getAbsolutePath());
            }
        }
        return NativeLibrary.getInstance("herald");
    }

    static native String herald_version();
    static native String herald_strerror(int code);
    static native String herald_last_error();

    static native int herald_config_init(Pointer config);
    static native int herald_broker_open(Pointer config, Pointer out);
    static native int herald_broker_close(Pointer broker);
    static native int herald_broker_next_seq(Pointer broker, Pointer out);
    static native int herald_broker_metrics(Pointer broker, Pointer out);
    static native int herald_broker_flush(Pointer broker);
    static native int herald_broker_consumer_checkpoint(Pointer broker, byte[] name, long nameLen, Pointer out);
    static native int herald_broker_consumer_ack(Pointer broker, byte[] name, long nameLen, long seq);
    static native int herald_broker_consumer_remove(Pointer broker, byte[] name, long nameLen);
    static native int herald_broker_publish_batch(Pointer broker, Pointer events, long count, Pointer out);
    static native int herald_broker_presence_join(Pointer broker, byte[] topic, long topicLen, byte[] clientId,
            long clientIdLen, byte[] user, long userLen, byte[] device, long deviceLen, byte[] metadata,
            long metadataLen);
    static native int herald_broker_presence_heartbeat(Pointer broker, byte[] topic, long topicLen, byte[] clientId,
            long clientIdLen);
    static native int herald_broker_presence_leave(Pointer broker, byte[] topic, long topicLen, byte[] clientId,
            long clientIdLen, Pointer outWasPresent);
    static native int herald_broker_presence_expire(Pointer broker, Pointer outCount);
    static native int herald_broker_presence_list(Pointer broker, byte[] topic, long topicLen, Pointer buf, long cap,
            Pointer outLen, Pointer outCount);

    static native int herald_filter_new(Pointer out);
    static native void herald_filter_free(Pointer filter);
    static native int herald_filter_add_topic(Pointer filter, byte[] pattern, long len);
    static native int herald_filter_add_type(Pointer filter, byte[] type, long len);
    static native int herald_filter_exclude_origin(Pointer filter, long origin);

    static native int herald_publisher_new(Pointer broker, byte[] topic, long topicLen, Pointer out);
    static native void herald_publisher_free(Pointer publisher);
    static native int herald_publisher_publish(Pointer publisher, byte[] type, long typeLen, byte[] payload,
            long payloadLen, Pointer options, Pointer out);
    static native int herald_publisher_claim(Pointer publisher, long len, Pointer outBuf);
    static native int herald_publisher_commit(Pointer publisher, byte[] type, long typeLen, long len, Pointer options,
            Pointer out);
    static native int herald_publisher_abort(Pointer publisher);

    static native int herald_subscriber_open(Pointer broker, Pointer filter, int startKind, long startValue, Pointer out);
    static native int herald_subscriber_open_consumer(Pointer broker, byte[] name, long nameLen, Pointer filter,
            int startKind, long startValue, Pointer out);
    static native void herald_subscriber_free(Pointer subscriber);
    static native int herald_subscriber_next(Pointer subscriber, Pointer buf, long cap, Pointer outLen,
            Pointer outDelivery, int timeoutMs);
    static native int herald_subscriber_read(Pointer subscriber, Pointer buf, long cap, long limit, Pointer outLen,
            Pointer outCount, int timeoutMs);
    static native int herald_subscriber_ack(Pointer subscriber, long seq);
    static native int herald_subscriber_ack_up_to(Pointer subscriber, long seq);
    static native int herald_subscriber_wait(Pointer subscriber, int timeoutMs, Pointer outReady);
    static native int herald_subscriber_lag(Pointer subscriber, Pointer behind, Pointer live);
}
