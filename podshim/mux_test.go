package podshim_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// muxClient returns a tunnel client whose streams are multiplexed on carriers dialled to addr, and
// a counter of the carriers opened.
func muxClient(addr, token string) (*tunnel.Client, *tunnel.Mux, *atomic.Int32) {
	var carriers atomic.Int32
	m := &tunnel.Mux{Token: token, Carrier: func(ctx context.Context) (net.Conn, error) {
		carriers.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	return &tunnel.Client{Token: token, Open: m.Open}, m, &carriers
}

func TestMuxDialEchoManyStreams(t *testing.T) {
	names := map[string]string{"echo.svc:80": echoServer(t)}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	for _, n := range []int{1, 50, 300} {
		t.Run(fmt.Sprintf("%d streams", n), func(t *testing.T) {
			c, m, carriers := muxClient(addr, testToken)
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, err := c.DialContext(ctx, "tcp", "echo.svc:80")
					if err != nil {
						errs <- err
						return
					}
					defer conn.Close()
					payload := strings.Repeat(fmt.Sprintf("stream %d ", i), 2000+i)
					go func() {
						io.WriteString(conn, payload)
						conn.(interface{ CloseWrite() error }).CloseWrite()
					}()
					got, err := io.ReadAll(conn)
					if err == nil && string(got) != payload {
						err = fmt.Errorf("stream %d: echo returned %d bytes, want %d", i, len(got), len(payload))
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := carriers.Load(); got != 1 {
				t.Errorf("carriers opened = %d, want 1", got)
			}
		})
	}
}

// TestMuxCloseStopsPodSide checks that a laptop-side Close of a stream whose destination is still
// sending ends the pod side's relay (the destination connection is closed), instead of leaving it
// blocked on a window that nobody reopens.
func TestMuxCloseStopsPodSide(t *testing.T) {
	ln := listen(t)
	closed := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer close(closed)
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil { // until podshim closes it
				c.Close()
				return
			}
		}
	}()
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(map[string]string{"flood.svc:80": ln.Addr().String()})})
	c, m, _ := muxClient(addr, testToken)
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", "flood.svc:80")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the destination connection was still open 5 s after the laptop closed the stream")
	}
}

func TestMuxCarrierReopens(t *testing.T) {
	names := map[string]string{"echo.svc:80": echoServer(t)}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	var (
		mu   sync.Mutex
		last net.Conn
	)
	var carriers atomic.Int32
	m := &tunnel.Mux{Token: testToken, Carrier: func(ctx context.Context) (net.Conn, error) {
		carriers.Add(1)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		mu.Lock()
		last = c
		mu.Unlock()
		return c, err
	}}
	defer m.Close()
	c := &tunnel.Client{Token: testToken, Open: m.Open}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	echo := func() error {
		conn, err := c.DialContext(ctx, "tcp", "echo.svc:80")
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "ping"); err != nil {
			return err
		}
		b := make([]byte, 4)
		_, err = io.ReadFull(conn, b)
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last.Close() // the carrier breaks, as when the API server connection drops
	mu.Unlock()
	if err := echo(); err != nil {
		t.Fatalf("after the carrier broke: %v", err)
	}
	if got := carriers.Load(); got != 2 {
		t.Errorf("carriers opened = %d, want 2", got)
	}
}

func TestMuxWrongToken(t *testing.T) {
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	c, m, _ := muxClient(addr, "wrong")
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.DialContext(ctx, "tcp", "echo.svc:80")
	var de *tunnel.RemoteError
	if !errors.As(err, &de) || de.Code != tunnel.CodeAuth {
		t.Fatalf("DialContext with a wrong token: %v, want code %q", err, tunnel.CodeAuth)
	}
}

// countingConn counts the bytes written to a carrier.
type countingConn struct {
	net.Conn
	written *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func TestMuxSpreadsStreamsOverCarriers(t *testing.T) {
	names := map[string]string{"echo.svc:80": echoServer(t)}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	for _, carriers := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d carriers", carriers), func(t *testing.T) {
			var (
				mu      sync.Mutex
				written []*atomic.Int64
			)
			m := &tunnel.Mux{Token: testToken, Carriers: carriers, Carrier: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				mu.Lock()
				defer mu.Unlock()
				written = append(written, new(atomic.Int64))
				return countingConn{c, written[len(written)-1]}, nil
			}}
			defer m.Close()
			c := &tunnel.Client{Token: testToken, Open: m.Open}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Streams are held open, so the carrier with the fewest streams changes with each one.
			var open []net.Conn
			defer func() {
				for _, conn := range open {
					conn.Close()
				}
			}()
			dial := func() {
				conn, err := c.DialContext(ctx, "tcp", "echo.svc:80")
				if err != nil {
					t.Fatal(err)
				}
				open = append(open, conn)
			}
			// The carriers after the first open in the background while streams are opened.
			for deadline := time.Now().Add(5 * time.Second); ; {
				dial()
				mu.Lock()
				n := len(written)
				mu.Unlock()
				if n == carriers {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d carriers open after 5 s, want %d", n, carriers)
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			before := make([]int64, len(written))
			for i, w := range written {
				before[i] = w.Load()
			}
			mu.Unlock()
			const streams = 30
			for range streams {
				dial()
			}
			for _, conn := range open[len(open)-streams:] {
				if _, err := io.WriteString(conn, strings.Repeat("x", 1000)); err != nil {
					t.Fatal(err)
				}
				// The echo is back, so the 1000 bytes have left through the carrier.
				if _, err := io.ReadFull(conn, make([]byte, 1000)); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(written) != carriers {
				t.Fatalf("%d carriers opened, want %d", len(written), carriers)
			}
			for i, w := range written {
				// Each carrier took about its share of the 30 streams' requests and data.
				if got := w.Load() - before[i]; got < int64(streams/carriers/2*1000) {
					t.Errorf("carrier %d carried %d bytes of the new streams, want at least half its share of %d", i, got, streams*1000)
				}
			}
		})
	}
}

func TestMuxOpenAfterClose(t *testing.T) {
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	c, m, carriers := muxClient(addr, testToken)
	m.Close()
	_, err := c.DialContext(context.Background(), "tcp", "echo.svc:80")
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after Close: %v, want net.ErrClosed", err)
	}
	if n := carriers.Load(); n != 0 {
		t.Errorf("%d carriers opened after Close, want 0", n)
	}
}

func TestMuxCloseStopsBackgroundOpening(t *testing.T) {
	names := map[string]string{"echo.svc:80": echoServer(t)}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	var calls atomic.Int32
	second, cancelled := make(chan struct{}), make(chan struct{})
	m := &tunnel.Mux{Token: testToken, Carriers: 2, Carrier: func(ctx context.Context) (net.Conn, error) {
		if calls.Add(1) == 1 {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
		// The second carrier hangs, as a port-forward to a pod being deleted can.
		close(second)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}}
	c := &tunnel.Client{Token: testToken, Open: m.Open}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", "echo.svc:80")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("the second carrier was not opened in the background")
	}
	m.Close()
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not cancel the background opening of a carrier")
	}
}
