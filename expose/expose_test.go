package expose

import (
	"context"
	"errors"
	"fmt"
	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests drive a Forwarder through a fake Client; the end-to-end tests with a
// real podshim and tunnel client are in package podshim.

type acceptResult struct {
	conn net.Conn
	port int
	err  error
}

// fakeClient serves Accept from a channel the test feeds and records Expose calls.
type fakeClient struct {
	accept    chan acceptResult
	exposeErr error

	mu       sync.Mutex
	exposed  [][]int
	closers  []*fakeCloser
	accepted atomic.Int32 // Accept calls that returned
}

func newFakeClient() *fakeClient { return &fakeClient{accept: make(chan acceptResult)} }

func (f *fakeClient) Expose(ctx context.Context, ports []int) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exposed = append(f.exposed, ports)
	if f.exposeErr != nil {
		return nil, f.exposeErr
	}
	c := &fakeCloser{done: make(chan struct{})}
	f.closers = append(f.closers, c)
	return c, nil
}

func (f *fakeClient) Accept(ctx context.Context) (net.Conn, int, string, error) {
	defer f.accepted.Add(1)
	select {
	case r := <-f.accept:
		return r.conn, r.port, "10.0.0.7:41000", r.err
	case <-ctx.Done():
		return nil, 0, "", ctx.Err()
	}
}

func (f *fakeClient) exposeCalls() ([][]int, []*fakeCloser) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]int(nil), f.exposed...), append([]*fakeCloser(nil), f.closers...)
}

// fakeCloser is an expose stream; breaking it closes Done without Close.
type fakeCloser struct {
	done   chan struct{}
	once   sync.Once
	closed atomic.Bool
}

func (c *fakeCloser) Close() error {
	c.closed.Store(true)
	c.brk()
	return nil
}

func (c *fakeCloser) brk()                  { c.once.Do(func() { close(c.done) }) }
func (c *fakeCloser) Done() <-chan struct{} { return c.done }

// run starts f.Run and returns a function that cancels it and returns its result.
func run(t *testing.T, f *Forwarder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				err = errors.New("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartErrors(t *testing.T) {
	exposeErr := errors.New("port 80: permission denied")
	tests := []struct {
		name       string
		ports      map[int]int
		exposeErr  error
		wantMsg    string
		wantExpose bool
	}{
		{name: "no ports", ports: nil, wantMsg: "no ports"},
		{name: "remote port 0", ports: map[int]int{0: 3000}, wantMsg: "port 0 out of range"},
		{name: "remote port too large", ports: map[int]int{70000: 3000}, wantMsg: "port 70000 out of range"},
		{name: "local port 0", ports: map[int]int{8080: 0}, wantMsg: "local port 0"},
		{name: "expose fails", ports: map[int]int{80: 3000}, exposeErr: exposeErr, wantMsg: "permission denied", wantExpose: true},
	}
	for _, tt := range tests {
		for _, viaRun := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/run=%v", tt.name, viaRun), func(t *testing.T) {
				fc := newFakeClient()
				fc.exposeErr = tt.exposeErr
				f := &Forwarder{Client: fc, Ports: tt.ports}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				var err error
				if viaRun {
					err = f.Run(ctx)
				} else {
					err = f.Start(ctx)
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || ctx.Err() != nil {
					t.Fatalf("error = %v (ctx %v), want one mentioning %q at once", err, ctx.Err(), tt.wantMsg)
				}
				if tt.exposeErr != nil && !errors.Is(err, tt.exposeErr) {
					t.Errorf("error %v does not wrap the Expose error", err)
				}
				if calls, _ := fc.exposeCalls(); (len(calls) > 0) != tt.wantExpose {
					t.Errorf("Expose called %d times", len(calls))
				}
			})
		}
	}
}

func TestRunForwardsAndRetries(t *testing.T) {
	fc := newFakeClient()
	local := make(chan net.Conn, 1)
	f := &Forwarder{
		Client: fc,
		Ports:  map[int]int{8080: 3000},
		Pool:   1,
		DialLocal: func(ctx context.Context, port int) (net.Conn, error) {
			if port != 3000 {
				return nil, fmt.Errorf("dialled local port %d, want 3000", port)
			}
			a, b := net.Pipe()
			local <- b
			return a, nil
		},
	}
	stop := run(t, f)
	waitFor(t, "Expose", func() bool { c, _ := fc.exposeCalls(); return len(c) == 1 })
	if calls, _ := fc.exposeCalls(); fmt.Sprint(calls[0]) != "[8080]" {
		t.Fatalf("exposed %v, want [8080]", calls[0])
	}

	// Two broken-tunnel errors: the loop backs off, retries and keeps running.
	start := time.Now()
	for range 2 {
		fc.accept <- acceptResult{err: errors.New("tunnel broken")}
	}
	a, b := net.Pipe()
	defer a.Close()
	fc.accept <- acceptResult{conn: b, port: 8080}
	if d := time.Since(start); d < 3*minBackoff {
		t.Errorf("retries came after %v, want a backoff of at least %v", d, 3*minBackoff)
	}
	var lc net.Conn
	select {
	case lc = <-local:
	case <-time.After(5 * time.Second):
		t.Fatal("no local dial after the accepted connection")
	}
	defer lc.Close()
	go a.Write([]byte("in-cluster"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(lc, buf); err != nil || string(buf) != "in-cluster" {
		t.Fatalf("local side read %q, %v", buf, err)
	}
	go lc.Write([]byte("laptop"))
	buf = make([]byte, 6)
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "laptop" {
		t.Fatalf("in-cluster side read %q, %v", buf, err)
	}
	// A replacement accept stream was parked while the connection is still open.
	waitFor(t, "a replacement Accept", func() bool {
		select {
		case fc.accept <- acceptResult{err: errors.New("tunnel broken")}:
			return true
		default:
			return false
		}
	})

	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if _, err := a.Read(buf); err == nil {
		t.Error("forwarded connection still open after Run returned")
	}
	if _, closers := fc.exposeCalls(); !closers[0].closed.Load() {
		t.Error("expose stream not closed after Run returned")
	}
}

func TestRunRefusesConnections(t *testing.T) {
	tests := []struct {
		name    string
		port    int // pod port the connection arrives on
		dialErr error
		wantLog string
	}{
		{name: "nothing listens", port: 8080, dialErr: syscall.ECONNREFUSED, wantLog: "nothing listens on 127.0.0.1:3000"},
		{name: "other dial error", port: 8080, dialErr: errors.New("too many open files"), wantLog: "cannot connect to 127.0.0.1:3000: dial tcp: too many open files"},
		{name: "port not exposed", port: 9999, wantLog: "pod port 9999, which is not exposed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := newFakeClient()
			lb := &testnet.Log{}
			var dials atomic.Int32
			f := &Forwarder{
				Client: fc,
				Ports:  map[int]int{8080: 3000},
				Logf:   lb.Logf,
				DialLocal: func(ctx context.Context, port int) (net.Conn, error) {
					dials.Add(1)
					return nil, &net.OpError{Op: "dial", Net: "tcp", Err: tt.dialErr}
				},
			}
			run(t, f)
			for i := range 3 {
				a, b := net.Pipe()
				fc.accept <- acceptResult{conn: b, port: tt.port}
				_ = a.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := a.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("connection %d: read = %d, %v; want the stream closed (EOF)", i, n, err)
				}
				a.Close()
			}
			if n := lb.Count(tt.wantLog); n != 1 {
				t.Errorf("%q logged %d times for 3 connections, want once: %q", tt.wantLog, n, lb.Lines())
			}
			if wantDials := map[bool]int32{true: 3, false: 0}[tt.dialErr != nil]; dials.Load() != wantDials {
				t.Errorf("DialLocal called %d times, want %d", dials.Load(), wantDials)
			}
		})
	}
}

func TestRunExposesAgainWhenStreamBreaks(t *testing.T) {
	fc := newFakeClient()
	lb := &testnet.Log{}
	stop := run(t, &Forwarder{Client: fc, Ports: map[int]int{8080: 3000, 9090: 4000}, Logf: lb.Logf})
	waitFor(t, "the first Expose", func() bool { c, _ := fc.exposeCalls(); return len(c) == 1 })
	_, closers := fc.exposeCalls()
	closers[0].brk()
	waitFor(t, "Expose again", func() bool { c, _ := fc.exposeCalls(); return len(c) == 2 })
	calls, closers := fc.exposeCalls()
	if fmt.Sprint(calls[1]) != "[8080 9090]" {
		t.Errorf("exposed again %v, want [8080 9090]", calls[1])
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if !closers[1].closed.Load() {
		t.Error("second expose stream not closed after Run returned")
	}
	if n := lb.Count("exposed again"); n != 1 {
		t.Errorf("logged %q: %q", "exposed again", lb.Lines())
	}
}
