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

func TestWindowBudget(t *testing.T) {
	type step struct {
		span    int // which of two spans
		op      string
		size    int
		prio    uint8
		wantErr bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a new stream's first window is always granted", []step{
			{0, "reserve", 100, growthPriority, false},
			{1, "reserve", 256 << 10, 255, false},
			{1, "reserve", 256 << 10, 255, false},
		}},
		{"growth is shared and bounded", []step{
			{0, "reserve", 60, growthPriority, false},
			{1, "reserve", 40, growthPriority, false},
			{1, "reserve", 1, growthPriority, true},
		}},
		{"a finished stream gives its growth back", []step{
			{0, "reserve", 100, growthPriority, false},
			{1, "reserve", 1, growthPriority, true},
			{0, "done", 0, 0, false},
			{1, "reserve", 100, growthPriority, false},
		}},
		{"a second Done releases nothing", []step{
			{0, "reserve", 50, growthPriority, false},
			{1, "reserve", 50, growthPriority, false},
			{0, "done", 0, 0, false},
			{0, "done", 0, 0, false},
			{0, "reserve", 50, growthPriority, false},
			{0, "reserve", 1, growthPriority, true},
		}},
		{"release returns no more than was held", []step{
			{0, "reserve", 30, growthPriority, false},
			{0, "release", 1000, 0, false},
			{1, "reserve", 100, growthPriority, false},
			{0, "reserve", 1, growthPriority, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			newSpan := NewWindowBudget(100)
			var spans [2]yamux.MemoryManager
			for i := range spans {
				spans[i], _ = newSpan()
			}
			for i, st := range tt.steps {
				switch st.op {
				case "reserve":
					err := spans[st.span].ReserveMemory(st.size, st.prio)
					if (err != nil) != st.wantErr {
						t.Fatalf("step %d: ReserveMemory(%d, %d) = %v, want error %v", i, st.size, st.prio, err, st.wantErr)
					}
				case "release":
					spans[st.span].ReleaseMemory(st.size)
				case "done":
					spans[st.span].Done()
				}
			}
		})
	}
}
