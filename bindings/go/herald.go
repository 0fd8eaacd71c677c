// Package herald embeds the Herald event fan-out engine through its C ABI
// (libherald, herald.h).
//
// Linking: by default cgo takes libherald's flags from pkg-config
// (herald.pc, installed by the repository's scripts/install; point
// PKG_CONFIG_PATH at DIR/lib/pkgconfig for a non-standard prefix). The tag
// herald_static links libherald.a instead (no libherald at run time); the
// tag herald_nopkgconfig leaves the flags to CGO_CFLAGS and CGO_LDFLAGS.
// See link_*.go and README.md.
//
// Thread-safety: a Broker and a Publisher may be used from any number of
// goroutines. A Subscriber must be used by one goroutine at a time (an
// overlapping call returns ErrBusy); Subscribe runs one for you and hands
// events over a channel.
//
// Error messages: the library keeps the detail of a failed call in
// thread-local storage (herald_last_error), while Go moves goroutines
// between OS threads at any point. Every call whose error this package
// reports therefore runs under runtime.LockOSThread until the message is
// read (see call and check); users need not lock anything themselves.
package herald

/*
#include <stdlib.h>
#include <herald.h>

// The publish options are built here, on the C side: a Go struct holding a
// pointer to the Go correlation string would break cgo's rule that Go
// memory passed to C holds no Go pointers.
static herald_result go_publish(const herald_publisher *p, const char *type, size_t type_len,
		const uint8_t *payload, size_t payload_len, uint64_t origin,
		const char *corr, size_t corr_len, herald_published *out) {
	herald_publish_options o = { origin, corr, corr_len };
	return herald_publisher_publish(p, type, type_len, payload, payload_len, &o, out);
}

static herald_result go_commit(const herald_publisher *p, const char *type, size_t type_len,
		size_t len, uint64_t origin, const char *corr, size_t corr_len, herald_published *out) {
	herald_publish_options o = { origin, corr, corr_len };
	return herald_publisher_commit(p, type, type_len, len, &o, out);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Code is a stable herald_result code.
type Code int32

// The result codes of include/herald.h.
const (
	OK                    Code = C.HERALD_OK
	ErrNull               Code = C.HERALD_E_NULL
	ErrInvalidHandle      Code = C.HERALD_E_INVALID_HANDLE
	ErrInvalidArgument    Code = C.HERALD_E_INVALID_ARGUMENT
	ErrInvalidUTF8        Code = C.HERALD_E_INVALID_UTF8
	ErrInvalidTopic       Code = C.HERALD_E_INVALID_TOPIC
	ErrInvalidFilter      Code = C.HERALD_E_INVALID_FILTER
	ErrInvalidEventType   Code = C.HERALD_E_INVALID_EVENT_TYPE
	ErrInvalidCorrelation Code = C.HERALD_E_INVALID_CORRELATION
	ErrPayloadTooLarge    Code = C.HERALD_E_PAYLOAD_TOO_LARGE
	ErrNeedsSingleTopic   Code = C.HERALD_E_NEEDS_SINGLE_TOPIC
	ErrInvalidConfig      Code = C.HERALD_E_INVALID_CONFIG
	ErrBufferTooSmall     Code = C.HERALD_E_BUFFER_TOO_SMALL
	ErrTimeout            Code = C.HERALD_E_TIMEOUT
	ErrBusy               Code = C.HERALD_E_BUSY
	ErrNoClaim            Code = C.HERALD_E_NO_CLAIM
	ErrUnknownConsumer    Code = C.HERALD_E_UNKNOWN_CONSUMER
	ErrNotAConsumer       Code = C.HERALD_E_NOT_A_CONSUMER
	ErrAck                Code = C.HERALD_E_ACK
	ErrCheckpoint         Code = C.HERALD_E_CHECKPOINT
	ErrPresence           Code = C.HERALD_E_PRESENCE
	ErrLog                Code = C.HERALD_E_LOG
	ErrIO                 Code = C.HERALD_E_IO
	ErrCorrupt            Code = C.HERALD_E_CORRUPT
	ErrPanic              Code = C.HERALD_E_PANIC
	ErrCancelled          Code = C.HERALD_E_CANCELLED
)

// Error is a failed call: its stable code and the library's detailed message.
type Error struct {
	Code    Code
	Message string
	// Needed is the buffer size needed, for ErrBufferTooSmall.
	Needed int
}

func (e *Error) Error() string {
	return fmt.Sprintf("herald: %s (code %d): %s", C.GoString(C.herald_strerror(C.int32_t(e.Code))), e.Code, e.Message)
}

// Error makes a Code an error, so that errors.Is(err, herald.ErrTimeout)
// works (see Error.Is).
func (c Code) Error() string { return C.GoString(C.herald_strerror(C.int32_t(c))) }

// Is reports whether the error has the given code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// check turns a result into an error. It must run on the OS thread that
// made the call, since herald_last_error is per thread: callers hold
// runtime.LockOSThread from the call until check returns (call does that).
func check(rc C.herald_result) error {
	if rc == C.HERALD_OK {
		return nil
	}
	return &Error{Code: Code(rc), Message: C.GoString(C.herald_last_error())}
}

// call runs f on a locked OS thread so that an error's message is the one
// f's call recorded.
func call(f func() C.herald_result) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return check(f())
}

func strPtr(s string) *C.char {
	if len(s) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer((*reflect.StringHeader)(unsafe.Pointer(&s)).Data))
}

func bytesPtr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}

// Version is the library's version string.
func Version() string { return C.GoString(C.herald_version()) }

// HeaderVersion is the version of the header this package was compiled with.
const HeaderVersion = C.HERALD_VERSION_STRING

// Durability policies.
type Durability uint32

// Durability values.
const (
	DurabilityNever    Durability = C.HERALD_DURABILITY_NEVER
	DurabilityInterval Durability = C.HERALD_DURABILITY_INTERVAL
	DurabilityAlways   Durability = C.HERALD_DURABILITY_ALWAYS
)

// Config opens a broker. Zero fields take the library's defaults
// (herald_config_init).
type Config struct {
	DataDir      string
	RingCapacity int // bytes of the in-memory ring, a power of two
	MaxPayload   int // largest payload accepted, bytes
	SegmentSize  uint64
	Durability   *Durability
	// SyncInterval is the background sync period of DurabilityInterval
	// (whole milliseconds).
	SyncInterval time.Duration
	// Retention limits (zero: no limit of that kind).
	RetentionMaxAge     time.Duration
	RetentionMaxBytes   uint64
	RetentionMaxRecords uint64
	// PresenceTTL: presence sessions expire after this long without a
	// heartbeat.
	PresenceTTL time.Duration
	Prefault    *bool
}

// millis converts a positive duration to whole milliseconds, at least 1 so
// that a short positive duration does not turn into "default" or "no limit".
func millis(d time.Duration) uint64 {
	if ms := uint64(d / time.Millisecond); ms > 0 {
		return ms
	}
	return 1
}

// Broker is an open broker. Safe for concurrent use.
type Broker struct {
	ptr *C.herald_broker
}

// Open opens (creating or recovering) a broker.
func Open(cfg Config) (*Broker, error) {
	var c C.herald_config
	var out *C.herald_broker
	err := call(func() C.herald_result {
		if rc := C.herald_config_init(&c); rc != C.HERALD_OK {
			return rc
		}
		dir := C.CString(cfg.DataDir)
		defer C.free(unsafe.Pointer(dir))
		c.data_dir = dir
		c.data_dir_len = C.size_t(len(cfg.DataDir))
		if cfg.RingCapacity != 0 {
			c.ring_capacity = C.size_t(cfg.RingCapacity)
		}
		if cfg.MaxPayload != 0 {
			c.max_payload = C.size_t(cfg.MaxPayload)
		}
		if cfg.SegmentSize != 0 {
			c.segment_size = C.uint64_t(cfg.SegmentSize)
		}
		if cfg.Durability != nil {
			c.durability = C.uint32_t(*cfg.Durability)
		}
		if cfg.Prefault != nil {
			c.prefault = C.bool(*cfg.Prefault)
		}
		if cfg.SyncInterval > 0 {
			c.sync_interval_ms = C.uint32_t(millis(cfg.SyncInterval))
		}
		if cfg.RetentionMaxAge > 0 {
			c.retention_max_age_ms = C.uint64_t(millis(cfg.RetentionMaxAge))
		}
		if cfg.PresenceTTL > 0 {
			c.presence_ttl_ms = C.uint64_t(millis(cfg.PresenceTTL))
		}
		c.retention_max_bytes = C.uint64_t(cfg.RetentionMaxBytes)
		c.retention_max_records = C.uint64_t(cfg.RetentionMaxRecords)
		return C.herald_broker_open(&c, &out)
	})
	if err != nil {
		return nil, err
	}
	return &Broker{ptr: out}, nil
}

// Close flushes and closes the broker. Publishers and subscribers made from
// it keep working until they are closed.
func (b *Broker) Close() error {
	p := b.ptr
	b.ptr = nil
	return call(func() C.herald_result { return C.herald_broker_close(p) })
}

// Flush syncs the log to stable storage.
func (b *Broker) Flush() error {
	return call(func() C.herald_result { return C.herald_broker_flush(b.ptr) })
}

// NextSeq is the next global sequence the broker will assign.
func (b *Broker) NextSeq() (uint64, error) {
	var out C.uint64_t
	err := call(func() C.herald_result { return C.herald_broker_next_seq(b.ptr, &out) })
	return uint64(out), err
}

// ConsumerCheckpoint is the last acknowledged sequence of a durable consumer.
func (b *Broker) ConsumerCheckpoint(name string) (uint64, error) {
	var out C.uint64_t
	err := call(func() C.herald_result {
		return C.herald_broker_consumer_checkpoint(b.ptr, strPtr(name), C.size_t(len(name)), &out)
	})
	runtime.KeepAlive(name)
	return uint64(out), err
}

// ConsumerAck acknowledges everything up to seq for the durable consumer
// name, for hosts that track delivery themselves. The consumer must exist
// (ErrUnknownConsumer); a seq past the last published event or below the
// checkpoint is refused with ErrAck.
func (b *Broker) ConsumerAck(name string, seq uint64) error {
	err := call(func() C.herald_result {
		return C.herald_broker_consumer_ack(b.ptr, strPtr(name), C.size_t(len(name)), C.uint64_t(seq))
	})
	runtime.KeepAlive(name)
	return err
}

// ConsumerRemove forgets the durable consumer name and releases what
// retention kept for it.
func (b *Broker) ConsumerRemove(name string) error {
	err := call(func() C.herald_result {
		return C.herald_broker_consumer_remove(b.ptr, strPtr(name), C.size_t(len(name)))
	})
	runtime.KeepAlive(name)
	return err
}

// Metrics is a snapshot of the broker's counters and publish→deliver
// latency percentiles.
type Metrics struct {
	Published, Delivered, LaggedFallbacks, Gaps, Replayed, ActiveSubscribers uint64
	LatencyP50Ns, LatencyP95Ns, LatencyP99Ns, LatencyMaxNs                   uint64
}

// Metrics returns the broker's counters.
func (b *Broker) Metrics() (Metrics, error) {
	var m C.herald_metrics
	err := call(func() C.herald_result { return C.herald_broker_metrics(b.ptr, &m) })
	return Metrics{
		Published:         uint64(m.published),
		Delivered:         uint64(m.delivered),
		LaggedFallbacks:   uint64(m.lagged_fallbacks),
		Gaps:              uint64(m.gaps),
		Replayed:          uint64(m.replayed),
		ActiveSubscribers: uint64(m.active_subscribers),
		LatencyP50Ns:      uint64(m.latency_p50_ns),
		LatencyP95Ns:      uint64(m.latency_p95_ns),
		LatencyP99Ns:      uint64(m.latency_p99_ns),
		LatencyMaxNs:      uint64(m.latency_max_ns),
	}, err
}

// Publisher publishes to one topic. Safe for concurrent Publish calls; one
// outstanding Claim at a time.
type Publisher struct {
	ptr *C.herald_publisher
}

// Publisher returns a publisher for topic.
func (b *Broker) Publisher(topic string) (*Publisher, error) {
	var out *C.herald_publisher
	err := call(func() C.herald_result {
		return C.herald_publisher_new(b.ptr, strPtr(topic), C.size_t(len(topic)), &out)
	})
	runtime.KeepAlive(topic)
	if err != nil {
		return nil, err
	}
	return &Publisher{ptr: out}, nil
}

// Close frees the publisher.
func (p *Publisher) Close() {
	C.herald_publisher_free(p.ptr)
	p.ptr = nil
}

// Published tells the sequences an event got.
type Published struct{ Seq, TopicSeq uint64 }

// PublishOptions are the optional parts of an event.
type PublishOptions struct {
	// Origin is who published (device or user id, 0: none), for filters
	// that leave out "my own events".
	Origin uint64
	// Correlation is carried to subscribers as Event.Correlation (up to 126
	// printable ASCII bytes; "": none).
	Correlation string
}

// Publish publishes one event (copying payload) with the given origin
// (0: none).
func (p *Publisher) Publish(eventType string, payload []byte, origin uint64) (Published, error) {
	return p.PublishOpts(eventType, payload, PublishOptions{Origin: origin})
}

// PublishOpts publishes one event (copying payload) with an origin and a
// correlation id.
func (p *Publisher) PublishOpts(eventType string, payload []byte, o PublishOptions) (Published, error) {
	var out C.herald_published
	err := call(func() C.herald_result {
		return C.go_publish(p.ptr, strPtr(eventType), C.size_t(len(eventType)),
			bytesPtr(payload), C.size_t(len(payload)), C.uint64_t(o.Origin),
			strPtr(o.Correlation), C.size_t(len(o.Correlation)), &out)
	})
	runtime.KeepAlive(eventType)
	runtime.KeepAlive(payload)
	runtime.KeepAlive(o.Correlation)
	return Published{uint64(out.seq), uint64(out.topic_seq)}, err
}

// PublishWith publishes with fill writing the payload in place into a
// claimed buffer of n bytes (claim → write → commit; the copy into the log
// and ring happens at commit).
func (p *Publisher) PublishWith(eventType string, n int, origin uint64, fill func([]byte)) (Published, error) {
	return p.PublishWithOpts(eventType, n, PublishOptions{Origin: origin}, fill)
}

// PublishWithOpts is PublishWith with an origin and a correlation id. The
// slice handed to fill is the library's memory: it must not be kept after
// fill returns. If fill panics the claim is dropped (herald_publisher_abort)
// and the panic goes on.
func (p *Publisher) PublishWithOpts(eventType string, n int, o PublishOptions, fill func([]byte)) (Published, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf *C.uint8_t
	if err := check(C.herald_publisher_claim(p.ptr, C.size_t(n), &buf)); err != nil {
		return Published{}, err
	}
	committed := false
	defer func() {
		if !committed {
			C.herald_publisher_abort(p.ptr)
		}
	}()
	if n > 0 {
		fill(unsafe.Slice((*byte)(unsafe.Pointer(buf)), n))
	}
	var out C.herald_published
	committed = true // commit releases the claim even when it fails
	err := check(C.go_commit(p.ptr, strPtr(eventType), C.size_t(len(eventType)), C.size_t(n),
		C.uint64_t(o.Origin), strPtr(o.Correlation), C.size_t(len(o.Correlation)), &out))
	runtime.KeepAlive(eventType)
	runtime.KeepAlive(o.Correlation)
	return Published{uint64(out.seq), uint64(out.topic_seq)}, err
}

// BatchEvent is one event of Broker.PublishBatch.
type BatchEvent struct {
	Publisher *Publisher // its topic's publisher, of the same broker
	Type      string
	Payload   []byte
	Options   PublishOptions
}

// PublishBatch publishes events (to one topic or several) under one
// acquisition of the broker's publish lock: their global sequences are
// consecutive. An invalid event fails the whole batch and stores nothing.
// It returns the sequences in order.
func (b *Broker) PublishBatch(events []BatchEvent) ([]Published, error) {
	if len(events) == 0 {
		return nil, nil
	}
	// The event array holds pointers, so it and everything it points to
	// must be C memory (cgo forbids Go pointers inside memory passed to C).
	// One allocation: the array, the options, then the strings and payloads.
	n := len(events)
	evSize := int(unsafe.Sizeof(C.herald_batch_event{}))
	optSize := int(unsafe.Sizeof(C.herald_publish_options{}))
	size := n * (evSize + optSize)
	for _, e := range events {
		size += len(e.Type) + len(e.Payload) + len(e.Options.Correlation)
	}
	mem := C.malloc(C.size_t(size))
	if mem == nil {
		panic("herald: out of C memory")
	}
	defer C.free(mem)
	all := unsafe.Slice((*byte)(mem), size)
	evs := unsafe.Slice((*C.herald_batch_event)(mem), n)
	opts := unsafe.Slice((*C.herald_publish_options)(unsafe.Pointer(&all[n*evSize])), n)
	at := n * (evSize + optSize)
	put := func(data []byte) unsafe.Pointer {
		if len(data) == 0 {
			return nil
		}
		ptr := unsafe.Pointer(&all[at])
		at += copy(all[at:], data)
		return ptr
	}
	for i, e := range events {
		var pub *C.herald_publisher
		if e.Publisher != nil {
			pub = e.Publisher.ptr
		}
		opts[i] = C.herald_publish_options{origin: C.uint64_t(e.Options.Origin),
			correlation: (*C.char)(put([]byte(e.Options.Correlation))), correlation_len: C.size_t(len(e.Options.Correlation))}
		evs[i] = C.herald_batch_event{
			publisher:      pub,
			event_type:     (*C.char)(put([]byte(e.Type))),
			event_type_len: C.size_t(len(e.Type)),
			payload:        (*C.uint8_t)(put(e.Payload)),
			payload_len:    C.size_t(len(e.Payload)),
			options:        &opts[i],
		}
	}
	out := make([]C.herald_published, n)
	err := call(func() C.herald_result {
		return C.herald_broker_publish_batch(b.ptr, &evs[0], C.size_t(n), &out[0])
	})
	if err != nil {
		return nil, err
	}
	res := make([]Published, n)
	for i, o := range out {
		res[i] = Published{uint64(o.seq), uint64(o.topic_seq)}
	}
	return res, nil
}

// Filter selects topics (names or NATS-style patterns), optionally event
// types, and an origin to leave out.
type Filter struct {
	Topics        []string
	Types         []string
	ExcludeOrigin *uint64
}

// Start is where a subscription starts.
type Start struct {
	kind  uint32
	value uint64
}

// Start positions (same choices as the Rust API).
func StartNow() Start              { return Start{C.HERALD_START_NOW, 0} }
func StartSeq(seq uint64) Start    { return Start{C.HERALD_START_SEQ, seq} }
func StartTopicSeq(s uint64) Start { return Start{C.HERALD_START_TOPIC_SEQ, s} }
func StartTime(ns uint64) Start    { return Start{C.HERALD_START_TIME, ns} }
func StartLastN(n uint64) Start    { return Start{C.HERALD_START_LAST_N, n} }

func (f Filter) build() (*C.herald_filter, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var out *C.herald_filter
	if err := check(C.herald_filter_new(&out)); err != nil {
		return nil, err
	}
	for _, t := range f.Topics {
		if err := check(C.herald_filter_add_topic(out, strPtr(t), C.size_t(len(t)))); err != nil {
			C.herald_filter_free(out)
			return nil, err
		}
	}
	for _, t := range f.Types {
		if err := check(C.herald_filter_add_type(out, strPtr(t), C.size_t(len(t)))); err != nil {
			C.herald_filter_free(out)
			return nil, err
		}
	}
	if f.ExcludeOrigin != nil {
		C.herald_filter_exclude_origin(out, C.uint64_t(*f.ExcludeOrigin))
	}
	runtime.KeepAlive(f)
	return out, nil
}

// Subscriber reads deliveries. One goroutine at a time.
type Subscriber struct {
	ptr *C.herald_subscriber
	// scratch is C memory for NextInto (herald_subscriber_next stores
	// pointers into the buffer it fills, which cgo forbids for Go memory).
	scratch    unsafe.Pointer
	scratchCap int
	batch      []byte
	queue      []Event
	qi         int
	// The last topic, type and correlation strings, reused while they repeat.
	lastTopic, lastType, lastCorr string
}

// OpenSubscriber opens a subscriber (see Subscribe for a channel).
func (b *Broker) OpenSubscriber(f Filter, start Start) (*Subscriber, error) {
	cf, err := f.build()
	if err != nil {
		return nil, err
	}
	defer C.herald_filter_free(cf)
	var out *C.herald_subscriber
	if err := call(func() C.herald_result {
		return C.herald_subscriber_open(b.ptr, cf, C.uint32_t(start.kind), C.uint64_t(start.value), &out)
	}); err != nil {
		return nil, err
	}
	return newSubscriber(out), nil
}

func newSubscriber(p *C.herald_subscriber) *Subscriber {
	return &Subscriber{ptr: p, batch: make([]byte, 256<<10)}
}

// OpenConsumer opens the durable consumer name: it resumes after its last
// acknowledged event, or at start if it is new.
func (b *Broker) OpenConsumer(name string, f Filter, start Start) (*Subscriber, error) {
	cf, err := f.build()
	if err != nil {
		return nil, err
	}
	defer C.herald_filter_free(cf)
	var out *C.herald_subscriber
	if err := call(func() C.herald_result {
		return C.herald_subscriber_open_consumer(b.ptr, strPtr(name), C.size_t(len(name)), cf,
			C.uint32_t(start.kind), C.uint64_t(start.value), &out)
	}); err != nil {
		return nil, err
	}
	runtime.KeepAlive(name)
	return newSubscriber(out), nil
}

// Close frees the subscriber.
func (s *Subscriber) Close() {
	C.herald_subscriber_free(s.ptr)
	s.ptr = nil
	C.free(s.scratch)
	s.scratch, s.scratchCap = nil, 0
}

// Event is one delivery: an event, or (Gap true) a gap notice saying that
// retention deleted GapFrom..=GapTo before this subscriber read them.
type Event struct {
	Gap            bool
	Seq, TopicSeq  uint64
	TimestampNs    uint64
	Origin         uint64
	Topic, Type    string
	Correlation    string
	Payload        []byte
	GapFrom, GapTo uint64
}

// timeoutMs is a timeout as the C calls take it (negative: forever).
func timeoutMs(timeout time.Duration) C.int32_t {
	if timeout < 0 {
		return -1
	}
	return C.int32_t(timeout / time.Millisecond)
}

// NextInto is the single-delivery call (herald_subscriber_next): it copies
// the next delivery into buf, and the returned Event's Payload aliases buf
// (valid until buf is reused). With a buffer too small it returns an *Error
// with ErrBufferTooSmall and Needed, and keeps the delivery for the next
// call. The library fills a C buffer of len(buf) bytes first, since the
// herald_delivery it returns points into that buffer: handing it Go memory
// would make C write Go pointers.
func (s *Subscriber) NextInto(buf []byte, timeout time.Duration) (Event, error) {
	if len(buf) > s.scratchCap {
		C.free(s.scratch)
		s.scratch = C.malloc(C.size_t(len(buf)))
		if s.scratch == nil {
			panic("herald: out of C memory")
		}
		s.scratchCap = len(buf)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var n C.size_t
	var d C.herald_delivery
	rc := C.herald_subscriber_next(s.ptr, (*C.uint8_t)(s.scratch), C.size_t(len(buf)), &n, &d, timeoutMs(timeout))
	if rc != C.HERALD_OK {
		err := check(rc).(*Error)
		if rc == C.HERALD_E_BUFFER_TOO_SMALL {
			err.Needed = int(n)
		}
		return Event{}, err
	}
	copy(buf, unsafe.Slice((*byte)(s.scratch), int(n)))
	// Strings are read through the delivery's own pointers (into scratch),
	// not by assuming the layout.
	e := Event{
		Gap:         d.kind == C.HERALD_DELIVERY_GAP,
		Seq:         uint64(d.seq),
		TopicSeq:    uint64(d.topic_seq),
		TimestampNs: uint64(d.timestamp_ns),
		Origin:      uint64(d.origin),
		GapFrom:     uint64(d.gap_from),
		GapTo:       uint64(d.gap_to),
		Topic:       C.GoStringN(d.topic, C.int(d.topic_len)),
		Type:        C.GoStringN(d.event_type, C.int(d.event_type_len)),
		Correlation: C.GoStringN(d.correlation, C.int(d.correlation_len)),
	}
	if pl := int(d.payload_len); pl > 0 {
		off := uintptr(unsafe.Pointer(d.payload)) - uintptr(s.scratch)
		e.Payload = buf[off : off+uintptr(pl) : off+uintptr(pl)]
	} else {
		e.Payload = buf[:0:0]
	}
	return e, nil
}

// Next waits up to timeout (negative: forever; 0: do not wait) for the next
// delivery; ErrTimeout if none came. It reads in batches
// (herald_subscriber_read: one cgo call for up to 1024 deliveries, queued
// here); payloads of one batch share one copy of it.
func (s *Subscriber) Next(timeout time.Duration) (Event, error) {
	if s.qi < len(s.queue) {
		e := s.queue[s.qi]
		s.queue[s.qi] = Event{}
		s.qi++
		return e, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ms := timeoutMs(timeout)
	for {
		var n, count C.size_t
		rc := C.herald_subscriber_read(s.ptr, bytesPtr(s.batch), C.size_t(len(s.batch)), 1024, &n, &count, ms)
		if rc == C.HERALD_E_BUFFER_TOO_SMALL {
			size := 2 * len(s.batch)
			if int(n) > size {
				size = int(n)
			}
			s.batch = make([]byte, size)
			continue
		}
		if rc != C.HERALD_OK {
			return Event{}, check(rc)
		}
		s.decodeBatch(int(n), int(count))
		e := s.queue[0]
		s.queue[0] = Event{}
		s.qi = 1
		return e, nil
	}
}

func (s *Subscriber) str(b []byte, last *string) string {
	if string(b) != *last {
		*last = string(b)
	}
	return *last
}

// A herald_record_header is HERALD_RECORD_HEADER bytes (or this does not
// compile).
var _ [C.HERALD_RECORD_HEADER]byte = [unsafe.Sizeof(C.herald_record_header{})]byte{}

func (s *Subscriber) decodeBatch(total, count int) {
	b := append([]byte(nil), s.batch[:total]...)
	if cap(s.queue) < count {
		s.queue = make([]Event, count)
	}
	s.queue = s.queue[:count]
	at := 0
	for k := 0; k < count; k++ {
		// Each record starts with a herald_record_header, read in place:
		// records start at multiples of 8 in b, a fresh (so 8-aligned)
		// allocation, and the header's little-endian fields are native on
		// the platforms libherald supports.
		h := (*C.herald_record_header)(unsafe.Pointer(&b[at]))
		pl, tl, yl, cl := int(h.payload_len), int(h.topic_len), int(h.event_type_len), int(h.correlation_len)
		body := b[at+C.HERALD_RECORD_HEADER:]
		e := Event{
			Gap:         h.kind == C.HERALD_DELIVERY_GAP,
			Seq:         uint64(h.seq),
			TopicSeq:    uint64(h.topic_seq),
			TimestampNs: uint64(h.timestamp_ns),
			Origin:      uint64(h.origin),
			GapFrom:     uint64(h.gap_from),
			GapTo:       uint64(h.gap_to),
			Payload:     body[:pl:pl],
			Topic:       s.str(body[pl:pl+tl], &s.lastTopic),
			Type:        s.str(body[pl+tl:pl+tl+yl], &s.lastType),
		}
		if cl > 0 {
			e.Correlation = s.str(body[pl+tl+yl:pl+tl+yl+cl], &s.lastCorr)
		}
		s.queue[k] = e
		at += int(h.record_len)
	}
}

// Ack acknowledges one delivered event (durable consumers).
func (s *Subscriber) Ack(seq uint64) error {
	return call(func() C.herald_result { return C.herald_subscriber_ack(s.ptr, C.uint64_t(seq)) })
}

// AckUpTo acknowledges every delivered event up to seq (durable consumers).
func (s *Subscriber) AckUpTo(seq uint64) error {
	return call(func() C.herald_result { return C.herald_subscriber_ack_up_to(s.ptr, C.uint64_t(seq)) })
}

// Lag is how many global sequences the subscriber has not examined yet, and
// whether it reads the live ring.
func (s *Subscriber) Lag() (behind uint64, live bool, err error) {
	var b C.uint64_t
	var l C.bool
	err = call(func() C.herald_result { return C.herald_subscriber_lag(s.ptr, &b, &l) })
	return uint64(b), bool(l), err
}

// waiter sleeps on the subscriber's fd in Go's netpoller (no blocked thread).
type waiter struct {
	file *os.File
	sub  *Subscriber
}

func newWaiter(s *Subscriber) (*waiter, error) {
	var fd C.int32_t
	if err := call(func() C.herald_result { return C.herald_subscriber_fd(s.ptr, &fd) }); err != nil {
		return nil, err
	}
	// The fd belongs to the subscriber: watch a duplicate so that closing the
	// *os.File leaves the original alone. The eventfd is non-blocking, so
	// os.NewFile registers it with the netpoller.
	dup, err := dupCloexec(int(fd))
	if err != nil {
		return nil, err
	}
	return &waiter{file: os.NewFile(uintptr(dup), "herald-subscriber"), sub: s}, nil
}

// wait arms the subscriber and parks the goroutine until the fd is readable
// or ctx is done.
func (w *waiter) wait(ctx context.Context) error {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return err
	}
	var armErr error
	slept := false
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			w.file.SetReadDeadline(time.Unix(1, 0))
		case <-done:
		}
	}()
	err = rc.Read(func(uintptr) bool {
		if slept {
			return true
		}
		var may C.bool
		armErr = call(func() C.herald_result { return C.herald_subscriber_arm(w.sub.ptr, &may) })
		if armErr != nil || !bool(may) {
			return true
		}
		slept = true
		return false
	})
	close(done)
	if armErr != nil {
		return armErr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Subscribe opens a subscriber and delivers its events on the returned
// channel until ctx is done (then the subscriber is freed and the channel
// closed: drain it to know the subscriber is gone, e.g. before reopening the
// data directory, which stays locked while any handle of the broker lives). Gap notices arrive as events with Gap set. Waiting uses the
// subscriber's fd in Go's netpoller.
func (b *Broker) Subscribe(ctx context.Context, f Filter, start Start) (<-chan Event, error) {
	s, err := b.OpenSubscriber(f, start)
	if err != nil {
		return nil, err
	}
	w, err := newWaiter(s)
	if err != nil {
		s.Close()
		return nil, err
	}
	ch := make(chan Event, 1024)
	var once sync.Once
	go func() {
		defer once.Do(func() { _ = w.file.Close(); s.Close(); close(ch) })
		for ctx.Err() == nil {
			e, err := s.Next(0)
			if err == nil {
				select {
				case ch <- e:
				case <-ctx.Done():
					return
				}
				continue
			}
			if !errors.Is(err, ErrTimeout) {
				return
			}
			if err := w.wait(ctx); err != nil && ctx.Err() != nil {
				return
			}
		}
	}()
	return ch, nil
}
