package herald

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// next reads one delivery or fails the test.
func next(t *testing.T, s *Subscriber) Event {
	t.Helper()
	e, err := s.Next(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Correlation ids go out with PublishOpts, PublishWithOpts and PublishBatch
// and come back on both read paths (batched Next and single NextInto).
func TestCorrelationIDs(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	p, err := b.Publisher("orders.eu")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := b.OpenSubscriber(Filter{Topics: []string{"orders.*"}}, StartNow())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := p.PublishOpts("order.created", []byte(`{"id":1}`), PublishOptions{Origin: 7, Correlation: "req-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishWithOpts("order.paid", 3, PublishOptions{Correlation: "req-2"}, func(b []byte) { copy(b, "abc") }); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish("order.note", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ, corr, payload string
		origin             uint64
	}{{"order.created", "req-1", `{"id":1}`, 7}, {"order.paid", "req-2", "abc", 0}, {"order.note", "", "x", 0}}
	for i, w := range want {
		e := next(t, s)
		if e.Type != w.typ || e.Correlation != w.corr || string(e.Payload) != w.payload || e.Origin != w.origin || e.Topic != "orders.eu" {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	// An invalid correlation id is refused with its own code.
	if _, err := p.PublishOpts("t", nil, PublishOptions{Correlation: "tab\there"}); code(err) != ErrInvalidCorrelation {
		t.Fatalf("bad correlation: %v", err)
	}
	if _, err := p.PublishOpts("t", nil, PublishOptions{Correlation: strings.Repeat("c", 127)}); code(err) != ErrInvalidCorrelation {
		t.Fatalf("long correlation: %v", err)
	}
	// NextInto: the payload lands in (and aliases) the caller's buffer.
	if _, err := p.PublishOpts("order.shipped", []byte("parcel"), PublishOptions{Correlation: "req-3"}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	e, err := s.NextInto(buf, time.Second)
	if err != nil || e.Correlation != "req-3" || e.Type != "order.shipped" || e.Topic != "orders.eu" || string(e.Payload) != "parcel" {
		t.Fatalf("NextInto: %+v %v", e, err)
	}
	if &e.Payload[0] != &buf[0] {
		t.Fatal("NextInto's payload does not alias the caller's buffer")
	}
}

// A batch gets consecutive sequences across topics; one bad event stores
// nothing.
func TestPublishBatch(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	a, _ := b.Publisher("batch.a")
	defer a.Close()
	c, _ := b.Publisher("batch.c")
	defer c.Close()
	s, err := b.OpenSubscriber(Filter{Topics: []string{"batch.>"}}, StartNow())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := a.Publish("warmup", nil, 0); err != nil {
		t.Fatal(err)
	}
	next(t, s)
	got, err := b.PublishBatch([]BatchEvent{
		{Publisher: a, Type: "one", Payload: []byte("1"), Options: PublishOptions{Correlation: "b-1", Origin: 3}},
		{Publisher: c, Type: "two", Payload: nil},
		{Publisher: a, Type: "three", Payload: []byte("333")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != 2 || got[1].Seq != 3 || got[2].Seq != 4 ||
		got[0].TopicSeq != 2 || got[1].TopicSeq != 1 || got[2].TopicSeq != 3 {
		t.Fatalf("sequences %+v", got)
	}
	for i, w := range []string{"one/1/b-1/batch.a", "two//" + "/batch.c", "three/333//batch.a"} {
		e := next(t, s)
		if g := e.Type + "/" + string(e.Payload) + "/" + e.Correlation + "/" + e.Topic; g != w || e.Seq != got[i].Seq {
			t.Fatalf("batch event %d: %q (seq %d)", i, g, e.Seq)
		}
	}
	before, _ := b.NextSeq()
	_, err = b.PublishBatch([]BatchEvent{{Publisher: a, Type: "fine"}, {Publisher: a, Type: "bad type!"}})
	if code(err) != ErrInvalidEventType {
		t.Fatalf("bad batch: %v", err)
	}
	if after, _ := b.NextSeq(); after != before {
		t.Fatalf("a failed batch stored events: next seq %d -> %d", before, after)
	}
	if _, err := b.PublishBatch([]BatchEvent{{Publisher: nil, Type: "t"}}); err == nil {
		t.Fatal("a batch event without publisher was accepted")
	}
	if r, err := b.PublishBatch(nil); err != nil || r != nil {
		t.Fatalf("empty batch: %v %v", r, err)
	}
}

// Broker-side consumer acknowledgement and removal, and Flush.
func TestConsumerAckRemoveFlush(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	p, _ := b.Publisher("jobs")
	for i := 0; i < 10; i++ {
		if _, err := p.Publish("job", []byte{byte(i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.ConsumerAck("worker", 3); code(err) != ErrUnknownConsumer {
		t.Fatalf("ack of an unknown consumer: %v", err)
	}
	c, err := b.OpenConsumer("worker", Filter{Topics: []string{"jobs"}}, StartSeq(1))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := b.ConsumerAck("worker", 4); err != nil {
		t.Fatal(err)
	}
	if err := b.ConsumerAck("worker", 4); err != nil {
		t.Fatalf("acknowledging the checkpoint again: %v", err)
	}
	if err := b.ConsumerAck("worker", 2); code(err) != ErrAck {
		t.Fatalf("ack below the checkpoint: %v", err)
	}
	if err := b.ConsumerAck("worker", 11); code(err) != ErrAck {
		t.Fatalf("ack past the last event: %v", err)
	}
	if cp, err := b.ConsumerCheckpoint("worker"); err != nil || cp != 4 {
		t.Fatalf("checkpoint %d %v", cp, err)
	}
	p.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The broker-side acknowledgement is durable: the consumer resumes at 5.
	b = open(t, dir)
	defer b.Close()
	c, err = b.OpenConsumer("worker", Filter{Topics: []string{"jobs"}}, StartSeq(1))
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, c); e.Seq != 5 {
		t.Fatalf("resumed at %d, want 5", e.Seq)
	}
	c.Close()
	if err := b.ConsumerRemove("worker"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ConsumerCheckpoint("worker"); code(err) != ErrUnknownConsumer {
		t.Fatalf("checkpoint after remove: %v", err)
	}
	// Removed: it starts afresh at the given start position.
	c, err = b.OpenConsumer("worker", Filter{Topics: []string{"jobs"}}, StartSeq(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if e := next(t, c); e.Seq != 1 {
		t.Fatalf("after remove, started at %d, want 1", e.Seq)
	}
}

func TestPresence(t *testing.T) {
	b, err := Open(Config{DataDir: t.TempDir(), Durability: never(), Prefault: no(), PresenceTTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := b.OpenSubscriber(Filter{Topics: []string{"$presence.room.1"}}, StartNow())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := b.PresenceJoin("room.1", PresenceSession{ClientID: "c1", User: "alice", Device: "phone", Metadata: json.RawMessage(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := b.PresenceJoin("room.1", PresenceSession{ClientID: "c2", User: "bob", Device: "web"}); err != nil {
		t.Fatal(err)
	}
	if err := b.PresenceJoin("room.1", PresenceSession{ClientID: "c3", Metadata: json.RawMessage(`{not json`)}); code(err) != ErrPresence {
		t.Fatalf("bad metadata: %v", err)
	}
	if err := b.PresenceHeartbeat("room.1", "c1"); err != nil {
		t.Fatal(err)
	}
	if err := b.PresenceHeartbeat("room.1", "nobody"); code(err) != ErrPresence {
		t.Fatalf("heartbeat of nobody: %v", err)
	}
	// Enough sessions that the list outgrows PresenceList's first buffer.
	for i := 0; i < 60; i++ {
		id := "bulk-" + strings.Repeat("x", 40) + string(rune('A'+i%26)) + string(rune('a'+i/26))
		if err := b.PresenceJoin("room.2", PresenceSession{ClientID: id, User: "u", Device: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := b.PresenceList("room.2"); err != nil || len(list) != 60 {
		t.Fatalf("room.2: %d sessions, %v", len(list), err)
	}
	list, err := b.PresenceList("room.1")
	if err != nil || len(list) != 2 {
		t.Fatalf("list %+v %v", list, err)
	}
	byID := map[string]PresenceMember{}
	for _, m := range list {
		byID[m.ClientID] = m
	}
	alice, bob := byID["c1"], byID["c2"]
	if alice.User != "alice" || alice.Device != "phone" || !bytes.Equal(alice.Metadata, []byte(`{"v":1}`)) ||
		alice.ConnectedAtNs == 0 || alice.LastHeartbeatNs < alice.ConnectedAtNs {
		t.Fatalf("alice %+v", alice)
	}
	if bob.User != "bob" || bob.Metadata != nil {
		t.Fatalf("bob %+v", bob)
	}
	if was, err := b.PresenceLeave("room.1", "c2"); err != nil || !was {
		t.Fatalf("leave: %v %v", was, err)
	}
	if was, err := b.PresenceLeave("room.1", "c2"); err != nil || was {
		t.Fatalf("second leave: %v %v", was, err)
	}
	time.Sleep(120 * time.Millisecond)
	if n, err := b.PresenceExpire(); err != nil || n != 61 {
		t.Fatalf("expired %d %v, want 61 (c1 and room.2's sessions)", n, err)
	}
	if list, err := b.PresenceList("room.1"); err != nil || len(list) != 0 {
		t.Fatalf("after expiry %+v %v", list, err)
	}
	for i, w := range []string{"presence.join", "presence.join", "presence.leave", "presence.expire"} {
		e := next(t, s)
		if e.Type != w || e.Topic != "$presence.room.1" {
			t.Fatalf("presence event %d: %s on %s, want %s", i, e.Type, e.Topic, w)
		}
	}
	if _, err := s.Next(0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("an extra presence event: %v", err)
	}
}

// A panicking fill drops the claim, so the publisher can claim again.
func TestPublishWithPanicAbortsClaim(t *testing.T) {
	b := open(t, t.TempDir())
	defer b.Close()
	p, _ := b.Publisher("claims")
	defer p.Close()
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the fill's panic was swallowed")
			}
		}()
		p.PublishWith("t", 4, 0, func([]byte) { panic("fill failed") })
	}()
	if r, err := p.PublishWith("t", 4, 0, func(b []byte) { copy(b, "okay") }); err != nil || r.Seq != 1 {
		t.Fatalf("claim after a panic: %+v %v", r, err)
	}
}

func TestConfigAndMetrics(t *testing.T) {
	b, err := Open(Config{DataDir: t.TempDir(), SyncInterval: 5 * time.Millisecond, RetentionMaxAge: time.Hour,
		RetentionMaxBytes: 1 << 30, Prefault: no()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, _ := b.Publisher("m")
	defer p.Close()
	s, _ := b.OpenSubscriber(Filter{Topics: []string{"m"}}, StartNow())
	for i := 0; i < 100; i++ {
		p.Publish("t", nil, 0)
	}
	for i := 0; i < 100; i++ {
		next(t, s)
	}
	s.Close() // a freed subscriber's deliveries and latencies are counted
	m, err := b.Metrics()
	if err != nil || m.Published != 100 || m.Delivered != 100 || m.LatencyMaxNs == 0 ||
		m.LatencyP50Ns > m.LatencyP95Ns || m.LatencyP95Ns > m.LatencyP99Ns || m.LatencyP99Ns > m.LatencyMaxNs {
		t.Fatalf("metrics %+v %v", m, err)
	}
}
