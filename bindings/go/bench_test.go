package herald

import (
	"context"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestBenchReceive measures events/s received through the Go binding for
// 64-byte events (docs/BENCHMARKS.md, "C ABI"). It runs only with
// HERALD_BENCH=EVENTS set: HERALD_BENCH=500000 go test -run TestBenchReceive -v
func TestBenchReceive(t *testing.T) {
	events, _ := strconv.Atoi(os.Getenv("HERALD_BENCH"))
	if events == 0 {
		t.Skip("set HERALD_BENCH=EVENTS to run")
	}
	res := map[string][]float64{}
	for r := 0; r < 5; r++ {
		b, err := Open(Config{DataDir: t.TempDir(), RingCapacity: 1 << 28, SegmentSize: 1 << 30,
			Durability: never(), Prefault: no()})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := b.Publisher("bench.topic")
		s, _ := b.OpenSubscriber(Filter{Topics: []string{"bench.topic"}}, StartNow())
		ctx, cancel := context.WithCancel(context.Background())
		ch, _ := b.Subscribe(ctx, Filter{Topics: []string{"bench.topic"}}, StartNow())
		payload := make([]byte, 64)
		start := time.Now()
		for i := 0; i < events; i++ {
			if _, err := p.Publish("e", payload, 0); err != nil {
				t.Fatal(err)
			}
		}
		res["publish"] = append(res["publish"], float64(events)/time.Since(start).Seconds())
		start = time.Now()
		for i := 0; i < events; i++ {
			if e, err := s.Next(0); err != nil || len(e.Payload) != 64 {
				t.Fatal(err)
			}
		}
		res["receive_next"] = append(res["receive_next"], float64(events)/time.Since(start).Seconds())
		start = time.Now()
		for i := 0; i < events; i++ {
			if e := <-ch; len(e.Payload) != 64 {
				t.Fatal("bad event")
			}
		}
		res["receive_channel"] = append(res["receive_channel"], float64(events)/time.Since(start).Seconds())
		cancel()
		s.Close()
		p.Close()
		b.Close()
	}
	for _, k := range []string{"publish", "receive_next", "receive_channel"} {
		v := res[k]
		sort.Float64s(v)
		t.Logf("go %s %.0f", k, v[len(v)/2])
	}
}
