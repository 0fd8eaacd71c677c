/* A C host built against an installed libherald (scripts/install), from
 * outside the repository: publishes one event and reads it back. */
#include <herald.h>
#include <stdio.h>
#include <string.h>

#define CHECK(call)                                                           \
    do {                                                                      \
        herald_result r_ = (call);                                            \
        if (r_ != HERALD_OK) {                                                \
            fprintf(stderr, "%s: %d %s\n", #call, (int)r_, herald_last_error()); \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    if (strcmp(herald_version(), HERALD_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", HERALD_VERSION_STRING, herald_version());
        return 1;
    }
    herald_config cfg;
    CHECK(herald_config_init(&cfg));
    cfg.data_dir = argv[1];
    cfg.data_dir_len = strlen(argv[1]);
    herald_broker *b = NULL;
    CHECK(herald_broker_open(&cfg, &b));
    herald_filter *f = NULL;
    CHECK(herald_filter_new(&f));
    CHECK(herald_filter_add_topic(f, "orders", 6));
    herald_subscriber *s = NULL;
    CHECK(herald_subscriber_open(b, f, HERALD_START_SEQ, 1, &s));
    herald_filter_free(f);
    herald_publisher *p = NULL;
    CHECK(herald_publisher_new(b, "orders", 6, &p));
    const char *payload = "{\"id\":42}";
    CHECK(herald_publisher_publish(p, "order.created", 13, (const uint8_t *)payload,
                                   strlen(payload), NULL, NULL));
    uint8_t buf[256];
    size_t len = 0;
    herald_delivery d;
    CHECK(herald_subscriber_next(s, buf, sizeof buf, &len, &d, 1000));
    if (d.kind != HERALD_DELIVERY_EVENT || d.seq != 1 || d.payload_len != strlen(payload) ||
        memcmp(d.payload, payload, d.payload_len) != 0) {
        fprintf(stderr, "wrong delivery\n");
        return 1;
    }
    printf("herald %s: received %.*s\n", herald_version(), (int)d.payload_len, d.payload);
    herald_subscriber_free(s);
    herald_publisher_free(p);
    CHECK(herald_broker_close(b));
    return 0;
}
