package podshim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"

	"github.com/kubectl-tp/kubectl-tp/expose"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// These tests run a Server, a tunnel.Client and a expose.Forwarder on loopback;
// exposed ports are bound to 127.0.0.1 through Server.ExposeHost.

const revToken = "rev-token"

// revServer is a running Server with exposed ports bound to 127.0.0.1.
type revServer struct {
	addr   string        // the tunnel listener
	errc   chan error    // receives Serve's result
	cancel func()        // stops Serve
	done   chan struct{} // closed when Serve has returned
}

func startRevServer(t *testing.T, srv *Server) *revServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.ExposeHost = "127.0.0.1"
	ctx, cancel := context.WithCancel(context.Background())
	rs := &revServer{addr: ln.Addr().String(), errc: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rs.done)
		rs.errc <- srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rs.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return rs
}

// client returns a tunnel client whose streams are multiplexed on a carrier, as in production.
func (rs *revServer) client() *tunnel.Client {
	m := &tunnel.Mux{Token: revToken, Carrier: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", rs.addr)
	}}
	return &tunnel.Client{Token: revToken, Open: m.Open}
}

// freePort returns a loopback port nothing listens on (for now).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serveEcho echoes every connection on ln and returns its port.
func serveEcho(t *testing.T, ln net.Listener) int {
	testnet.Serve(t, ln)
	return ln.Addr().(*net.TCPAddr).Port
}

// localEcho starts a loopback echo server and returns its port.
func localEcho(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(testnet.Echo(t))
	n, _ := strconv.Atoi(p)
	return n
}

// startForwarder runs a Forwarder until the end of the test.
func startForwarder(t *testing.T, c expose.Client, ports map[int]int, pool int) *testnet.Log {
	t.Helper()
	lb := &testnet.Log{}
	ctx, cancel := context.WithCancel(context.Background())
	f := &expose.Forwarder{Client: c, Ports: ports, Pool: pool, Logf: lb.Logf}
	if err := f.Start(ctx); err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return lb
}

// echoThrough sends msg on a new connection to 127.0.0.1:port, half-closes, and
// checks that the same bytes come back.
func echoThrough(port int, msg []byte) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %d bytes, want %d equal to the sent ones", len(got), len(msg))
	}
	return nil
}

// dialFails reports whether connecting to 127.0.0.1:port is refused within timeout
// (retrying while it still succeeds).
func dialFails(port int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestReverseEcho(t *testing.T) {
	tests := []struct {
		name  string
		conns int
		pool  int
		size  int
	}{
		{name: "one connection", conns: 1, pool: 0, size: 10},
		{name: "50 concurrent, default pool", conns: 50, pool: 0, size: 4 << 10},
		{name: "50 concurrent, pool of 1", conns: 50, pool: 1, size: 100},
		{name: "large transfer", conns: 2, pool: 2, size: 4 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := startRevServer(t, &Server{Token: revToken})
			local := localEcho(t)
			remote := freePort(t)
			if remote == local {
				t.Fatal("remote and local port coincide")
			}
			startForwarder(t, rs.client(), map[int]int{remote: local}, tt.pool)
			var wg sync.WaitGroup
			errs := make(chan error, tt.conns)
			for i := range tt.conns {
				wg.Go(func() {
					msg := bytes.Repeat([]byte{byte('a' + i%26)}, tt.size)
					if err := echoThrough(remote, msg); err != nil {
						errs <- fmt.Errorf("connection %d: %w", i, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestReverseNothingListening(t *testing.T) {
	rs := startRevServer(t, &Server{Token: revToken})
	local, remote := freePort(t), freePort(t)
	for remote == local {
		remote = freePort(t)
	}
	lb := startForwarder(t, rs.client(), map[int]int{remote: local}, 2)

	for i := range 2 {
		start := time.Now()
		var n int
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(remote))
		if err == nil { // else the reset came before the connect finished
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			n, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d: read = %d, %v; want a connection reset", i, n, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("connection %d: reset after %v", i, d)
		}
	}
	want := fmt.Sprintf("nothing listens on 127.0.0.1:%d", local)
	if n := lb.Count(want); n != 1 {
		t.Errorf("%q logged %d times, want once: %q", want, n, lb.Lines())
	}

	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(local))
	if err != nil {
		t.Fatalf("listening on the freed local port: %v", err)
	}
	serveEcho(t, ln)
	if err := echoThrough(remote, []byte("hello again")); err != nil {
		t.Fatalf("after the local listener appeared: %v", err)
	}
}

func TestReverseSlowConnectionDoesNotBlockOthers(t *testing.T) {
	rs := startRevServer(t, &Server{Token: revToken})
	local := localEcho(t)
	remote := freePort(t)
	startForwarder(t, rs.client(), map[int]int{remote: local}, 2)

	// The slow client writes but never reads, until every buffer on the way is full.
	slow, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(remote))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	buf := make([]byte, 256<<10)
	filled := false
	for range 2000 {
		_ = slow.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := slow.Write(buf); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("slow write: %v", err)
			}
			filled = true
			break
		}
	}
	if !filled {
		t.Fatal("the slow connection never stalled")
	}

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			if err := echoThrough(remote, []byte("fast "+strconv.Itoa(i))); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAcceptCarriesPortAndPeer(t *testing.T) {
	rs := startRevServer(t, &Server{Token: revToken})
	c := rs.client()
	ctx := context.Background()
	remote := freePort(t)
	exp, err := c.Expose(ctx, []int{remote})
	if err != nil {
		t.Fatalf("Expose: %v", err)
	}
	defer exp.Close()

	// An accept stream whose client went away must be dropped from the pool.
	gone, cancelGone := context.WithCancel(ctx)
	goneErr := make(chan error, 1)
	go func() { _, _, _, err := c.Accept(gone); goneErr <- err }()
	time.Sleep(100 * time.Millisecond) // let it park
	cancelGone()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Accept = %v, want context.Canceled", err)
	}
	time.Sleep(50 * time.Millisecond) // let the server notice

	// The inbound connection arrives while no accept stream is parked: it waits.
	in, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(remote))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	_ = in.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := in.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, port, peer, err := c.Accept(actx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer stream.Close()
	if port != remote {
		t.Errorf("port = %d, want %d", port, remote)
	}
	if want := in.LocalAddr().String(); peer != want || stream.RemoteAddr().String() != want {
		t.Errorf("peer = %q, RemoteAddr = %v; want %q", peer, stream.RemoteAddr(), want)
	}
	_ = stream.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(stream, got); err != nil || string(got) != "ping" {
		t.Fatalf("stream read %q, %v; want ping", got, err)
	}
	if _, err := stream.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if err := stream.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(in)
	if err != nil || string(back) != "pong" {
		t.Fatalf("inbound read %q, %v; want pong then EOF", back, err)
	}

	// A second inbound connection reaches a freshly parked stream.
	in2, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(remote))
	if err != nil {
		t.Fatal(err)
	}
	defer in2.Close()
	s2, port2, _, err := c.Accept(actx)
	if err != nil || port2 != remote {
		t.Fatalf("second Accept = port %d, %v", port2, err)
	}
	s2.Close()
}

func TestExposeErrors(t *testing.T) {
	rs := startRevServer(t, &Server{Token: revToken})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	free := freePort(t)
	many := make([]int, tunnel.MaxExposePorts+1)
	for i := range many {
		many[i] = 40000 + i
	}
	tests := []struct {
		name     string
		ports    []int
		wantCode string
		wantMsg  []string
	}{
		{name: "no ports", ports: nil, wantCode: tunnel.CodeBadRequest, wantMsg: []string{"no ports"}},
		{name: "port 0", ports: []int{0}, wantCode: tunnel.CodeBadRequest, wantMsg: []string{"port 0 out of range"}},
		{name: "port too large", ports: []int{70000}, wantCode: tunnel.CodeBadRequest, wantMsg: []string{"port 70000 out of range"}},
		{name: "too many", ports: many, wantCode: tunnel.CodeBadRequest, wantMsg: []string{"at most 64"}},
		{name: "busy", ports: []int{busyPort}, wantCode: tunnel.CodeError,
			wantMsg: []string{"port " + strconv.Itoa(busyPort), "address already in use"}},
		{name: "free then busy", ports: []int{free, busyPort}, wantCode: tunnel.CodeError,
			wantMsg: []string{"port " + strconv.Itoa(busyPort), "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			exp, err := rs.client().Expose(ctx, tt.ports)
			if err == nil {
				exp.Close()
				t.Fatal("Expose succeeded")
			}
			var de *tunnel.RemoteError
			if !errors.As(err, &de) || de.Code != tt.wantCode {
				t.Fatalf("Expose error = %v, want code %q", err, tt.wantCode)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Expose error = %q, want it to mention %q", err, m)
				}
			}
			// A failed request leaves nothing listening.
			if !dialFails(free, time.Second) {
				t.Errorf("port %d still listening after a failed expose", free)
			}
		})
	}

	t.Run("Forwarder.Run reports it", func(t *testing.T) {
		f := &expose.Forwarder{Client: rs.client(), Ports: map[int]int{busyPort: free}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := f.Run(ctx)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			t.Fatalf("Run = %v (ctx %v), want the expose error at once", err, ctx.Err())
		}
	})
}

func TestExposeSharedAcrossStreams(t *testing.T) {
	rs := startRevServer(t, &Server{Token: revToken})
	c := rs.client()
	port := freePort(t)
	ctx := context.Background()
	e1, err := c.Expose(ctx, []int{port, port})
	if err != nil {
		t.Fatalf("first Expose: %v", err)
	}
	e2, err := c.Expose(ctx, []int{port})
	if err != nil {
		t.Fatalf("second Expose of the same port: %v", err)
	}
	e1.Close()
	select {
	case <-e1.(interface{ Done() <-chan struct{} }).Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after Close")
	}
	time.Sleep(100 * time.Millisecond) // let the server see the first stream end
	if !dialSucceeds(port) {
		t.Fatal("port closed while another expose stream still wants it")
	}
	e2.Close()
	if !dialFails(port, 2*time.Second) {
		t.Fatal("port still listening after every expose stream closed")
	}
}

func dialSucceeds(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestReverseServeEnd(t *testing.T) {
	t.Run("idle timeout with parked accept streams", func(t *testing.T) {
		const idle = 300 * time.Millisecond
		rs := startRevServer(t, &Server{Token: revToken, IdleTimeout: idle})
		local := localEcho(t)
		remote := freePort(t)
		start := time.Now()
		startForwarder(t, rs.client(), map[int]int{remote: local}, 4)
		if err := echoThrough(remote, []byte("before idle")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-rs.errc:
			if !errors.Is(err, ErrIdle) {
				t.Fatalf("Serve = %v, want ErrIdle", err)
			}
			if d := time.Since(start); d < idle {
				t.Fatalf("Serve returned after %v, before the idle timeout", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("parked accept streams kept the server alive")
		}
		if dialSucceeds(remote) {
			t.Fatal("exposed port still listening after Serve returned")
		}
	})
	t.Run("cancel resets waiting connections", func(t *testing.T) {
		rs := startRevServer(t, &Server{Token: revToken})
		remote := freePort(t)
		exp, err := rs.client().Expose(context.Background(), []int{remote})
		if err != nil {
			t.Fatal(err)
		}
		defer exp.Close()
		in, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(remote))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		time.Sleep(50 * time.Millisecond) // let the server queue it
		rs.cancel()
		<-rs.done
		if err := <-rs.errc; err != nil {
			t.Fatalf("Serve = %v, want nil after cancel", err)
		}
		if dialSucceeds(remote) {
			t.Fatal("exposed port still listening after Serve returned")
		}
		_ = in.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := in.Read(make([]byte, 1)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("waiting connection read = %d, %v; want a reset well before %v", n, err, tunnel.AcceptWait)
		}
		select {
		case <-exp.(interface{ Done() <-chan struct{} }).Done():
		case <-time.After(2 * time.Second):
			t.Fatal("expose stream's Done not closed after the server stopped")
		}
	})
}

// TestReadyAfterExpose: the readiness listener opens only once ports are exposed.
func TestReadyAfterExpose(t *testing.T) {
	ready := freePort(t)
	rs := startRevServer(t, &Server{Token: revToken, ReadyAddr: "127.0.0.1:" + strconv.Itoa(ready)})
	if dialSucceeds(ready) {
		t.Fatal("ready before any expose")
	}
	e, err := rs.client().Expose(context.Background(), []int{freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	deadline := time.Now().Add(2 * time.Second)
	for !dialSucceeds(ready) {
		if time.Now().After(deadline) {
			t.Fatal("not ready after expose")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
