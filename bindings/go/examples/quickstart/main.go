// Quickstart: open a broker in a fresh temporary directory, subscribe,
// publish two events (one with a correlation id), receive both, clean up.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	herald "github.com/herald-events/herald/bindings/go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	// A directory of its own: a broker locks its data directory.
	dir, err := os.MkdirTemp("", "herald-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	b, err := herald.Open(herald.Config{DataDir: dir})
	if err != nil {
		return err
	}
	defer b.Close()

	// Never wait forever: the channel closes when ctx is done.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, err := b.Subscribe(ctx, herald.Filter{Topics: []string{"acme.>"}}, herald.StartNow())
	if err != nil {
		return err
	}

	p, err := b.Publisher("acme.orders")
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := p.PublishOpts("order.created", []byte(`{"id":1}`),
		herald.PublishOptions{Correlation: "req-1"}); err != nil {
		return err
	}
	last, err := p.PublishWith("order.created", 8, 0, func(buf []byte) { copy(buf, `{"id":2}`) })
	if err != nil {
		return err
	}

	received := false
	for e := range events {
		if e.Gap {
			fmt.Printf("missed %d..%d\n", e.GapFrom, e.GapTo)
			continue
		}
		fmt.Printf("#%d %s %s correlation=%q\n", e.Seq, e.Type, e.Payload, e.Correlation)
		// Stop at the sequence the publish returned, not at a guessed one.
		if e.Seq == last.Seq {
			received = true
			break
		}
	}
	cancel()
	for range events {
		// Closed once the subscriber is freed.
	}
	if !received {
		return errors.New("timed out before the last event arrived")
	}
	return nil
}
