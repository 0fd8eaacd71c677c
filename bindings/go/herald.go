// Package herald embeds the Herald event fan-out engine through its C ABI
// (libherald, include/herald.h).
//
// Build and run with the library on the linker and loader paths, e.g.
//
//	cargo build -p herald-ffi --release
//	CGO_LDFLAGS=-L$PWD/target/release LD_LIBRARY_PATH=$PWD/target/release go test ./bindings/go
//
// Thread-safety: a Broker and a Publisher may be used from any number of
// goroutines. A Subscriber must be used by one goroutine at a time (an
// overlapping call returns ErrBusy); Subscribe runs one for you and hands
// events over a channel.
package herald

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lherald
#include <stdlib.h>
#include <herald.h>
*/
import "C"

import (
	"context"
	"encoding/binary"
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

// Is makes errors.Is(err, herald.ErrTimeout) work.
func (c Code) Error() string { return C.GoString(C.herald_strerror(C.int32_t(c))) }

// Is reports whether the error has the given code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// check turns a result into an error. It must run on the thread that made
// the call (the last-error message is thread-local): callers lock the
// goroutine to its thread around the call.
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

// Config opens a broker. Zero fields take the library's defaults.
type Config struct {
	DataDir             string
	RingCapacity        int
	MaxPayload          int
	SegmentSize         uint64
	Durability          *Durability
	RetentionMaxRecords uint64
	Prefault            *bool
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

// Metrics is a snapshot of the broker's counters.
type Metrics struct {
	Published, Delivered, LaggedFallbacks, Gaps, Replayed, ActiveSubscribers uint64
	LatencyP50Ns, LatencyP99Ns                                               uint64
}

// Metrics returns the broker's counters.
func (b *Broker) Metrics() (Metrics, error) {
	var m C.herald_metrics
	err := call(func() C.herald_result { return C.herald_broker_metrics(b.ptr, &m) })
	return Metrics{uint64(m.published), uint64(m.delivered), uint64(m.lagged_fallbacks), uint64(m.gaps),
		uint64(m.replayed), uint64(m.active_subscribers), uint64(m.latency_p50_ns), uint64(m.latency_p99_ns)}, err
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

// Publish publishes one event (copying payload) with the given origin
// (0: none).
func (p *Publisher) Publish(eventType string, payload []byte, origin uint64) (Published, error) {
	var out C.herald_published
	opts := C.herald_publish_options{origin: C.uint64_t(origin)}
	err := call(func() C.herald_result {
		return C.herald_publisher_publish(p.ptr, strPtr(eventType), C.size_t(len(eventType)),
			bytesPtr(payload), C.size_t(len(payload)), &opts, &out)
	})
	runtime.KeepAlive(eventType)
	runtime.KeepAlive(payload)
	return Published{uint64(out.seq), uint64(out.topic_seq)}, err
}

// PublishWith publishes with fill writing the payload in place into a
// claimed buffer of n bytes (claim → write → commit; the copy into the log
// and ring happens at commit).
func (p *Publisher) PublishWith(eventType string, n int, origin uint64, fill func([]byte)) (Published, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf *C.uint8_t
	if err := check(C.herald_publisher_claim(p.ptr, C.size_t(n), &buf)); err != nil {
		return Published{}, err
	}
	if n > 0 {
		fill(unsafe.Slice((*byte)(unsafe.Pointer(buf)), n))
	}
	var out C.herald_published
	opts := C.herald_publish_options{origin: C.uint64_t(origin)}
	err := check(C.herald_publisher_commit(p.ptr, strPtr(eventType), C.size_t(len(eventType)), C.size_t(n), &opts, &out))
	runtime.KeepAlive(eventType)
	return Published{uint64(out.seq), uint64(out.topic_seq)}, err
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
	ptr   *C.herald_subscriber
	buf   []byte
	batch []byte
	queue []Event
	qi    int
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
	return &Subscriber{ptr: p, buf: make([]byte, 4096), batch: make([]byte, 256<<10)}
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

// NextInto is the raw call: it copies the next delivery into buf. With a
// buffer too small it returns an *Error with ErrBufferTooSmall and Needed.
func (s *Subscriber) NextInto(buf []byte, timeout time.Duration) (Event, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var n C.size_t
	var d C.herald_delivery
	ms := timeoutMs(timeout)
	rc := C.herald_subscriber_next(s.ptr, bytesPtr(buf), C.size_t(len(buf)), &n, &d, ms)
	if rc != C.HERALD_OK {
		err := check(rc).(*Error)
		if rc == C.HERALD_E_BUFFER_TOO_SMALL {
			err.Needed = int(n)
		}
		return Event{}, err
	}
	pl, tl, yl, cl := int(d.payload_len), int(d.topic_len), int(d.event_type_len), int(d.correlation_len)
	e := Event{
		Gap:         d.kind == C.HERALD_DELIVERY_GAP,
		Seq:         uint64(d.seq),
		TopicSeq:    uint64(d.topic_seq),
		TimestampNs: uint64(d.timestamp_ns),
		Origin:      uint64(d.origin),
		GapFrom:     uint64(d.gap_from),
		GapTo:       uint64(d.gap_to),
		Payload:     append([]byte(nil), buf[:pl]...),
		Topic:       string(buf[pl : pl+tl]),
		Type:        string(buf[pl+tl : pl+tl+yl]),
		Correlation: string(buf[pl+tl+yl : pl+tl+yl+cl]),
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

func (s *Subscriber) decodeBatch(total, count int) {
	b := append([]byte(nil), s.batch[:total]...)
	if cap(s.queue) < count {
		s.queue = make([]Event, count)
	}
	s.queue = s.queue[:count]
	le := binary.LittleEndian
	at := 0
	for k := 0; k < count; k++ {
		r := b[at:]
		rlen := int(le.Uint32(r[4:]))
		pl, tl, yl, cl := int(le.Uint32(r[56:])), int(r[60]), int(r[61]), int(r[62])
		body := r[64:]
		e := Event{
			Gap:         le.Uint32(r) == C.HERALD_DELIVERY_GAP,
			Seq:         le.Uint64(r[8:]),
			TopicSeq:    le.Uint64(r[16:]),
			TimestampNs: le.Uint64(r[24:]),
			Origin:      le.Uint64(r[32:]),
			GapFrom:     le.Uint64(r[40:]),
			GapTo:       le.Uint64(r[48:]),
			Payload:     body[:pl:pl],
			Topic:       s.str(body[pl:pl+tl], &s.lastTopic),
			Type:        s.str(body[pl+tl:pl+tl+yl], &s.lastType),
		}
		if cl > 0 {
			e.Correlation = s.str(body[pl+tl+yl:pl+tl+yl+cl], &s.lastCorr)
		}
		s.queue[k] = e
		at += rlen
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
