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
	var de *tunnel.DialError
	if !errors.As(err, &de) || de.Code != tunnel.CodeAuth {
		t.Fatalf("DialContext with a wrong token: %v, want code %q", err, tunnel.CodeAuth)
	}
}
