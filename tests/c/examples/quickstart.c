#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <herald.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every call returns a herald_result; the message of a failure is the
 * thread's herald_last_error(). */
#define TRY(call)                                                              \
    do {                                                                       \
        if ((call) != HERALD_OK) {                                             \
            fprintf(stderr, "%s: %s\n", #call, herald_last_error());          \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static int32_t on_event(void *user, const herald_delivery *d) {
    if (d->kind == HERALD_DELIVERY_GAP)
        printf("gap %llu..%llu\n", (unsigned long long)d->gap_from, (unsigned long long)d->gap_to);
    else
        printf("#%llu %.*s %.*s\n", (unsigned long long)d->seq, (int)d->event_type_len,
               d->event_type, (int)d->payload_len, (const char *)d->payload);
    *(uint64_t *)user = d->seq;
    return 0; /* non-zero stops the poll after this delivery */
}

int main(void) {
    char dir[] = "/tmp/herald-quickstart-XXXXXX"; /* a data directory of its own */
    if (!mkdtemp(dir)) return 1;
    herald_config cfg;
    TRY(herald_config_init(&cfg));
    cfg.data_dir = dir;
    cfg.data_dir_len = strlen(dir);
    herald_broker *broker;
    TRY(herald_broker_open(&cfg, &broker));
    herald_filter *filter;
    TRY(herald_filter_new(&filter));
    TRY(herald_filter_add_topic(filter, "acme.>", 6));
    herald_subscriber *sub;
    TRY(herald_subscriber_open(broker, filter, HERALD_START_NOW, 0, &sub));
    herald_filter_free(filter);

    herald_publisher *pub;
    TRY(herald_publisher_new(broker, "acme.orders", 11, &pub));
    herald_published first;
    TRY(herald_publisher_publish(pub, "order.created", 13, (const uint8_t *)"{\"id\":1}", 8,
                                 NULL, &first));

    uint8_t *buf; /* zero-copy from the host's side: fill the claimed buffer */
    TRY(herald_publisher_claim(pub, 8, &buf));
    memcpy(buf, "{\"id\":2}", 8);
    herald_published last;
    TRY(herald_publisher_commit(pub, "order.created", 13, 8, NULL, &last));

    /* Sequences start at 1; read until the last one published. */
    uint64_t seen = 0;
    for (int waits = 0; seen < last.seq; waits++) {
        int64_t n = herald_subscriber_poll(sub, on_event, &seen, 64);
        if (n < 0 || waits > 10) return 1;
        if (n == 0) {
            bool ready;
            TRY(herald_subscriber_wait(sub, 1000, &ready)); /* or herald_subscriber_fd + arm */
        }
    }
    herald_subscriber_free(sub);
    herald_publisher_free(pub);
    TRY(herald_broker_close(broker));
    return 0;
}
