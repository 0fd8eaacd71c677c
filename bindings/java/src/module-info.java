/**
 * Herald's JVM binding: an embedded event broker over the C ABI of
 * libherald, through JNA. The jar carries libherald.so for its platform.
 */
module dev.herald {
    // Transitive: Subscriber.nextInto takes a com.sun.jna.Memory buffer.
    requires transitive com.sun.jna;

    exports dev.herald;
}
