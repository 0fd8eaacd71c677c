package dev.herald;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** What a subscriber selects: topics or NATS-style patterns, event types, an origin to leave out. */
public final class Filter {
    final List<String> topics = new ArrayList<>();
    final List<String> types = new ArrayList<>();
    Long excludeOrigin;

    private Filter() {}

    public static Filter topics(String... patterns) {
        Filter f = new Filter();
        f.topics.addAll(List.of(patterns));
        return f;
    }

    public Filter types(String... eventTypes) {
        types.addAll(List.of(eventTypes));
        return this;
    }

    public Filter excludeOrigin(long origin) {
        excludeOrigin = origin;
        return this;
    }

    /** Builds the native filter; the caller frees it. */
    Pointer build() {
        Memory out = new Memory(8);
        HeraldException.check(Native.herald_filter_new(out));
        Pointer f = out.getPointer(0);
        try {
            for (String t : topics) {
                byte[] b = t.getBytes(StandardCharsets.UTF_8);
                HeraldException.check(Native.herald_filter_add_topic(f, b, b.length));
            }
            for (String t : types) {
                byte[] b = t.getBytes(StandardCharsets.UTF_8);
                HeraldException.check(Native.herald_filter_add_type(f, b, b.length));
            }
            if (excludeOrigin != null) {
                HeraldException.check(Native.herald_filter_exclude_origin(f, excludeOrigin));
            }
            return f;
        } catch (RuntimeException e) {
            Native.herald_filter_free(f);
            throw e;
        }
    }
}
