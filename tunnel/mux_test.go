package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
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

// TestMuxStalledReader: a stream whose reader stalls takes at most its window from the sender
// (and so holds at most that much in memory) and does not stall another stream of the same
// carrier.
func TestMuxStalledReader(t *testing.T) {
	a, b := net.Pipe()
	client, err := yamux.Client(a, MuxConfig(), NewWindowBudget(MuxGrowthBudget))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(b, MuxConfig(), NewWindowBudget(MuxGrowthBudget))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	open := func() (laptop, pod net.Conn) {
		st, err := client.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{1}); err != nil { // yamux announces a stream with its first frame
			t.Fatal(err)
		}
		ps, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ps, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return MuxStream(st), MuxStream(ps)
	}
	_, stalledPod := open() // the laptop never reads this one
	flowing, flowingPod := open()
	// The pod writes to the stalled stream until a write blocks for good.
	var written atomic.Int64
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			n, err := stalledPod.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	waitStable := func() int64 {
		for last := int64(-1); ; {
			time.Sleep(200 * time.Millisecond)
			n := written.Load()
			if n == last {
				return n
			}
			last = n
		}
	}
	// The README promises 32 MiB at most.
	if n := waitStable(); n > 32<<20 || n < 16<<20 {
		t.Fatalf("the pod wrote %d bytes to a stream nobody reads, want at most its window of 32 MiB (and more than 16)", n)
	}
	// The other stream still carries 64 MiB both ways.
	const size = 64 << 20
	go func() {
		_, _ = io.CopyN(flowingPod, zeroReader{}, size)
		_ = flowingPod.(interface{ CloseWrite() error }).CloseWrite()
	}()
	_ = flowing.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, flowing)
	if err != nil || n != size {
		t.Fatalf("the other stream carried %d bytes (%v), want %d: the stalled stream stalled it", n, err, size)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }
