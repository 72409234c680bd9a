package podshim_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

const testToken = "s3cret"

// listen returns a loopback TCP listener closed at the end of the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// echoServer starts a loopback echo server that half-closes after the client does.
func echoServer(t *testing.T) string { return testnet.Echo(t) }

// refusingAddr returns a loopback address where nothing listens.
func refusingAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// fakeDial maps cluster names to loopback addresses; unknown names do not exist.
func fakeDial(names map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		real, ok := names[addr]
		if !ok {
			host, _, _ := net.SplitHostPort(addr)
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, real)
	}
}

// startServer runs srv on a loopback listener and returns its address and a
// channel that receives Serve's result.
func startServer(t *testing.T, srv *podshim.Server) (string, <-chan error) {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		errc <- srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return ln.Addr().String(), errc
}

// newClient returns a client whose streams are multiplexed on a carrier to addr, as in production.
func newClient(addr, token string) *tunnel.Client {
	c, _, _ := muxClient(addr, token)
	return c
}

// directClient returns a client that opens one TCP connection to addr per stream (what a carrier
// is, and what every stream was before the multiplexer).
func directClient(addr, token string) *tunnel.Client {
	return &tunnel.Client{
		Token: token,
		Open: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
}

func TestDial(t *testing.T) {
	names := map[string]string{
		"echo.svc:80":   echoServer(t),
		"closed.svc:80": refusingAddr(t),
	}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	tests := []struct {
		name     string
		token    string
		network  string
		addr     string
		wantCode string // "" means success
	}{
		{"ok", testToken, "tcp", "echo.svc:80", ""},
		{"refused", testToken, "tcp", "closed.svc:80", tunnel.CodeRefused},
		{"nxdomain", testToken, "tcp", "nosuch.svc:80", tunnel.CodeNXDomain},
		{"bad token", "wrong", "tcp", "echo.svc:80", tunnel.CodeAuth},
		{"no token", "", "tcp", "echo.svc:80", tunnel.CodeAuth},
		{"udp", testToken, "udp", "echo.svc:80", tunnel.CodeBadRequest},
	}
	transports := []struct {
		name   string
		client func(addr, token string) *tunnel.Client
	}{{"mux", newClient}, {"direct", directClient}}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := tr.client(addr, tt.token).DialContext(ctx, tt.network, tt.addr)
				if tt.wantCode == "" {
					if err != nil {
						t.Fatalf("DialContext: %v", err)
					}
					c.Close()
					return
				}
				var de *tunnel.RemoteError
				if !errors.As(err, &de) || de.Code != tt.wantCode {
					t.Fatalf("DialContext error = %v, want code %q", err, tt.wantCode)
				}
			})
		}
	}
}

func TestDialEchoHalfClose(t *testing.T) {
	names := map[string]string{"echo.svc:80": echoServer(t)}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, Dial: fakeDial(names)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := newClient(addr, testToken).DialContext(ctx, "tcp", "echo.svc:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "echo.svc:80" {
		t.Errorf("RemoteAddr = %q, want echo.svc:80", got)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := strings.Repeat("ping-", 50000)
	go func() {
		io.WriteString(c, payload)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if string(got) != payload {
		t.Fatalf("echo returned %d bytes, want %d", len(got), len(payload))
	}
}

func TestOversizedFrameRejected(t *testing.T) {
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], tunnel.MaxFrameSize+1)
	if _, err := c.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	var resp tunnel.Response
	if err := tunnel.ReadFrame(c, &resp); err != nil {
		t.Fatalf("reading response: %v", err)
	}
	if resp.OK || resp.Code != tunnel.CodeBadRequest {
		t.Fatalf("response = %+v, want code %q", resp, tunnel.CodeBadRequest)
	}
}

func TestUnknownOp(t *testing.T) {
	addr, _ := startServer(t, &podshim.Server{Token: testToken})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tunnel.WriteFrame(c, &tunnel.Request{Op: "frobnicate", Token: testToken}); err != nil {
		t.Fatal(err)
	}
	var resp tunnel.Response
	if err := tunnel.ReadFrame(c, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.OK || resp.Code != tunnel.CodeBadRequest {
		t.Fatalf("response = %+v, want code %q", resp, tunnel.CodeBadRequest)
	}
}

func TestIdle(t *testing.T) {
	const idle = 200 * time.Millisecond
	t.Run("no clients", func(t *testing.T) {
		start := time.Now()
		_, errc := startServer(t, &podshim.Server{Token: testToken, IdleTimeout: idle})
		select {
		case err := <-errc:
			if !errors.Is(err, podshim.ErrIdle) {
				t.Fatalf("Serve = %v, want ErrIdle", err)
			}
			if d := time.Since(start); d < idle {
				t.Fatalf("Serve returned after %v, before the idle timeout", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return ErrIdle")
		}
	})
	t.Run("heartbeats keep it alive", func(t *testing.T) {
		addr, errc := startServer(t, &podshim.Server{Token: testToken, IdleTimeout: idle})
		ctx, cancel := context.WithCancel(context.Background())
		hb := make(chan error, 1)
		go func() { hb <- newClient(addr, testToken).Heartbeat(ctx, idle/4) }()
		select {
		case err := <-errc:
			t.Fatalf("Serve returned %v while heartbeats flowed", err)
		case err := <-hb:
			t.Fatalf("Heartbeat returned early: %v", err)
		case <-time.After(5 * idle):
		}
		cancel()
		if err := <-hb; !errors.Is(err, context.Canceled) {
			t.Errorf("Heartbeat = %v, want context.Canceled", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, podshim.ErrIdle) {
				t.Fatalf("Serve = %v, want ErrIdle", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return ErrIdle after heartbeats stopped")
		}
	})
	t.Run("wrong token is not heard", func(t *testing.T) {
		addr, errc := startServer(t, &podshim.Server{Token: testToken, IdleTimeout: idle})
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(idle / 4):
					newClient(addr, "wrong").Hello(context.Background())
				}
			}
		}()
		select {
		case err := <-errc:
			if !errors.Is(err, podshim.ErrIdle) {
				t.Fatalf("Serve = %v, want ErrIdle", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("unauthenticated requests kept the server alive")
		}
	})
}

func TestHeartbeatFailsWhenServerGoes(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- (&podshim.Server{Token: testToken}).Serve(ctx, ln) }()
	hb := make(chan error, 1)
	go func() {
		hb <- newClient(ln.Addr().String(), testToken).Heartbeat(context.Background(), 20*time.Millisecond)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	select {
	case err := <-hb:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("Heartbeat = %v, want a stream error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Heartbeat did not notice the server going away")
	}
}

// fakeNameserver is an authoritative loopback DNS server for cluster.local that
// records the names it was asked.
type fakeNameserver struct {
	mu    sync.Mutex
	asked []string
}

func (f *fakeNameserver) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	f.mu.Lock()
	f.asked = append(f.asked, q.Name)
	f.mu.Unlock()
	m := new(dns.Msg).SetReply(r)
	switch {
	case q.Qtype == dns.TypeA && q.Name == "web.ns.svc.cluster.local.":
		m.Answer = append(m.Answer, mustRR("web.ns.svc.cluster.local. 5 IN A 127.0.0.1"))
	case q.Qtype == dns.TypeA && q.Name == "db.other.svc.cluster.local.":
		m.Answer = append(m.Answer, mustRR("db.other.svc.cluster.local. 6 IN A 127.0.0.1"))
	case q.Qtype == dns.TypeA && strings.HasPrefix(q.Name, "h") && strings.HasSuffix(q.Name, ".ns.svc.cluster.local."):
		var n int
		fmt.Sscanf(q.Name, "h%d.", &n)
		m.Answer = append(m.Answer, mustRR(fmt.Sprintf("%s %d IN A 127.0.0.1", q.Name, 100+n)))
	case q.Qtype == dns.TypeSRV && q.Name == "_http._tcp.web.ns.svc.cluster.local.":
		m.Answer = append(m.Answer, mustRR("_http._tcp.web.ns.svc.cluster.local. 5 IN SRV 0 100 80 web.ns.svc.cluster.local."))
	default:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

func (f *fakeNameserver) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func (f *fakeNameserver) reset() {
	f.mu.Lock()
	f.asked = nil
	f.mu.Unlock()
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// startNameserver runs f on a loopback UDP socket and returns its address.
func startNameserver(t *testing.T, f *fakeNameserver) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: f, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// dnsSetup starts a fake nameserver and a podshim using it with a Kubernetes-like
// resolv.conf, and returns a client and the nameserver.
func dnsSetup(t *testing.T) (*tunnel.Client, *fakeNameserver, *atomic.Int32) {
	ns := &fakeNameserver{}
	nsAddr := startNameserver(t, ns)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "nameserver 127.0.0.1\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, ResolvConf: rc, Nameservers: []string{nsAddr}})
	c := newClient(addr, testToken)
	var opens atomic.Int32
	open := c.Open
	c.Open = func(ctx context.Context) (net.Conn, error) {
		opens.Add(1)
		return open(ctx)
	}
	return c, ns, &opens
}

func TestExchangeSearchList(t *testing.T) {
	c, ns, _ := dnsSetup(t)
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		wantRcode int
		wantRR    string // first answer, "" for none
		wantAsked []string
	}{
		{
			name: "short name via first search domain", qname: "web.", qtype: dns.TypeA,
			wantRcode: dns.RcodeSuccess, wantRR: "web.\t5\tIN\tA\t127.0.0.1",
			wantAsked: []string{"web.ns.svc.cluster.local."},
		},
		{
			name: "name.namespace via second search domain", qname: "db.other.", qtype: dns.TypeA,
			wantRcode: dns.RcodeSuccess, wantRR: "db.other.\t6\tIN\tA\t127.0.0.1",
			wantAsked: []string{"db.other.ns.svc.cluster.local.", "db.other.svc.cluster.local."},
		},
		{
			name: "srv fully qualified passes through", qname: "_http._tcp.web.ns.svc.cluster.local.", qtype: dns.TypeSRV,
			wantRcode: dns.RcodeSuccess, wantRR: "_http._tcp.web.ns.svc.cluster.local.\t5\tIN\tSRV\t0 100 80 web.ns.svc.cluster.local.",
			wantAsked: []string{"_http._tcp.web.ns.svc.cluster.local."},
		},
		{
			name: "unknown name tries all then itself", qname: "nothere.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError,
			wantAsked: []string{"nothere.ns.svc.cluster.local.", "nothere.svc.cluster.local.", "nothere.cluster.local.", "nothere."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns.reset()
			q := new(dns.Msg).SetQuestion(tt.qname, tt.qtype)
			q.Id = 4242
			resp, err := c.Exchange(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Id != 4242 {
				t.Errorf("Id = %d, want 4242", resp.Id)
			}
			if resp.Rcode != tt.wantRcode {
				t.Errorf("Rcode = %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.wantRcode])
			}
			if len(resp.Question) != 1 || resp.Question[0].Name != tt.qname {
				t.Errorf("Question = %v, want name %s", resp.Question, tt.qname)
			}
			var got string
			if len(resp.Answer) > 0 {
				got = resp.Answer[0].String()
			}
			if got != tt.wantRR {
				t.Errorf("answer = %q, want %q", got, tt.wantRR)
			}
			if asked := ns.names(); strings.Join(asked, " ") != strings.Join(tt.wantAsked, " ") {
				t.Errorf("nameserver asked %v, want %v", asked, tt.wantAsked)
			}
		})
	}
}

func TestExchangeConcurrentSameID(t *testing.T) {
	c, _, opens := dnsSetup(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := new(dns.Msg).SetQuestion(fmt.Sprintf("h%d.", i), dns.TypeA)
			q.Id = 7
			resp, err := c.Exchange(context.Background(), q)
			if err != nil {
				errs <- err
				return
			}
			// The fake nameserver encodes the host number in the TTL.
			want := uint32(100 + i)
			if resp.Id != 7 || len(resp.Answer) != 1 || resp.Answer[0].Header().Ttl != want ||
				resp.Answer[0].Header().Name != q.Question[0].Name {
				errs <- fmt.Errorf("query %d: got %v, want id 7, owner %s and TTL %d", i, resp, q.Question[0].Name, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := opens.Load(); got != 1 {
		t.Errorf("opened %d DNS streams, want 1 shared stream", got)
	}
}

func TestExchangeReopensBrokenStream(t *testing.T) {
	c, _, opens := dnsSetup(t)
	var mu sync.Mutex
	var conns []net.Conn
	open := c.Open
	c.Open = func(ctx context.Context) (net.Conn, error) {
		conn, err := open(ctx)
		if err == nil {
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
		return conn, err
	}
	q := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	for i := range 2 {
		if _, err := c.Exchange(context.Background(), q); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		mu.Lock()
		for _, conn := range conns {
			conn.Close()
		}
		mu.Unlock()
	}
	if got := opens.Load(); got != 2 {
		t.Errorf("opened %d DNS streams, want 2", got)
	}
}

func TestHello(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch a.example b.example\noptions ndots:3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, &podshim.Server{Token: testToken, ResolvConf: rc})
	info, err := newClient(addr, testToken).Hello(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Version == "" || info.Ndots != 3 || strings.Join(info.Search, ",") != "a.example,b.example" ||
		strings.Join(info.Nameservers, ",") != "127.0.0.1" {
		t.Fatalf("Hello = %+v", info)
	}
}

func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../podshim", "../cmd/podshim", "../tunnel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list returned too little: %q", out)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "k8s.io/") {
			t.Errorf("podshim or tunnel depends on %s", l)
		}
	}
}

// malformedQuery is a correctly framed DNS message that does not parse: its question's name is a
// compression pointer to itself. Its ID is 0x1234.
var malformedQuery = []byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01}

// TestDNSStreamAnswersMalformedQuery: a query podshim cannot parse gets FORMERR at once, with its
// ID, so the asker does not wait out its time-out; the stream goes on serving.
func TestDNSStreamAnswersMalformedQuery(t *testing.T) {
	c, _, _ := dnsSetup(t)
	conn, err := c.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tunnel.WriteFrame(conn, &tunnel.Request{Op: tunnel.OpDNS, Token: testToken}); err != nil {
		t.Fatal(err)
	}
	var resp tunnel.Response
	if err := tunnel.ReadFrame(conn, &resp); err != nil || !resp.OK {
		t.Fatalf("opening the DNS stream: %v %+v", err, resp)
	}
	framed := append([]byte{0, byte(len(malformedQuery))}, malformedQuery...)
	if _, err := conn.Write(framed); err != nil {
		t.Fatal(err)
	}
	m, err := tunnel.ReadDNSMsg(conn)
	if err != nil {
		t.Fatalf("no answer to a malformed query: %v", err)
	}
	if m.Id != 0x1234 || m.Rcode != dns.RcodeFormatError || !m.Response {
		t.Fatalf("answer %v, want FORMERR with ID 0x1234", m)
	}
	q := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	q.Id = 7
	if err := tunnel.WriteDNSMsg(conn, q); err != nil {
		t.Fatal(err)
	}
	if m, err := tunnel.ReadDNSMsg(conn); err != nil || m.Id != 7 {
		t.Fatalf("the stream stopped serving after a malformed query: %v %v", m, err)
	}
}
