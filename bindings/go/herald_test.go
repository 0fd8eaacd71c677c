package herald

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"
)

const (
	total     = 100000
	perWorker = total / 2
	topic     = "acme.workspace.42"
)

func never() *Durability { d := DurabilityNever; return &d }
func no() *bool          { b := false; return &b }

func open(t *testing.T, dir string) *Broker {
	t.Helper()
	b, err := Open(Config{DataDir: dir, RingCapacity: 1 << 20, MaxPayload: 4096, SegmentSize: 8 << 20,
		Durability: never(), Prefault: no()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func code(err error) Code {
	var he *Error
	if errors.As(err, &he) {
		return he.Code
	}
	return OK
}

// Two goroutines publish 100 000 events (one copying, one claim→commit);
// two Subscribe channels check order and completeness; then the broker is
// reopened and replayed from a sequence, and a durable consumer resumes.
func TestPublishSubscribeReplayConsumer(t *testing.T) {
	if Version() != HeaderVersion {
		t.Fatalf("library %s, header %s", Version(), HeaderVersion)
	}
	dir := t.TempDir()
	b := open(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := make([]<-chan Event, 2)
	var err error
	if subs[0], err = b.Subscribe(ctx, Filter{Topics: []string{topic}}, StartNow()); err != nil {
		t.Fatal(err)
	}
	if subs[1], err = b.Subscribe(ctx, Filter{Topics: []string{"acme.*.42"}, Types: []string{"order.created"}}, StartSeq(1)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p, err := b.Publisher(topic)
			if err != nil {
				t.Error(err)
				return
			}
			defer p.Close()
			payload := make([]byte, 64)
			for i := 0; i < perWorker; i++ {
				binary.LittleEndian.PutUint32(payload[0:], uint32(w))
				binary.LittleEndian.PutUint32(payload[4:], uint32(i))
				if w == 0 {
					_, err = p.Publish("order.created", payload, uint64(w+1))
				} else {
					_, err = p.PublishWith("order.created", 64, uint64(w+1), func(buf []byte) { copy(buf, payload) })
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	results := make([]error, 2)
	var rg sync.WaitGroup
	for i, ch := range subs {
		rg.Add(1)
		go func(i int, ch <-chan Event) {
			defer rg.Done()
			results[i] = verify(ch, total)
		}(i, ch)
	}
	wg.Wait()
	rg.Wait()
	for i, err := range results {
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
	}
	cancel()
	// Each channel is closed once its subscriber is freed: the data
	// directory stays locked while any handle of the broker lives.
	for _, ch := range subs {
		for range ch {
		}
	}
	if m, err := b.Metrics(); err != nil || m.Published != total {
		t.Fatalf("metrics %+v %v", m, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen and replay from a sequence.
	b = open(t, dir)
	defer b.Close()
	s, err := b.OpenSubscriber(Filter{Topics: []string{topic}}, StartSeq(50001))
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(50001); want <= total; want++ {
		e, err := s.Next(time.Second)
		if err != nil || e.Seq != want || e.TopicSeq != want {
			t.Fatalf("replay: want %d, got %+v %v", want, e, err)
		}
	}
	if _, err := s.Next(0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("expected ErrTimeout after the replay, got %v", err)
	}
	s.Close()

	// A durable consumer resumes after what it acknowledged.
	c, err := b.OpenConsumer("billing", Filter{Topics: []string{topic}}, StartSeq(1))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < 1000; i++ {
		e, err := c.Next(time.Second)
		if err != nil || e.Seq != last+1 {
			t.Fatalf("consumer: %+v %v", e, err)
		}
		last = e.Seq
	}
	if err := c.AckUpTo(last); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if cp, err := b.ConsumerCheckpoint("billing"); err != nil || cp != 1000 {
		t.Fatalf("checkpoint %d %v", cp, err)
	}
	c, err = b.OpenConsumer("billing", Filter{Topics: []string{topic}}, StartNow())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if e, err := c.Next(time.Second); err != nil || e.Seq != 1001 {
		t.Fatalf("resume: %+v %v", e, err)
	}
}

func verify(ch <-chan Event, n int) error {
	next := [2]uint32{}
	var lastSeq, topicSeq uint64
	timeout := time.After(60 * time.Second)
	for count := 0; count < n; count++ {
		var e Event
		select {
		case e = <-ch:
		case <-timeout:
			return errors.New("timed out")
		}
		if e.Gap || e.Topic != topic || e.Type != "order.created" || len(e.Payload) != 64 {
			return errors.New("unexpected event")
		}
		if e.Seq <= lastSeq || e.TopicSeq != topicSeq+1 {
			return errors.New("out of order")
		}
		w := binary.LittleEndian.Uint32(e.Payload)
		i := binary.LittleEndian.Uint32(e.Payload[4:])
		if w > 1 || i != next[w] || e.Origin != uint64(w+1) {
			return errors.New("per-publisher order broken")
		}
		next[w]++
		lastSeq, topicSeq = e.Seq, e.TopicSeq
	}
	if next[0] != perWorker || next[1] != perWorker {
		return errors.New("incomplete")
	}
	return nil
}

func TestBadCallsReturnDocumentedCodes(t *testing.T) {
	if _, err := Open(Config{}); code(err) != ErrInvalidConfig {
		t.Fatalf("empty data dir: %v", err)
	}
	b := open(t, t.TempDir())
	defer b.Close()
	if _, err := b.Publisher("bad topic"); code(err) != ErrInvalidTopic {
		t.Fatalf("invalid topic: %v", err)
	}
	if _, err := b.OpenSubscriber(Filter{Topics: []string{"a.>.b"}}, StartNow()); code(err) != ErrInvalidTopic {
		t.Fatalf("invalid pattern: %v", err)
	}
	if _, err := b.OpenSubscriber(Filter{Topics: []string{"a.>"}}, StartTopicSeq(1)); code(err) != ErrNeedsSingleTopic {
		t.Fatalf("topic seq on a pattern: %v", err)
	}
	p, err := b.Publisher("bad.calls")
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.OpenSubscriber(Filter{Topics: []string{"bad.calls"}}, StartNow())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := p.Publish("bad type!", nil, 0); code(err) != ErrInvalidEventType {
		t.Fatalf("bad type: %v", err)
	}
	if _, err := p.Publish("t", make([]byte, 5000), 0); code(err) != ErrPayloadTooLarge {
		t.Fatalf("too large: %v", err)
	}
	if _, err := p.Publish("t", make([]byte, 100), 0); err != nil {
		t.Fatal(err)
	}
	// Buffer too small: the needed size, and the event is kept.
	_, err = s.NextInto(make([]byte, 10), time.Second)
	var he *Error
	if !errors.As(err, &he) || he.Code != ErrBufferTooSmall || he.Needed != 100+len("bad.calls")+1 {
		t.Fatalf("small buffer: %v", err)
	}
	if e, err := s.NextInto(make([]byte, he.Needed), 0); err != nil || len(e.Payload) != 100 {
		t.Fatalf("retry: %+v %v", e, err)
	}
	if err := s.Ack(1); code(err) != ErrNotAConsumer {
		t.Fatalf("ack: %v", err)
	}
	// NULL handles: a closed publisher / subscriber passes NULL to the library.
	p.Close()
	if _, err := p.Publish("t", nil, 0); code(err) != ErrNull {
		t.Fatalf("NULL publisher: %v", err)
	}
	dead := &Subscriber{}
	if _, err := dead.Next(0); code(err) != ErrNull {
		t.Fatalf("NULL subscriber: %v", err)
	}
	if _, _, err := dead.Lag(); code(err) != ErrNull || he.Message == "" {
		t.Fatalf("NULL lag: %v", err)
	}
}
