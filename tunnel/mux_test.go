package tunnel

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// TestMuxStreamDeadline checks the net.Conn promise that podshim's parked accept streams rely on:
// a passed deadline fails Read with an error that wraps os.ErrDeadlineExceeded and is a timeout.
func TestMuxStreamDeadline(t *testing.T) {
	a, b := net.Pipe()
	client, err := yamux.Client(a, MuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(b, MuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	st, err := client.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := MuxStream(st)
	defer c.Close()
	for _, d := range []time.Duration{-time.Second, 20 * time.Millisecond} {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read after a deadline of %s: %v, want os.ErrDeadlineExceeded", d, err)
		}
	}
}
