/* Cost of publishing and receiving through the C ABI, ns per event, 64-byte
 * payloads. Compare with benches/src/bin/ffi_bench.rs (the same work through
 * the Rust API); tests/c/bench.sh runs both and reports medians.
 *
 *   bench DIR [EVENTS]   prints "name ns_per_op" lines */
#define _GNU_SOURCE
#include <herald.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#define OK(expr)                                                                                \
    do {                                                                                        \
        herald_result rc_ = (expr);                                                             \
        if (rc_ != HERALD_OK) {                                                                 \
            fprintf(stderr, "%s: %s: %s\n", #expr, herald_strerror(rc_), herald_last_error()); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

static uint64_t received_bytes;

static int32_t on_delivery(void *user, const herald_delivery *d) {
    (void)user;
    received_bytes += d->payload_len;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [EVENTS]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    herald_config cfg;
    OK(herald_config_init(&cfg));
    cfg.data_dir = dir;
    cfg.data_dir_len = strlen(dir);
    cfg.ring_capacity = (size_t)1 << 28;
    cfg.segment_size = (uint64_t)1 << 30;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.prefault = false;
    herald_broker *b;
    OK(herald_broker_open(&cfg, &b));
    herald_publisher *pub;
    OK(herald_publisher_new(b, "bench.topic", 11, &pub));
    herald_filter *f;
    OK(herald_filter_new(&f));
    OK(herald_filter_add_topic(f, "bench.topic", 11));
    herald_subscriber *s_poll, *s_next, *s_read;
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &s_read));
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &s_poll));
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &s_next));
    uint8_t payload[64];
    memset(payload, 7, sizeof payload);

    /* Warm-up: touch the first pages of the log segment. */
    for (long i = 0; i < n / 10; i++) OK(herald_publisher_publish(pub, "e", 1, payload, 64, NULL, NULL));
    while (herald_subscriber_poll(s_poll, on_delivery, NULL, 1024) > 0) {}
    {
        uint8_t buf[256];
        size_t len;
        herald_delivery d;
        while (herald_subscriber_next(s_next, buf, sizeof buf, &len, &d, 0) == HERALD_OK) {}
        static uint8_t batch[1 << 18];
        size_t count;
        while (herald_subscriber_read(s_read, batch, sizeof batch, 1024, &len, &count, 0) == HERALD_OK) {}
    }

    double t0 = now_ns();
    for (long i = 0; i < n; i++) OK(herald_publisher_publish(pub, "e", 1, payload, 64, NULL, NULL));
    double t1 = now_ns();
    printf("publish %.1f\n", (t1 - t0) / n);

    t0 = now_ns();
    for (long i = 0; i < n / 2; i++) {
        uint8_t *buf;
        OK(herald_publisher_claim(pub, 64, &buf));
        memcpy(buf, payload, 64);
        OK(herald_publisher_commit(pub, "e", 1, 64, NULL, NULL));
    }
    t1 = now_ns();
    printf("claim_commit %.1f\n", (t1 - t0) / (n / 2));
    long total = n + n / 2;

    t0 = now_ns();
    long got = 0;
    int64_t r;
    while ((r = herald_subscriber_poll(s_poll, on_delivery, NULL, 1024)) > 0) got += r;
    t1 = now_ns();
    if (got != total) {
        fprintf(stderr, "poll received %ld of %ld\n", got, total);
        return 1;
    }
    printf("receive_poll %.1f\n", (t1 - t0) / got);

    uint8_t buf[256];
    size_t len;
    herald_delivery d;
    got = 0;
    t0 = now_ns();
    while (herald_subscriber_next(s_next, buf, sizeof buf, &len, &d, 0) == HERALD_OK) got++;
    t1 = now_ns();
    if (got != total) {
        fprintf(stderr, "next received %ld of %ld\n", got, total);
        return 1;
    }
    printf("receive_next %.1f\n", (t1 - t0) / got);

    static uint8_t batch[1 << 18];
    size_t count;
    got = 0;
    uint64_t bytes = 0;
    t0 = now_ns();
    while (herald_subscriber_read(s_read, batch, sizeof batch, 1024, &len, &count, 0) == HERALD_OK) {
        size_t at = 0;
        for (size_t k = 0; k < count; k++) {
            uint32_t rlen, pl;
            memcpy(&rlen, batch + at + 4, 4);
            memcpy(&pl, batch + at + 56, 4);
            bytes += pl;
            at += rlen;
        }
        got += (long)count;
    }
    t1 = now_ns();
    if (got != total || bytes != (uint64_t)total * 64) {
        fprintf(stderr, "read received %ld of %ld\n", got, total);
        return 1;
    }
    printf("receive_read %.1f\n", (t1 - t0) / got);

    uint64_t seq = 0, sink = 0;
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        herald_broker_next_seq(b, &seq);
        sink += seq;
    }
    t1 = now_ns();
    printf("next_seq_call %.1f\n", (t1 - t0) / n);
    if (sink == 42) puts("");

    herald_subscriber_free(s_poll);
    herald_subscriber_free(s_next);
    herald_subscriber_free(s_read);
    herald_filter_free(f);
    herald_publisher_free(pub);
    OK(herald_broker_close(b));
    return 0;
}
