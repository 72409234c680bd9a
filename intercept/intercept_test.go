package intercept_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/intercept"
	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// These tests drive Forwarders against a real podshim in router mode on loopback; the shadow
// Service is a literal loopback IP whose target port maps (Server.Dial) to a "real" server.

const (
	token = "router-token"
	guard = 30 * time.Second // hang guard, not a synchronisation
)

func named(t *testing.T, name string) (addr string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port
}

type router struct {
	srv     *podshim.Server
	tunnel  string // podshim's tunnel listener
	service string // the router's listener for target port 8080
	log     testnet.Log
}

func startRouter(t *testing.T) *router {
	t.Helper()
	real, _ := named(t, "real")
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &router{tunnel: ln.Addr().String(), service: svc.Addr().String()}
	r.srv = &podshim.Server{
		Token: token,
		Logf:  r.log.Logf,
		Router: &podshim.RouterConfig{
			Ports: []int{8080}, Shadow: "127.0.0.9", SessionTimeout: time.Hour,
			Listen: func(int) (net.Listener, error) { return svc, nil },
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "127.0.0.9:8080" {
				return nil, fmt.Errorf("unexpected dial %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, real)
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	// Serve accepts streams only once the router is up.
	c, _ := r.client()
	hctx, hcancel := context.WithTimeout(context.Background(), guard)
	defer hcancel()
	if _, err := c.Hello(hctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// client returns a tunnel client on its own carrier, and the Mux to break it.
func (r *router) client() (*tunnel.Client, *tunnel.Mux) {
	m := &tunnel.Mux{Token: token, Carrier: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.tunnel)
	}}
	return &tunnel.Client{Token: token, Open: m.Open}, m
}

// waitFor waits until cond holds for the router's status.
func (r *router) waitFor(t *testing.T, what string, cond func(podshim.RouterStatus) bool) {
	t.Helper()
	deadline := time.After(guard)
	for {
		st, ok := r.srv.RouterStatus()
		if !ok {
			t.Fatal("not serving in router mode")
		}
		if cond(st) {
			return
		}
		select {
		case <-st.Changed:
		case <-deadline:
			t.Fatalf("never: %s", what)
		}
	}
}

// registered is the number of registrations by owner.
func registered(owner string) func(podshim.RouterStatus) int {
	return func(st podshim.RouterStatus) int {
		n := 0
		for _, ic := range st.Intercepts {
			if ic.Owner == owner {
				n++
			}
		}
		return n
	}
}

func (r *router) get(t *testing.T, dev string) string {
	t.Helper()
	c, err := net.Dial("tcp", r.service)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(guard))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: api\r\nX-Dev: %s\r\n\r\n", dev)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func run(t *testing.T, f *intercept.Forwarder) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	t.Cleanup(func() {
		f.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after Close = %v, want nil", err)
			}
		case <-time.After(guard):
			t.Error("Run did not return after Close")
		}
	})
}

func TestStartErrors(t *testing.T) {
	r := startRouter(t)
	c, _ := r.client()
	holder := &intercept.Forwarder{Client: c, Match: []string{"x-dev=alice"}, Owner: "alice@a", Ports: map[int]int{8080: 1}}
	if err := holder.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	for _, tc := range []struct {
		name  string
		f     *intercept.Forwarder
		want  string // the whole message, or its start
		code  string // of the *tunnel.RemoteError, if any
		exact bool
	}{
		{"clash", &intercept.Forwarder{Match: []string{"x-dev=alice"}, Owner: "bob@b", Ports: map[int]int{8080: 1}},
			"port 8080: headers X-Dev=alice are already intercepted by alice@a (started " + holder.Started.Format(time.RFC3339) + "): choose other headers, or wait until that session ends", tunnel.CodeConflict, true},
		{"bad header", &intercept.Forwarder{Match: []string{"x dev=a"}, Ports: map[int]int{8080: 1}}, `header name "x dev"`, tunnel.CodeBadRequest, false},
		{"port not served", &intercept.Forwarder{Match: []string{"x-dev=b"}, Ports: map[int]int{80: 1}}, "port 80 is not a target port of this service", tunnel.CodeBadRequest, false},
		{"no ports", &intercept.Forwarder{Match: []string{"x-dev=b"}}, "intercept: no ports", "", false},
		{"local port out of range", &intercept.Forwarder{Ports: map[int]int{8080: 0}}, "intercept: port 8080 -> local port 0", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.Client = c
			err := f.Start(context.Background())
			if err == nil {
				f.Close()
				t.Fatal("Start succeeded")
			}
			if tc.exact && err.Error() != tc.want || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Start = %q, want %q", err, tc.want)
			}
			var re *tunnel.RemoteError
			if got := errors.As(err, &re); got != (tc.code != "") || got && re.Code != tc.code {
				t.Errorf("Start = %#v, want a RemoteError with code %q", err, tc.code)
			}
		})
	}
}

func TestRegistersAgainAfterTunnelBreaks(t *testing.T) {
	r := startRouter(t)
	c, m := r.client()
	_, port := named(t, "alice")
	f := &intercept.Forwarder{Client: c, Match: []string{"x-dev=alice"}, Owner: "alice@a", Ports: map[int]int{8080: port}, Logf: r.log.Logf}
	run(t, f)
	var first string
	r.waitFor(t, "alice registered", func(st podshim.RouterStatus) bool {
		if registered("alice@a")(st) != 1 {
			return false
		}
		first = st.Intercepts[0].ID
		return true
	})
	if got := r.get(t, "alice"); got != "alice" {
		t.Fatalf("x-dev=alice went to %q before the break", got)
	}
	m.Redial() // the carrier breaks: every stream on it ends, the registration included
	r.waitFor(t, "alice registered again", func(st podshim.RouterStatus) bool {
		return registered("alice@a")(st) == 1 && st.Intercepts[0].ID != first
	})
	if got := r.get(t, "alice"); got != "alice" {
		t.Errorf("x-dev=alice went to %q after registering again", got)
	}
	for _, line := range []string{"intercept: the registration with the router was lost", "intercept: registered with the router again"} {
		if r.log.Count(line) != 1 {
			t.Errorf("want one line %q:\n%s", line, strings.Join(r.log.Lines(), "\n"))
		}
	}
}

func TestLocalProcessComesAndGoes(t *testing.T) {
	r := startRouter(t)
	c, _ := r.client()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens yet
	f := &intercept.Forwarder{Client: c, Match: []string{"x-dev=alice"}, Owner: "alice@a", Ports: map[int]int{8080: port}, Logf: r.log.Logf}
	run(t, f)
	r.waitFor(t, "alice registered", func(st podshim.RouterStatus) bool { return registered("alice@a")(st) == 1 })
	if got := r.get(t, "alice"); got != "real" {
		t.Errorf("with nothing listening locally x-dev=alice went to %q, want real", got)
	}
	ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("could not listen on the freed port again: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "alice") })}
	go srv.Serve(ln)
	defer srv.Close()
	if got := r.get(t, "alice"); got != "alice" {
		t.Errorf("once the local process listens x-dev=alice went to %q, want alice", got)
	}
	for _, line := range []string{"intercept: nothing listens on 127.0.0.1", "is reachable again; intercepted requests"} {
		if r.log.Count(line) != 1 {
			t.Errorf("want one line %q:\n%s", line, strings.Join(r.log.Lines(), "\n"))
		}
	}
}

func TestCloseBeforeRun(t *testing.T) {
	r := startRouter(t)
	c, _ := r.client()
	f := &intercept.Forwarder{Client: c, Match: []string{"x-dev=alice"}, Owner: "alice@a", Ports: map[int]int{8080: 1}}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "alice registered", func(st podshim.RouterStatus) bool { return registered("alice@a")(st) == 1 })
	f.Close()
	r.waitFor(t, "alice removed", func(st podshim.RouterStatus) bool { return registered("alice@a")(st) == 0 })
	if err := f.Run(context.Background()); err != nil {
		t.Errorf("Run after Close = %v, want nil", err)
	}
}
