package latency

import (
	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"io"
	"net"
	"testing"
	"time"
)

func echoServer(t *testing.T) string { return testnet.Echo(t) }

func TestProxy(t *testing.T) {
	cases := []struct {
		name  string
		delay time.Duration
	}{
		{"no delay", 0},
		{"50ms each way", 50 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialVia(t, &Proxy{Target: echoServer(t), Delay: tc.delay})
			start := time.Now()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo = %q, %v", buf, err)
			}
			if rtt := time.Since(start); rtt < 2*tc.delay {
				t.Fatalf("round trip %s, want at least %s", rtt, 2*tc.delay)
			}
		})
	}
}

func TestCut(t *testing.T) {
	p := &Proxy{Target: echoServer(t)}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(b); err == nil {
		t.Fatal("read after Cut succeeded, want an error")
	}
	// New connections still work.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c2, b); err != nil || b[0] != 'y' {
		t.Fatalf("after Cut: %q %v", b, err)
	}
}

// TestWindow checks the bandwidth-delay cap: with at most Window bytes per round trip, 512 KiB
// through a 64 KiB window at 50 ms of round trip needs at least 7 round trips, and arrives intact.
func TestWindow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- int(n)
	}()
	c := dialVia(t, &Proxy{Target: ln.Addr().String(), Delay: 25 * time.Millisecond, Window: 64 << 10})
	start := time.Now()
	if _, err := c.Write(make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-got; n != 512<<10 {
		t.Fatalf("received %d bytes, want %d", n, 512<<10)
	}
	if took := time.Since(start); took < 7*50*time.Millisecond {
		t.Fatalf("512 KiB through a 64 KiB window at 50 ms RTT took %s, want at least 350 ms", took)
	}
}

// dialVia starts p (closed when the test ends) and returns a connection through it.
func dialVia(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
