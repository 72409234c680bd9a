package podshim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	laptop "github.com/kubectl-tp/kubectl-tp/intercept"
	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// These tests run a Server in router mode on loopback: its Service ports are loopback
// listeners, the shadow Service resolves (through RouterConfig.Resolve) to a fake pod IP that
// Server.Dial maps to a loopback "real pod" HTTP server, and sessions are laptop-side
// Forwarders (package intercept) on their own multiplexed tunnels, each with its own local
// HTTP server. Every HTTP server answers with its name.

// rtGuard bounds every wait: a hang guard, not a synchronisation.
const rtGuard = 30 * time.Second

// rtNamed starts an HTTP server answering name and returns its address.
func rtNamed(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// rtRouter is a running router.
type rtRouter struct {
	srv    *Server
	rev    *revServer
	ports  map[int]string // Service target port -> router listener
	log    *testnet.Log
	shadow []string // what the shadow Service resolves to
	mu     sync.Mutex
}

var rtPorts = []int{8080, 9090}

// startRtRouter starts a router for rtPorts; the real pods answer "real".
func startRtRouter(t *testing.T, edit func(*RouterConfig)) *rtRouter {
	t.Helper()
	r := &rtRouter{ports: map[int]string{}, log: &testnet.Log{}, shadow: []string{"10.9.0.1"}}
	real := map[string]string{}
	lns := map[int]net.Listener{}
	for _, p := range rtPorts {
		real[fmt.Sprintf("10.9.0.1:%d", p)] = rtNamed(t, "real")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[p], r.ports[p] = ln, ln.Addr().String()
	}
	cfg := &RouterConfig{
		Ports:  rtPorts,
		Shadow: "api-tp-shadow.ns.svc.cluster.local",
		Resolve: func(ctx context.Context, host string) ([]string, error) {
			if host != "api-tp-shadow.ns.svc.cluster.local" {
				return nil, fmt.Errorf("unexpected host %q", host)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			return append([]string(nil), r.shadow...), nil
		},
		Listen: func(port int) (net.Listener, error) { return lns[port], nil },
	}
	if edit != nil {
		edit(cfg)
	}
	r.srv = &Server{
		Token:  revToken,
		Router: cfg,
		Logf:   r.log.Logf,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			to, ok := real[addr]
			if !ok {
				return nil, fmt.Errorf("dial %s: no such pod", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, to)
		},
	}
	r.rev = startRevServer(t, r.srv)
	// Serve accepts streams only once the router is up.
	ctx, cancel := context.WithTimeout(context.Background(), rtGuard)
	defer cancel()
	if _, err := r.tunnelVia(r.dialTunnel).Hello(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor waits until cond holds for the router's status.
func (r *rtRouter) waitFor(t *testing.T, what string, cond func(RouterStatus) bool) RouterStatus {
	t.Helper()
	guard := time.After(rtGuard)
	for {
		st, ok := r.srv.RouterStatus()
		if !ok {
			t.Fatal("the server is not serving in router mode")
		}
		if cond(st) {
			return st
		}
		select {
		case <-st.Changed:
		case <-guard:
			t.Fatalf("router status never came to: %s", what)
		}
	}
}

func hasOwner(owner string) func(RouterStatus) bool {
	return func(st RouterStatus) bool {
		for _, ic := range st.Intercepts {
			if ic.Owner == owner {
				return true
			}
		}
		return false
	}
}

func not(f func(RouterStatus) bool) func(RouterStatus) bool {
	return func(st RouterStatus) bool { return !f(st) }
}

// tunnelVia returns a multiplexed tunnel client to the router, dialled through dial.
func (r *rtRouter) tunnelVia(dial func(ctx context.Context) (net.Conn, error)) *tunnel.Client {
	m := &tunnel.Mux{Token: revToken, Carrier: dial}
	return &tunnel.Client{Token: revToken, Open: m.Open}
}

func (r *rtRouter) dialTunnel(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", r.rev.addr)
}

// session starts a laptop-side Forwarder for owner with headers, forwarding port 8080 to a
// local HTTP server answering owner. It returns the Forwarder and a channel with Run's result.
func (r *rtRouter) session(t *testing.T, c *tunnel.Client, owner string, headers ...string) (*laptop.Forwarder, <-chan error) {
	t.Helper()
	local := rtNamed(t, owner)
	_, port, _ := net.SplitHostPort(local)
	var lp int
	fmt.Sscan(port, &lp)
	f := &laptop.Forwarder{Client: c, Match: headers, Owner: owner, Ports: map[int]int{8080: lp}, Logf: r.log.Logf}
	if err := f.Start(context.Background()); err != nil {
		t.Fatalf("%s: Start: %v", owner, err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	t.Cleanup(func() {
		f.Close()
		select {
		case <-done:
		case <-time.After(rtGuard):
			t.Errorf("%s: Run did not return after Close", owner)
		}
	})
	return f, done
}

// rtGet sends one GET on c (read through br) with the X-Dev header (none if empty) and returns
// the body of the answer.
func rtGet(c net.Conn, br *bufio.Reader, dev string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(rtGuard))
	req := "GET / HTTP/1.1\r\nHost: api\r\n"
	if dev != "" {
		req += "X-Dev: " + dev + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("status %d: %s", resp.StatusCode, b), err
	}
	return string(b), err
}

// get sends one request on a new connection to the router's port.
func (r *rtRouter) get(t *testing.T, port int, dev string) string {
	t.Helper()
	c, err := net.Dial("tcp", r.ports[port])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body, err := rtGet(c, bufio.NewReader(c), dev)
	if err != nil {
		t.Fatalf("GET with x-dev=%q: %v", dev, err)
	}
	return body
}

func TestRouterRoutesPerSession(t *testing.T) {
	r := startRtRouter(t, func(rc *RouterConfig) {
		rc.SessionTimeout = time.Hour // removals below can only come from streams ending
	})
	alice, _ := r.session(t, r.tunnelVia(r.dialTunnel), "alice@laptop", "x-dev=alice")
	r.session(t, r.tunnelVia(r.dialTunnel), "bob@laptop", "x-dev=bob")

	for _, tc := range []struct{ dev, want string }{
		{"", "real"}, {"alice", "alice@laptop"}, {"bob", "bob@laptop"}, {"carol", "real"},
	} {
		if got := r.get(t, 8080, tc.dev); got != tc.want {
			t.Errorf("x-dev=%q on a new connection went to %q, want %q", tc.dev, got, tc.want)
		}
	}
	// Port 9090 is not intercepted by either session.
	if got := r.get(t, 9090, "alice"); got != "real" {
		t.Errorf("x-dev=alice on port 9090 went to %q, want real", got)
	}

	t.Run("one kept-alive connection", func(t *testing.T) {
		c, err := net.Dial("tcp", r.ports[8080])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for i, dev := range []string{"alice", "", "bob", "alice", "bob", ""} {
			want := map[string]string{"alice": "alice@laptop", "bob": "bob@laptop", "": "real"}[dev]
			got, err := rtGet(c, br, dev)
			if err != nil {
				t.Fatalf("request %d (x-dev=%q): %v", i, dev, err)
			}
			if got != want {
				t.Errorf("request %d (x-dev=%q) went to %q, want %q", i, dev, got, want)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		list, err := r.tunnelVia(r.dialTunnel).Intercepts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 {
			t.Fatalf("list = %+v, want alice and bob", list)
		}
		for i, want := range []struct{ owner, header string }{{"alice@laptop", "X-Dev=alice"}, {"bob@laptop", "X-Dev=bob"}} {
			ic := list[i]
			if ic.Owner != want.owner || len(ic.Headers) != 1 || ic.Headers[0] != want.header ||
				len(ic.Ports) != 1 || ic.Ports[0] != 8080 || ic.Started.IsZero() || ic.Age < 0 || ic.ID == "" {
				t.Errorf("list[%d] = %+v, want owner %s, headers [%s], ports [8080], a start and an age", i, ic, want.owner, want.header)
			}
		}
	})

	t.Run("clash names the owner", func(t *testing.T) {
		f := &laptop.Forwarder{Client: r.tunnelVia(r.dialTunnel), Match: []string{"X-DEV=alice"}, Owner: "mallory@laptop", Ports: map[int]int{8080: 1}}
		err := f.Start(context.Background())
		var re *tunnel.RemoteError
		if !errors.As(err, &re) || re.Code != tunnel.CodeConflict {
			t.Fatalf("Start = %v, want a %s refusal", err, tunnel.CodeConflict)
		}
		started := alice.Started.Format(time.RFC3339)
		if !strings.Contains(err.Error(), "alice@laptop") || !strings.Contains(err.Error(), started) || strings.Contains(err.Error(), "tunnel:") {
			t.Errorf("clash error %q should name alice@laptop and her start %s, verbatim", err, started)
		}
	})

	t.Run("closing alice's registration", func(t *testing.T) {
		alice.Close()
		r.waitFor(t, "alice removed", not(hasOwner("alice@laptop")))
		if got := r.get(t, 8080, "alice"); got != "real" {
			t.Errorf("after alice closed, x-dev=alice went to %q, want real", got)
		}
		if got := r.get(t, 8080, "bob"); got != "bob@laptop" {
			t.Errorf("after alice closed, x-dev=bob went to %q, want bob@laptop", got)
		}
		if n := r.log.Count("of alice@laptop removed"); n != 1 {
			t.Errorf("%d removal lines for a closed registration, want 1:\n%s", n, strings.Join(r.log.Lines(), "\n"))
		}
	})
}

// freezer is a TCP proxy that can stop carrying bytes without closing anything: a laptop that
// vanished (unplugged, suspended).
type freezer struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once
}

func newFreezer(t *testing.T, to string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, frozen: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", to)
			if err != nil {
				a.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, a, b)
			mu.Unlock()
			go f.copy(a, b)
			go f.copy(b, a)
		}
	}()
	return f
}

func (f *freezer) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-f.frozen:
			return // drop everything from now on, closing nothing
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() { f.once.Do(func() { close(f.frozen) }) }

func (f *freezer) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.ln.Addr().String())
}

func TestRouterRemovesVanishedSession(t *testing.T) {
	const timeout = 300 * time.Millisecond
	r := startRtRouter(t, func(rc *RouterConfig) { rc.SessionTimeout = timeout })
	fz := newFreezer(t, r.rev.addr)
	r.session(t, r.tunnelVia(fz.dial), "alice@laptop", "x-dev=alice")
	r.session(t, r.tunnelVia(r.dialTunnel), "bob@laptop", "x-dev=bob")
	if got := r.get(t, 8080, "alice"); got != "alice@laptop" {
		t.Fatalf("x-dev=alice went to %q before the freeze", got)
	}
	fz.freeze()
	r.waitFor(t, "alice removed", not(hasOwner("alice@laptop")))
	if n := r.log.Count("no ping for " + timeout.String()); n != 1 {
		t.Errorf("want one removal for a missing ping, log:\n%s", strings.Join(r.log.Lines(), "\n"))
	}
	if got := r.get(t, 8080, "alice"); got != "real" {
		t.Errorf("after alice vanished, x-dev=alice went to %q, want real", got)
	}
	// Bob has been registered longer than the timeout; his pings kept him.
	if got := r.get(t, 8080, "bob"); got != "bob@laptop" {
		t.Errorf("x-dev=bob went to %q, want bob@laptop", got)
	}
	if st, _ := r.srv.RouterStatus(); !hasOwner("bob@laptop")(st) || len(st.Intercepts) != 1 {
		t.Errorf("status = %+v, want bob only", st.Intercepts)
	}
}

// rawRequest sends one request on a plain (not multiplexed) stream to addr and returns the stream
// and the response.
func rawRequest(t *testing.T, addr string, req *tunnel.Request) (net.Conn, *tunnel.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(rtGuard))
	req.Token = revToken
	if err := tunnel.WriteFrame(c, req); err != nil {
		t.Fatal(err)
	}
	var resp tunnel.Response
	if err := tunnel.ReadFrame(c, &resp); err != nil {
		t.Fatal(err)
	}
	return c, &resp
}

func TestRouterRefusals(t *testing.T) {
	r := startRtRouter(t, nil)
	// Alice's registration stays open until the test ends (rawRequest's cleanup).
	_, resp := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=alice"}, Owner: "alice@laptop", Ports: []int{8080, 9090}})
	if !resp.OK || resp.Intercept == "" || resp.PingMillis <= 0 {
		t.Fatalf("registration = %+v", resp)
	}
	for _, tc := range []struct {
		name string
		req  tunnel.Request
		code string
		msg  string
	}{
		{"no ports", tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=x"}}, tunnel.CodeBadRequest, "[8080 9090]"},
		{"port not served", tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=x"}, Ports: []int{7000}}, tunnel.CodeBadRequest, "port 7000 is not a target port"},
		{"bad header", tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev"}, Ports: []int{8080}}, tunnel.CodeBadRequest, "NAME=VALUE"},
		{"clash on one port", tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"X-Dev=alice"}, Owner: "mallory", Ports: []int{9090}}, tunnel.CodeConflict, "already intercepted by alice@laptop"},
		{"header-less next to alice", tunnel.Request{Op: tunnel.OpIntercept, Ports: []int{8080}}, tunnel.CodeConflict, "alice@laptop"},
		{"unknown accept key", tunnel.Request{Op: tunnel.OpInterceptAccept, Intercept: "nope"}, tunnel.CodeBadRequest, "no such intercept"},
		{"non-router op", tunnel.Request{Op: tunnel.OpDial, Network: "tcp", Addr: "10.9.0.1:8080"}, tunnel.CodeBadRequest, "not served by an intercept router"},
		{"expose on a router", tunnel.Request{Op: tunnel.OpExpose, Ports: []int{1234}}, tunnel.CodeBadRequest, "not served by an intercept router"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp := rawRequest(t, r.rev.addr, &tc.req)
			if resp.OK || resp.Code != tc.code || !strings.Contains(resp.Error, tc.msg) || strings.Contains(resp.Error, "\n") {
				t.Errorf("response = %+v, want one line of code %s containing %q", resp, tc.code, tc.msg)
			}
		})
	}
	if st, _ := r.srv.RouterStatus(); len(st.Intercepts) != 1 {
		t.Errorf("refused registrations left traces: %+v", st.Intercepts)
	}

	t.Run("intercept ops on an ordinary podshim", func(t *testing.T) {
		rs := startRevServer(t, &Server{Token: revToken})
		for _, op := range []string{tunnel.OpIntercept, tunnel.OpInterceptAccept, tunnel.OpInterceptList} {
			_, resp := rawRequest(t, rs.addr, &tunnel.Request{Op: op, Ports: []int{8080}})
			if resp.OK || !strings.Contains(resp.Error, "not an intercept router") {
				t.Errorf("%s = %+v, want a refusal", op, resp)
			}
		}
	})

	t.Run("anything but a ping ends the registration", func(t *testing.T) {
		c, resp := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=carol"}, Ports: []int{8080}, Owner: "carol"})
		if !resp.OK {
			t.Fatal(resp)
		}
		r.waitFor(t, "carol registered", hasOwner("carol"))
		tunnel.WriteFrame(c, &tunnel.Request{Op: tunnel.OpDial})
		var bad tunnel.Response
		if err := tunnel.ReadFrame(c, &bad); err != nil || bad.Code != tunnel.CodeBadRequest {
			t.Errorf("answer to a dial on a registration stream = %+v, %v", bad, err)
		}
		r.waitFor(t, "carol removed", not(hasOwner("carol")))
	})
}

func TestRouterReplaceOwnRegistration(t *testing.T) {
	r := startRtRouter(t, func(rc *RouterConfig) { rc.SessionTimeout = time.Hour })
	req := tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=alice"}, Owner: "alice@laptop", Ports: []int{8080}}
	old, resp := rawRequest(t, r.rev.addr, &req)
	if !resp.OK {
		t.Fatal(resp)
	}
	// Without the key the same request clashes with itself; with it, it replaces.
	if _, again := rawRequest(t, r.rev.addr, &req); again.Code != tunnel.CodeConflict {
		t.Errorf("second registration without the key = %+v, want a clash", again)
	}
	req.Intercept = resp.Intercept
	_, repl := rawRequest(t, r.rev.addr, &req)
	if !repl.OK || repl.Intercept == resp.Intercept {
		t.Fatalf("replacing = %+v, want OK with a new key", repl)
	}
	// The old stream is ended by the router.
	if _, err := old.Read(make([]byte, 1)); err == nil {
		t.Error("the replaced registration's stream is still open")
	}
	_, acc := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpInterceptAccept, Intercept: resp.Intercept})
	if acc.OK {
		t.Error("the replaced registration's key still parks accept streams")
	}
	if st, _ := r.srv.RouterStatus(); len(st.Intercepts) != 1 {
		t.Errorf("status = %+v, want one registration", st.Intercepts)
	}
}

func TestRouterFallsBackToRealPods(t *testing.T) {
	r := startRtRouter(t, nil)

	t.Run("no parked stream", func(t *testing.T) {
		_, resp := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=idle"}, Owner: "idle@laptop", Ports: []int{8080}})
		if !resp.OK {
			t.Fatal(resp)
		}
		if got := r.get(t, 8080, "idle"); got != "real" {
			t.Errorf("x-dev=idle without accept streams went to %q, want real", got)
		}
		if r.log.Count("idle@laptop's session parked no stream") != 1 {
			t.Errorf("want one line about the missing stream:\n%s", strings.Join(r.log.Lines(), "\n"))
		}
	})

	t.Run("local process down", func(t *testing.T) {
		c := r.tunnelVia(r.dialTunnel)
		f := &laptop.Forwarder{Client: c, Match: []string{"x-dev=down"}, Owner: "down@laptop", Ports: map[int]int{8080: freePort(t)}, Logf: r.log.Logf}
		done := make(chan error, 1)
		go func() { done <- f.Run(context.Background()) }()
		defer func() { f.Close(); <-done }()
		r.waitFor(t, "down registered", hasOwner("down@laptop"))
		for range 2 {
			if got := r.get(t, 8080, "down"); got != "real" {
				t.Errorf("x-dev=down with nothing listening locally went to %q, want real", got)
			}
		}
		if n := r.log.Count("intercept: nothing listens on 127.0.0.1"); n != 1 {
			t.Errorf("%d laptop lines about the local port, want 1 (state changes only):\n%s", n, strings.Join(r.log.Lines(), "\n"))
		}
	})

	t.Run("no real pods", func(t *testing.T) {
		r.mu.Lock()
		r.shadow = nil
		r.mu.Unlock()
		if got := r.get(t, 8080, ""); !strings.HasPrefix(got, "status 502") {
			t.Errorf("without real pods = %q, want a 502", got)
		}
		if r.log.Count("has no ready endpoints") != 1 {
			t.Errorf("want one line naming the empty shadow service:\n%s", strings.Join(r.log.Lines(), "\n"))
		}
	})
}

func TestRouterIdleStatus(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	r := startRtRouter(t, func(rc *RouterConfig) {
		rc.SessionTimeout = time.Hour
		rc.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	advance(time.Minute)
	if st, _ := r.srv.RouterStatus(); st.IdleFor != time.Minute {
		t.Errorf("IdleFor = %v a minute after start, want 1m", st.IdleFor)
	}
	c, resp := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=a"}, Owner: "a", Ports: []int{8080}})
	if !resp.OK {
		t.Fatal(resp)
	}
	advance(time.Hour)
	st := r.waitFor(t, "a registered", hasOwner("a"))
	if st.IdleFor != 0 || st.Intercepts[0].Age != time.Hour {
		t.Errorf("with a registration: IdleFor = %v, age %v; want 0 and 1h", st.IdleFor, st.Intercepts[0].Age)
	}
	c.Close()
	r.waitFor(t, "a removed", not(hasOwner("a")))
	advance(5 * time.Second)
	if st, _ := r.srv.RouterStatus(); st.IdleFor != 5*time.Second {
		t.Errorf("IdleFor = %v 5s after the last removal, want 5s", st.IdleFor)
	}
	if _, ok := (&Server{}).RouterStatus(); ok {
		t.Error("RouterStatus of a server not in router mode reports ok")
	}
}

func TestRouterConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RouterConfig
		want string
	}{
		{"no ports", RouterConfig{Shadow: "s"}, "no ports"},
		{"no shadow", RouterConfig{Ports: []int{8080}}, "shadow"},
		{"busy port", RouterConfig{Ports: []int{8080}, Shadow: "s", Listen: func(int) (net.Listener, error) { return nil, errors.New("address in use") }}, "port 8080: address in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = (&Server{Router: &tc.cfg}).Serve(context.Background(), ln)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Serve = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestRouterRetire: the router retires only with no intercept registered, through the op as
// through RetireRouter, and refuses every registration afterwards with CodeRetiring.
func TestRouterRetire(t *testing.T) {
	r := startRtRouter(t, func(rc *RouterConfig) { rc.SessionTimeout = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), rtGuard)
	defer cancel()
	client := r.tunnelVia(r.dialTunnel)
	c, resp := rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=a"}, Owner: "a", Ports: []int{8080}})
	if !resp.OK {
		t.Fatal(resp)
	}
	r.waitFor(t, "a registered", hasOwner("a"))
	if retired, err := client.RetireRouter(ctx); retired || err != nil {
		t.Fatalf("retired with an intercept registered: %v %v", retired, err)
	}
	c.Close()
	r.waitFor(t, "a removed", not(hasOwner("a")))
	if retired, err := client.RetireRouter(ctx); !retired || err != nil {
		t.Fatalf("not retired with no intercept: %v %v", retired, err)
	}
	if st, _ := r.srv.RouterStatus(); !st.Retiring {
		t.Error("status does not say retiring")
	}
	if !r.srv.RetireRouter() {
		t.Error("a second retirement is refused")
	}
	_, resp = rawRequest(t, r.rev.addr, &tunnel.Request{Op: tunnel.OpIntercept, Headers: []string{"x-dev=b"}, Owner: "b", Ports: []int{8080}})
	if resp.OK || resp.Code != tunnel.CodeRetiring {
		t.Fatalf("a registration after the retirement: %+v", resp)
	}
}
