/* Host test of the C ABI: built with -fsanitize=address,undefined by
 * scripts/test (tests/c/run.sh). Two threads publish 100 000 events, two
 * subscribers (poll callback / next + fd) check order and completeness;
 * reopen and replay from a sequence; a durable consumer resumes after its
 * ack; gaps are explicit; bad calls return the documented codes. */
#define _GNU_SOURCE
#include <herald.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOTAL 100000
#define PER_THREAD (TOTAL / 2)
#define TOPIC "acme.workspace.42"

/* Checks run; a failing check exits at once, so the end is reached only
 * when all passed. */
static atomic_int checks = 0; /* the subscriber threads check too */

#define CHECK_CODE(expr, want)                                                          \
    do {                                                                                \
        herald_result rc_ = (expr);                                                     \
        checks++;                                                                       \
        if (rc_ != (want)) {                                                            \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d; last error: %s\n", \
                    __FILE__, __LINE__, #expr, (int)rc_, herald_strerror(rc_), (int)(want), \
                    herald_last_error());                                               \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)
#define OK(expr) CHECK_CODE(expr, HERALD_OK)
#define ASSERT(cond)                                                                    \
    do {                                                                                \
        checks++;                                                                       \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)
#define S(lit) lit, strlen(lit)

static herald_broker *open_broker(const char *dir) {
    herald_config cfg;
    OK(herald_config_init(&cfg));
    cfg.data_dir = dir;
    cfg.data_dir_len = strlen(dir);
    cfg.ring_capacity = 1 << 20;
    cfg.max_payload = 4096;
    cfg.segment_size = 8 << 20;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.prefault = false;
    herald_broker *b = NULL;
    OK(herald_broker_open(&cfg, &b));
    ASSERT(b != NULL);
    return b;
}

/* ---- publishing ---- */

struct pub_arg {
    herald_broker *broker;
    uint32_t thread;
    int use_claim;
};

static void *publish_thread(void *p) {
    struct pub_arg *a = p;
    herald_publisher *pub = NULL;
    OK(herald_publisher_new(a->broker, S(TOPIC), &pub));
    herald_publish_options opts = {.origin = a->thread + 1, .correlation = NULL, .correlation_len = 0};
    for (uint32_t i = 0; i < PER_THREAD; i++) {
        uint8_t payload[64];
        memset(payload, 0, sizeof payload);
        memcpy(payload, &a->thread, 4);
        memcpy(payload + 4, &i, 4);
        if (a->use_claim) {
            uint8_t *buf = NULL;
            OK(herald_publisher_claim(pub, sizeof payload, &buf));
            memcpy(buf, payload, sizeof payload);
            OK(herald_publisher_commit(pub, S("order.created"), sizeof payload, &opts, NULL));
        } else {
            herald_published out;
            OK(herald_publisher_publish(pub, S("order.created"), payload, sizeof payload, &opts, &out));
            ASSERT(out.seq >= 1 && out.topic_seq >= 1);
        }
    }
    herald_publisher_free(pub);
    return NULL;
}

/* ---- subscribing ---- */

struct order_check {
    uint64_t count;
    uint64_t last_seq;
    uint64_t next_topic_seq;
    uint32_t next_counter[2];
    int bad;
};

static void check_event(struct order_check *c, const herald_delivery *d) {
    if (d->kind != HERALD_DELIVERY_EVENT || d->payload_len != 64 || d->topic_len != strlen(TOPIC) ||
        memcmp(d->topic, TOPIC, d->topic_len) != 0 || d->event_type_len != strlen("order.created") ||
        d->seq <= c->last_seq || d->topic_seq != c->next_topic_seq) {
        c->bad++;
        return;
    }
    uint32_t thread, counter;
    memcpy(&thread, d->payload, 4);
    memcpy(&counter, d->payload + 4, 4);
    if (thread > 1 || counter != c->next_counter[thread] || d->origin != thread + 1) {
        c->bad++;
        return;
    }
    c->next_counter[thread]++;
    c->last_seq = d->seq;
    c->next_topic_seq++;
    c->count++;
}

static int32_t on_delivery(void *user, const herald_delivery *d) {
    check_event(user, d);
    return 0;
}

struct sub_arg {
    herald_subscriber *sub;
    int use_next;
    struct order_check check;
};

static void *subscribe_thread(void *p) {
    struct sub_arg *a = p;
    a->check.next_topic_seq = 1;
    if (!a->use_next) {
        /* poll + callback, sleeping on the pollable fd like an event loop. */
        int fd = -1;
        OK(herald_subscriber_fd(a->sub, &fd));
        ASSERT(fd >= 0);
        while (a->check.count < TOTAL && !a->check.bad) {
            int64_t n = herald_subscriber_poll(a->sub, on_delivery, &a->check, 256);
            ASSERT(n >= 0);
            if (n > 0) continue;
            bool may_sleep = false;
            OK(herald_subscriber_arm(a->sub, &may_sleep));
            if (may_sleep) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int r = poll(&pfd, 1, 5000);
                ASSERT(r >= 0 || errno == EINTR);
            }
        }
    } else {
        uint8_t buf[512];
        while (a->check.count < TOTAL && !a->check.bad) {
            size_t len = 0;
            herald_delivery d;
            herald_result rc = herald_subscriber_next(a->sub, buf, sizeof buf, &len, &d, 5000);
            if (rc == HERALD_E_TIMEOUT) break;
            OK(rc);
            ASSERT(d.payload == buf && len == d.payload_len + d.topic_len + d.event_type_len + d.correlation_len);
            check_event(&a->check, &d);
        }
    }
    return NULL;
}

static herald_filter *topic_filter(const char *topic) {
    herald_filter *f = NULL;
    OK(herald_filter_new(&f));
    OK(herald_filter_add_topic(f, topic, strlen(topic)));
    return f;
}

static void test_publish_and_subscribe(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_filter *f = topic_filter(TOPIC);
    struct sub_arg subs[2] = {{.use_next = 0}, {.use_next = 1}};
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &subs[0].sub));
    /* The second one uses a pattern and starts at global sequence 1. */
    herald_filter *pattern = NULL;
    OK(herald_filter_new(&pattern));
    OK(herald_filter_add_topic(pattern, S("acme.*.42")));
    OK(herald_filter_add_type(pattern, S("order.created")));
    OK(herald_subscriber_open(b, pattern, HERALD_START_SEQ, 1, &subs[1].sub));
    herald_filter_free(pattern);
    herald_filter_free(f);

    pthread_t st[2], pt[2];
    struct pub_arg pubs[2] = {{b, 0, 0}, {b, 1, 1}};
    for (int i = 0; i < 2; i++) pthread_create(&st[i], NULL, subscribe_thread, &subs[i]);
    for (int i = 0; i < 2; i++) pthread_create(&pt[i], NULL, publish_thread, &pubs[i]);
    for (int i = 0; i < 2; i++) pthread_join(pt[i], NULL);
    for (int i = 0; i < 2; i++) pthread_join(st[i], NULL);
    for (int i = 0; i < 2; i++) {
        ASSERT(subs[i].check.bad == 0);
        ASSERT(subs[i].check.count == TOTAL);
        ASSERT(subs[i].check.next_counter[0] == PER_THREAD && subs[i].check.next_counter[1] == PER_THREAD);
        uint64_t behind = 99;
        bool live = false;
        OK(herald_subscriber_lag(subs[i].sub, &behind, &live));
        ASSERT(behind == 0);
        herald_subscriber_free(subs[i].sub);
    }
    herald_metrics m;
    OK(herald_broker_metrics(b, &m));
    ASSERT(m.published == TOTAL && m.delivered >= 2 * (uint64_t)TOTAL - 2048);
    uint64_t next = 0;
    OK(herald_broker_next_seq(b, &next));
    ASSERT(next == TOTAL + 1);
    OK(herald_broker_close(b));
    printf("ok publish_100k_two_threads_two_subscribers_in_order\n");
}

static void test_reopen_and_replay(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_filter *f = topic_filter(TOPIC);
    herald_subscriber *sub = NULL;
    OK(herald_subscriber_open(b, f, HERALD_START_SEQ, 50001, &sub));
    struct order_check c = {.last_seq = 50000, .next_topic_seq = 50001};
    /* Counters are unknown mid-stream: check sequences only. */
    uint64_t n = 0;
    for (;;) {
        uint8_t buf[256];
        size_t len;
        herald_delivery d;
        herald_result rc = herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 0);
        if (rc == HERALD_E_TIMEOUT) break;
        OK(rc);
        ASSERT(d.kind == HERALD_DELIVERY_EVENT && d.seq == c.last_seq + 1 && d.topic_seq == c.next_topic_seq);
        c.last_seq = d.seq;
        c.next_topic_seq++;
        n++;
    }
    ASSERT(n == TOTAL - 50000);
    herald_subscriber_free(sub);

    /* Topic-sequence start and last-N need the filter's single topic. */
    OK(herald_subscriber_open(b, f, HERALD_START_LAST_N, 10, &sub));
    ASSERT(herald_subscriber_poll(sub, on_delivery, &(struct order_check){0}, 1000) == 10);
    herald_subscriber_free(sub);
    herald_filter *wide = NULL;
    OK(herald_filter_new(&wide));
    OK(herald_filter_add_topic(wide, S("acme.>")));
    CHECK_CODE(herald_subscriber_open(b, wide, HERALD_START_TOPIC_SEQ, 5, &sub), HERALD_E_NEEDS_SINGLE_TOPIC);
    herald_filter_free(wide);
    herald_filter_free(f);
    OK(herald_broker_close(b));
    printf("ok reopen_and_replay_from_sequence\n");
}

static void test_durable_consumer(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_filter *f = topic_filter(TOPIC);
    herald_subscriber *sub = NULL;
    OK(herald_subscriber_open_consumer(b, S("billing"), f, HERALD_START_SEQ, 1, &sub));
    uint64_t last = 0;
    for (int i = 0; i < 1000; i++) {
        uint8_t buf[256];
        size_t len;
        herald_delivery d;
        OK(herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 1000));
        ASSERT(d.seq == last + 1);
        last = d.seq;
    }
    OK(herald_subscriber_ack_up_to(sub, last));
    herald_subscriber_free(sub);
    uint64_t cp = 0;
    OK(herald_broker_consumer_checkpoint(b, S("billing"), &cp));
    ASSERT(cp == 1000);
    OK(herald_broker_close(b));

    /* Reopen: the consumer resumes after its acknowledged checkpoint. */
    b = open_broker(dir);
    OK(herald_subscriber_open_consumer(b, S("billing"), f, HERALD_START_NOW, 0, &sub));
    uint8_t buf[256];
    size_t len;
    herald_delivery d;
    OK(herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 1000));
    ASSERT(d.seq == 1001);
    OK(herald_subscriber_ack(sub, d.seq));
    herald_subscriber_free(sub);
    OK(herald_broker_consumer_checkpoint(b, S("billing"), &cp));
    ASSERT(cp == 1001);
    /* A plain subscriber cannot ack. */
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &sub));
    CHECK_CODE(herald_subscriber_ack(sub, 1), HERALD_E_NOT_A_CONSUMER);
    herald_subscriber_free(sub);
    CHECK_CODE(herald_broker_consumer_checkpoint(b, S("nobody"), &cp), HERALD_E_UNKNOWN_CONSUMER);
    OK(herald_broker_consumer_remove(b, S("billing")));
    herald_filter_free(f);
    OK(herald_broker_close(b));
    printf("ok durable_consumer_resumes_after_ack\n");
}

static void test_gap_is_explicit(const char *dir) {
    herald_config cfg;
    OK(herald_config_init(&cfg));
    cfg.data_dir = dir;
    cfg.data_dir_len = strlen(dir);
    cfg.ring_capacity = 1 << 16;
    cfg.max_payload = 512;
    cfg.segment_size = 8192;
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.retention_max_records = 50;
    cfg.prefault = false;
    herald_broker *b = NULL;
    OK(herald_broker_open(&cfg, &b));
    herald_publisher *pub = NULL;
    OK(herald_publisher_new(b, S("g"), &pub));
    uint8_t payload[200] = {0};
    for (int i = 0; i < 500; i++) OK(herald_publisher_publish(pub, S("e"), payload, sizeof payload, NULL, NULL));
    herald_filter *f = topic_filter("g");
    herald_subscriber *sub = NULL;
    OK(herald_subscriber_open(b, f, HERALD_START_TOPIC_SEQ, 1, &sub));
    uint8_t buf[512];
    size_t len;
    herald_delivery d;
    OK(herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 0));
    ASSERT(d.kind == HERALD_DELIVERY_GAP && d.gap_from == 1 && d.gap_to >= 1 && d.gap_to < 500);
    ASSERT(d.topic_len == 1 && d.topic[0] == 'g');
    OK(herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 0));
    ASSERT(d.kind == HERALD_DELIVERY_EVENT);
    herald_subscriber_free(sub);
    herald_filter_free(f);
    herald_publisher_free(pub);
    OK(herald_broker_close(b));
    printf("ok gap_after_retention_is_an_explicit_delivery\n");
}

static int32_t stop_after_one(void *user, const herald_delivery *d) {
    (void)d;
    (*(int *)user)++;
    return 1;
}

static void test_bad_calls(const char *dir) {
    /* NULL handles and outputs. */
    CHECK_CODE(herald_broker_open(NULL, NULL), HERALD_E_NULL);
    herald_config cfg;
    OK(herald_config_init(&cfg));
    herald_broker *nb = NULL;
    CHECK_CODE(herald_broker_open(&cfg, &nb), HERALD_E_INVALID_CONFIG); /* no data_dir */
    ASSERT(nb == NULL); /* outputs untouched on failure */
    cfg.data_dir = dir;
    cfg.data_dir_len = strlen(dir);
    cfg.durability = 99;
    CHECK_CODE(herald_broker_open(&cfg, &nb), HERALD_E_INVALID_CONFIG);
    cfg.durability = HERALD_DURABILITY_NEVER;
    cfg.ring_capacity = 1000; /* not a power of two */
    CHECK_CODE(herald_broker_open(&cfg, &nb), HERALD_E_INVALID_CONFIG);
    ASSERT(strlen(herald_last_error()) > 0);
    CHECK_CODE(herald_publisher_publish(NULL, S("t"), (const uint8_t *)"x", 1, NULL, NULL), HERALD_E_NULL);
    CHECK_CODE(herald_subscriber_next(NULL, NULL, 0, NULL, NULL, 0), HERALD_E_NULL);
    ASSERT(herald_subscriber_poll(NULL, on_delivery, NULL, 10) == -HERALD_E_NULL);
    CHECK_CODE(herald_broker_flush(NULL), HERALD_E_NULL);
    CHECK_CODE(herald_filter_add_topic(NULL, S("a")), HERALD_E_NULL);
    /* free(NULL) is a no-op. */
    herald_publisher_free(NULL);
    herald_subscriber_free(NULL);
    herald_filter_free(NULL);
    OK(herald_broker_close(NULL));
    /* Error strings. */
    ASSERT(strcmp(herald_strerror(HERALD_OK), "success") == 0);
    ASSERT(strlen(herald_strerror(HERALD_E_BUFFER_TOO_SMALL)) > 0);
    ASSERT(strcmp(herald_strerror(-7), "unknown result code") == 0);
    ASSERT(strcmp(herald_version(), HERALD_VERSION_STRING) == 0);

    herald_broker *b = open_broker(dir);
    /* Invalid topics. */
    herald_publisher *pub = NULL;
    CHECK_CODE(herald_publisher_new(b, S("bad topic"), &pub), HERALD_E_INVALID_TOPIC);
    CHECK_CODE(herald_publisher_new(b, S("a..b"), &pub), HERALD_E_INVALID_TOPIC);
    CHECK_CODE(herald_publisher_new(b, S("$system"), &pub), HERALD_E_INVALID_TOPIC);
    CHECK_CODE(herald_publisher_new(b, "\xff\xfe", 2, &pub), HERALD_E_INVALID_UTF8);
    CHECK_CODE(herald_publisher_new(b, NULL, 3, &pub), HERALD_E_NULL);
    ASSERT(pub == NULL);
    herald_filter *f = NULL;
    OK(herald_filter_new(&f));
    CHECK_CODE(herald_filter_add_topic(f, S("a.>.b")), HERALD_E_INVALID_TOPIC);
    CHECK_CODE(herald_filter_add_type(f, S("has space")), HERALD_E_INVALID_EVENT_TYPE);
    herald_subscriber *sub = NULL;
    CHECK_CODE(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &sub), HERALD_E_INVALID_FILTER);
    OK(herald_filter_add_topic(f, S("bad.calls")));
    CHECK_CODE(herald_subscriber_open(b, f, 42, 0, &sub), HERALD_E_INVALID_ARGUMENT);
    /* A handle of the wrong type. */
    CHECK_CODE(herald_broker_flush((herald_broker *)f), HERALD_E_INVALID_HANDLE);
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &sub));

    OK(herald_publisher_new(b, S("bad.calls"), &pub));
    CHECK_CODE(herald_publisher_publish(pub, S("bad type!"), (const uint8_t *)"x", 1, NULL, NULL),
               HERALD_E_INVALID_EVENT_TYPE);
    herald_publish_options bad_corr = {.origin = 0, .correlation = "has space", .correlation_len = 9};
    CHECK_CODE(herald_publisher_publish(pub, S("t"), (const uint8_t *)"x", 1, &bad_corr, NULL),
               HERALD_E_INVALID_CORRELATION);
    static uint8_t big[5000];
    CHECK_CODE(herald_publisher_publish(pub, S("t"), big, sizeof big, NULL, NULL), HERALD_E_PAYLOAD_TOO_LARGE);
    /* Claim protocol misuse. */
    uint8_t *claimed = NULL;
    CHECK_CODE(herald_publisher_commit(pub, S("t"), 0, NULL, NULL), HERALD_E_NO_CLAIM);
    CHECK_CODE(herald_publisher_abort(pub), HERALD_E_NO_CLAIM);
    CHECK_CODE(herald_publisher_claim(pub, 5000, &claimed), HERALD_E_PAYLOAD_TOO_LARGE);
    OK(herald_publisher_claim(pub, 16, &claimed));
    uint8_t *again = NULL;
    CHECK_CODE(herald_publisher_claim(pub, 16, &again), HERALD_E_BUSY);
    ASSERT(again == NULL);
    OK(herald_publisher_abort(pub));
    OK(herald_publisher_claim(pub, 300, &claimed));
    memset(claimed, 'z', 300);
    CHECK_CODE(herald_publisher_commit(pub, S("t"), 301, NULL, NULL), HERALD_E_INVALID_ARGUMENT);
    OK(herald_publisher_claim(pub, 300, &claimed));
    memset(claimed, 'z', 300);
    herald_publish_options corr = {.origin = 7, .correlation = "req-1", .correlation_len = 5};
    herald_published published = {0};
    OK(herald_publisher_commit(pub, S("big.one"), 300, &corr, &published));
    ASSERT(published.topic_seq == 1);

    /* Buffer too small: the needed size, nothing lost. */
    uint8_t small[8];
    size_t len = 0;
    herald_delivery d;
    memset(&d, 0xAB, sizeof d);
    CHECK_CODE(herald_subscriber_next(sub, small, sizeof small, &len, &d, 1000), HERALD_E_BUFFER_TOO_SMALL);
    size_t needed = 300 + strlen("bad.calls") + strlen("big.one") + strlen("req-1");
    ASSERT(len == needed);
    ASSERT(d.kind == 0xABABABABu); /* not written on failure */
    CHECK_CODE(herald_subscriber_next(sub, NULL, 0, &len, &d, 0), HERALD_E_BUFFER_TOO_SMALL);
    CHECK_CODE(herald_subscriber_next(sub, NULL, 5, &len, &d, 0), HERALD_E_NULL);
    uint8_t *exact = malloc(needed);
    OK(herald_subscriber_next(sub, exact, needed, &len, &d, 0));
    ASSERT(len == needed && d.seq == published.seq && d.origin == 7 && d.payload_len == 300 && d.payload[299] == 'z');
    ASSERT(d.correlation_len == 5 && memcmp(d.correlation, "req-1", 5) == 0);
    ASSERT(d.event_type_len == 7 && memcmp(d.event_type, "big.one", 7) == 0);
    free(exact);
    /* Nothing more: a timeout, not a hang. */
    CHECK_CODE(herald_subscriber_next(sub, small, sizeof small, &len, &d, 0), HERALD_E_TIMEOUT);
    CHECK_CODE(herald_subscriber_next(sub, small, sizeof small, &len, &d, 20), HERALD_E_TIMEOUT);
    bool ready = true;
    OK(herald_subscriber_wait(sub, 10, &ready));
    ASSERT(!ready);
    /* Callback stop and limit. */
    for (int i = 0; i < 3; i++) OK(herald_publisher_publish(pub, S("t"), (const uint8_t *)"x", 1, NULL, NULL));
    OK(herald_subscriber_wait(sub, 1000, &ready));
    ASSERT(ready);
    int seen = 0;
    ASSERT(herald_subscriber_poll(sub, stop_after_one, &seen, 10) == 1 && seen == 1);
    ASSERT(herald_subscriber_poll(sub, NULL, NULL, 10) == -HERALD_E_NULL);
    ASSERT(herald_subscriber_poll(sub, on_delivery, &(struct order_check){0}, 0) == 0);
    ASSERT(herald_subscriber_poll(sub, stop_after_one, &seen, 10) == 1 && seen == 2);

    /* Presence. */
    OK(herald_broker_presence_join(b, S("room.1"), S("c1"), S("alice"), S("phone"), S("{\"v\":1}")));
    OK(herald_broker_presence_join(b, S("room.1"), S("c2"), S("bob"), S("web"), "", 0));
    CHECK_CODE(herald_broker_presence_join(b, S("room.1"), S("c3"), S("eve"), S("web"), S("{not json")),
               HERALD_E_PRESENCE);
    OK(herald_broker_presence_heartbeat(b, S("room.1"), S("c1")));
    CHECK_CODE(herald_broker_presence_heartbeat(b, S("room.1"), S("nobody")), HERALD_E_PRESENCE);
    size_t json_len = 0, count = 0;
    CHECK_CODE(herald_broker_presence_list(b, S("room.1"), NULL, 0, &json_len, &count), HERALD_E_BUFFER_TOO_SMALL);
    char *json = malloc(json_len);
    OK(herald_broker_presence_list(b, S("room.1"), (uint8_t *)json, json_len, &json_len, &count));
    ASSERT(count == 2 && json[0] == '[' && json[json_len - 1] == ']');
    ASSERT(memmem(json, json_len, "\"user\":\"alice\"", 14) != NULL);
    ASSERT(memmem(json, json_len, "\"metadata\":{\"v\":1}", 18) != NULL);
    free(json);
    bool was = false;
    OK(herald_broker_presence_leave(b, S("room.1"), S("c2"), &was));
    ASSERT(was);
    OK(herald_broker_presence_leave(b, S("room.1"), S("c2"), &was));
    ASSERT(!was);
    size_t expired = 99;
    OK(herald_broker_presence_expire(b, &expired));
    ASSERT(expired == 0);

    herald_subscriber_free(sub);
    herald_publisher_free(pub);
    herald_filter_free(f);
    OK(herald_broker_close(b));
    printf("ok bad_calls_return_documented_codes\n");
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void test_batch_read(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_publisher *pub = NULL;
    OK(herald_publisher_new(b, S("batch.t"), &pub));
    herald_filter *f = topic_filter("batch.t");
    herald_subscriber *sub = NULL;
    OK(herald_subscriber_open(b, f, HERALD_START_NOW, 0, &sub));
    enum { N = 5000 };
    for (uint32_t i = 0; i < N; i++) {
        uint8_t payload[300];
        size_t n = i % 300;
        memset(payload, (int)(i & 0xff), n);
        herald_publish_options o = {.origin = i, .correlation = (i % 2) ? "c-1" : NULL, .correlation_len = (i % 2) ? 3 : 0};
        OK(herald_publisher_publish(pub, S("batch.e"), payload, n, &o, NULL));
    }
    size_t len = 0, count = 0;
    uint8_t tiny[32];
    CHECK_CODE(herald_subscriber_read(sub, tiny, sizeof tiny, 10, &len, &count, 0), HERALD_E_BUFFER_TOO_SMALL);
    ASSERT(len == ((HERALD_RECORD_HEADER + 0 + 7 + 7 + 0 + 7) & ~(size_t)7)); /* event 0: empty payload */
    CHECK_CODE(herald_subscriber_read(sub, tiny, sizeof tiny, 0, &len, &count, 0), HERALD_E_INVALID_ARGUMENT);
    uint8_t *buf = malloc(4096);
    uint32_t next = 0;
    size_t calls = 0;
    while (next < N) {
        OK(herald_subscriber_read(sub, buf, 4096, 1000, &len, &count, 1000));
        calls++;
        ASSERT(count >= 1 && len <= 4096);
        size_t at = 0;
        for (size_t k = 0; k < count; k++, next++) {
            const uint8_t *r = buf + at;
            uint32_t rlen = rd32(r + 4);
            ASSERT(rd32(r) == HERALD_DELIVERY_EVENT && rlen % 8 == 0 && at % 8 == 0);
            ASSERT(rd64(r + 16) == next + 1 && rd64(r + 32) == next);
            uint32_t pl = rd32(r + 56);
            ASSERT(pl == next % 300 && r[60] == 7 && r[61] == 7 && r[62] == ((next % 2) ? 3 : 0));
            const uint8_t *body = r + HERALD_RECORD_HEADER;
            for (uint32_t j = 0; j < pl; j++) ASSERT(body[j] == (next & 0xff));
            ASSERT(memcmp(body + pl, "batch.t", 7) == 0 && memcmp(body + pl + 7, "batch.e", 7) == 0);
            if (next % 2) ASSERT(memcmp(body + pl + 14, "c-1", 3) == 0);
            at += rlen;
        }
        ASSERT(at == len);
    }
    ASSERT(calls > 1 && calls < N / 5);
    CHECK_CODE(herald_subscriber_read(sub, buf, 4096, 1000, &len, &count, 0), HERALD_E_TIMEOUT);
    free(buf);
    herald_subscriber_free(sub);
    herald_filter_free(f);
    herald_publisher_free(pub);
    OK(herald_broker_close(b));
    printf("ok batch_read_packs_records_and_keeps_what_does_not_fit\n");
}

/* A batch across two topics lands together, in order, with consecutive
 * sequences; one invalid event refuses the whole batch. */
static void test_publish_batch(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_publisher *x = NULL, *y = NULL;
    OK(herald_publisher_new(b, S("acme.batch.x"), &x));
    OK(herald_publisher_new(b, S("acme.batch.y"), &y));
    herald_publish_options opts = {.origin = 9, .correlation = "c-7", .correlation_len = 3};
    herald_batch_event events[3] = {
        {x, S("a"), (const uint8_t *)"1", 1, NULL},
        {y, S("b"), (const uint8_t *)"22", 2, &opts},
        {x, S("c"), (const uint8_t *)"333", 3, NULL},
    };
    herald_batch_event bad[2] = {events[0], {y, S("bad type"), (const uint8_t *)"x", 1, NULL}};
    herald_published out[3] = {{0}};
    CHECK_CODE(herald_broker_publish_batch(b, bad, 2, out), HERALD_E_INVALID_EVENT_TYPE);
    uint64_t next = 0;
    OK(herald_broker_next_seq(b, &next));
    ASSERT(next == 1);
    CHECK_CODE(herald_broker_publish_batch(b, NULL, 2, out), HERALD_E_NULL);
    OK(herald_broker_publish_batch(b, NULL, 0, NULL));
    OK(herald_broker_publish_batch(b, events, 3, out));
    ASSERT(out[0].seq == 1 && out[0].topic_seq == 1);
    ASSERT(out[1].seq == 2 && out[1].topic_seq == 1);
    ASSERT(out[2].seq == 3 && out[2].topic_seq == 2);
    herald_filter *f = NULL;
    OK(herald_filter_new(&f));
    OK(herald_filter_add_topic(f, S("acme.batch.>")));
    herald_subscriber *sub = NULL;
    OK(herald_subscriber_open(b, f, HERALD_START_SEQ, 1, &sub));
    herald_filter_free(f);
    const char *payloads[3] = {"1", "22", "333"};
    for (int i = 0; i < 3; i++) {
        uint8_t buf[256];
        size_t len = 0;
        herald_delivery d;
        OK(herald_subscriber_next(sub, buf, sizeof buf, &len, &d, 1000));
        ASSERT(d.kind == HERALD_DELIVERY_EVENT && d.seq == out[i].seq && d.topic_seq == out[i].topic_seq);
        ASSERT(d.payload_len == strlen(payloads[i]) && memcmp(d.payload, payloads[i], d.payload_len) == 0);
    }
    herald_subscriber_free(sub);
    herald_publisher_free(x);
    herald_publisher_free(y);
    OK(herald_broker_close(b));
    printf("ok publish_batch_together_or_not_at_all\n");
}

/* A keyed batch is stored once: a retry of the key (even after a reopen)
 * stores nothing and gets the first publish's sequences; scopes keep keys
 * apart; a bad key or an empty batch is refused and stores nothing. */
static void test_publish_batch_once(const char *dir) {
    herald_broker *b = open_broker(dir);
    herald_publisher *x = NULL;
    OK(herald_publisher_new(b, S("acme.once"), &x));
    herald_batch_event events[2] = {
        {x, S("a"), (const uint8_t *)"1", 1, NULL},
        {x, S("b"), (const uint8_t *)"22", 2, NULL},
    };
    herald_published first[2] = {{0}}, again[2] = {{0}};
    size_t count = 0;
    bool duplicate = true;
    OK(herald_broker_publish_batch_once(b, S(""), S("order-7"), events, 2, first, &count, &duplicate));
    ASSERT(!duplicate && count == 2 && first[0].seq == 1 && first[1].seq == 2);
    OK(herald_broker_publish_batch_once(b, S(""), S("order-7"), events, 2, again, &count, &duplicate));
    ASSERT(duplicate && count == 2 && again[0].seq == 1 && again[1].seq == 2 && again[1].topic_seq == 2);
    /* A retry of one event with room for one: the first sequence, and the count of the first publish. */
    herald_published one = {0};
    OK(herald_broker_publish_batch_once(b, S(""), S("order-7"), events, 1, &one, &count, &duplicate));
    ASSERT(duplicate && count == 2 && one.seq == 1);
    uint64_t next = 0;
    OK(herald_broker_next_seq(b, &next));
    ASSERT(next == 3);
    /* Another scope: a new key. */
    OK(herald_broker_publish_batch_once(b, S("tenant-b"), S("order-7"), events, 1, &one, NULL, &duplicate));
    ASSERT(!duplicate && one.seq == 3);
    CHECK_CODE(herald_broker_publish_batch_once(b, S(""), S("with space"), events, 1, NULL, NULL, NULL), HERALD_E_INVALID_ARGUMENT);
    CHECK_CODE(herald_broker_publish_batch_once(b, S(""), S(""), events, 1, NULL, NULL, NULL), HERALD_E_INVALID_ARGUMENT);
    CHECK_CODE(herald_broker_publish_batch_once(b, S(""), S("k"), events, 0, NULL, NULL, NULL), HERALD_E_INVALID_ARGUMENT);
    CHECK_CODE(herald_broker_publish_batch_once(b, S(""), NULL, 3, events, 1, NULL, NULL, NULL), HERALD_E_NULL);
    OK(herald_broker_next_seq(b, &next));
    ASSERT(next == 4);
    herald_publisher_free(x);
    OK(herald_broker_close(b));
    /* The window is rebuilt from the log: still a duplicate after a reopen. */
    b = open_broker(dir);
    OK(herald_publisher_new(b, S("acme.once"), &x));
    events[0].publisher = events[1].publisher = x;
    OK(herald_broker_publish_batch_once(b, S(""), S("order-7"), events, 2, again, &count, &duplicate));
    ASSERT(duplicate && count == 2 && again[0].seq == 1 && again[1].seq == 2);
    OK(herald_broker_next_seq(b, &next));
    ASSERT(next == 4);
    herald_publisher_free(x);
    OK(herald_broker_close(b));
    printf("ok publish_batch_once_stores_a_key_once\n");
}

static char *subdir(const char *root, const char *name) {
    char *p = malloc(strlen(root) + strlen(name) + 2);
    sprintf(p, "%s/%s", root, name);
    return p;
}

int main(void) {
    char root[] = "/tmp/herald-c-XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    char *main_dir = subdir(root, "main"), *gap_dir = subdir(root, "gap"), *bad_dir = subdir(root, "bad"), *batch_dir = subdir(root, "batch"),
         *pub_batch_dir = subdir(root, "pub-batch"), *once_dir = subdir(root, "once");
    test_publish_and_subscribe(main_dir);
    test_reopen_and_replay(main_dir);
    test_durable_consumer(main_dir);
    test_gap_is_explicit(gap_dir);
    test_bad_calls(bad_dir);
    test_batch_read(batch_dir);
    test_publish_batch(pub_batch_dir);
    test_publish_batch_once(once_dir);
    free(once_dir);
    free(batch_dir);
    free(pub_batch_dir);
    free(main_dir);
    free(gap_dir);
    free(bad_dir);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) return 1;
    printf("%d checks passed\n", checks);
    return 0;
}
