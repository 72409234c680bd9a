package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// fakeDialer maps cluster names to loopback addresses and records what it was asked.
type fakeDialer struct {
	names map[string]string // "svc.ns:80" -> "127.0.0.1:port"
	codes map[string]string // "bad.ns:80" -> tunnel code

	mu    sync.Mutex
	asked []string
}

func (f *fakeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.asked = append(f.asked, addr)
	f.mu.Unlock()
	if code, ok := f.codes[addr]; ok {
		return nil, &tunnel.RemoteError{Code: code, Msg: "fake"}
	}
	real, ok := f.names[addr]
	if !ok {
		return nil, &tunnel.RemoteError{Code: tunnel.CodeNXDomain, Msg: addr}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (f *fakeDialer) lastAsked() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.asked) == 0 {
		return ""
	}
	return f.asked[len(f.asked)-1]
}

var _ Dialer = (*fakeDialer)(nil)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// echoAddr starts a loopback TCP echo server.
func echoAddr(t *testing.T) string { return testnet.Echo(t) }

// serve runs serve on ln and checks that it returns nil after stop at cleanup.
func serve(t *testing.T, serveFn func() error, stop func() error) {
	errc := make(chan error, 1)
	go func() { errc <- serveFn() }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve after Close = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
}

// socksConnect performs a SOCKS5 handshake and CONNECT to host:port (sent as a
// domain name) and returns the reply code and the connection.
func socksConnect(t *testing.T, proxyAddr, user, pass, host string, port int) (byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	method := byte(0x00)
	if user != "" {
		method = 0x02
	}
	if _, err := c.Write([]byte{5, 1, method}); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		t.Fatalf("reading method selection: %v", err)
	}
	if sel[1] == 0xff {
		return 0xff, nil
	}
	if method == 0x02 {
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		var st [2]byte
		if _, err := io.ReadFull(c, st[:]); err != nil || st[1] != 0 {
			return 0xfe, nil // authentication failed
		}
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	req = append(req, byte(port>>8), byte(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var rep [10]byte // IPv4 bind address is always used by the server
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	return rep[1], c
}

func TestSOCKS5(t *testing.T) {
	d := &fakeDialer{
		names: map[string]string{"svc.ns:80": echoAddr(t)},
		codes: map[string]string{
			"refused.ns:80": tunnel.CodeRefused,
			"slow.ns:80":    tunnel.CodeTimeout,
			"unreach.ns:80": tunnel.CodeUnreachable,
		},
	}
	tests := []struct {
		name       string
		user, pass string // server credentials
		cuser      string // client credentials
		cpass      string
		host       string
		wantRep    byte // 0xff: no acceptable method, 0xfe: auth failed
	}{
		{name: "no auth", host: "svc.ns", wantRep: 0},
		{name: "auth ok", user: "u", pass: "p", cuser: "u", cpass: "p", host: "svc.ns", wantRep: 0},
		{name: "bad password", user: "u", pass: "p", cuser: "u", cpass: "x", host: "svc.ns", wantRep: 0xfe},
		{name: "auth required", user: "u", pass: "p", host: "svc.ns", wantRep: 0xff},
		{name: "refused", host: "refused.ns", wantRep: 0x05},
		{name: "nxdomain", host: "nosuch.ns", wantRep: 0x04},
		{name: "unreachable", host: "unreach.ns", wantRep: 0x04},
		{name: "timeout", host: "slow.ns", wantRep: 0x06},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &SOCKS5{Dialer: d, Username: tt.user, Password: tt.pass, NoAuth: tt.user == "", Logf: testLogf(t)}
			ln := listen(t)
			serve(t, func() error { return s.Serve(ln) }, s.Close)
			rep, c := socksConnect(t, ln.Addr().String(), tt.cuser, tt.cpass, tt.host, 80)
			if rep != tt.wantRep {
				t.Fatalf("reply = %#x, want %#x", rep, tt.wantRep)
			}
			if rep != 0 {
				return
			}
			if got := d.lastAsked(); got != tt.host+":80" {
				t.Fatalf("dialer got %q, want the unresolved name %q", got, tt.host+":80")
			}
			if _, err := io.WriteString(c, "hello"); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "hello" {
				t.Fatalf("echo = %q, %v; want hello", got, err)
			}
		})
	}
}

func TestHTTPProxy(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.Path)
	}))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")
	d := &fakeDialer{names: map[string]string{"svc.ns:80": webAddr, "svc.ns:443": webAddr}}

	auth := func(u, p string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
	}
	tests := []struct {
		name       string
		user, pass string
		connect    bool
		target     string // absolute URL, or host:port for CONNECT, or path for origin-form
		authz      string
		wantStatus int
		wantBody   string
	}{
		{name: "plain get", target: "http://svc.ns/a", wantStatus: 200, wantBody: "hello svc.ns /a"},
		{name: "plain get with auth", user: "u", pass: "p", target: "http://svc.ns/b", authz: auth("u", "p"), wantStatus: 200, wantBody: "hello svc.ns /b"},
		{name: "no credentials", user: "u", pass: "p", target: "http://svc.ns/a", wantStatus: 407},
		{name: "wrong password", user: "u", pass: "p", target: "http://svc.ns/a", authz: auth("u", "x"), wantStatus: 407},
		{name: "connect", connect: true, target: "svc.ns:443", wantStatus: 200, wantBody: "hello svc.ns:443 /c"},
		{name: "connect no credentials", user: "u", pass: "p", connect: true, target: "svc.ns:443", wantStatus: 407},
		{name: "origin-form rejected", target: "/a", wantStatus: 400},
		{name: "unknown host", target: "http://nosuch.ns/a", wantStatus: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &HTTP{Dialer: d, Username: tt.user, Password: tt.pass, NoAuth: tt.user == "", Logf: testLogf(t)}
			ln := listen(t)
			serve(t, func() error { return h.Serve(ln) }, h.Close)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			method, host := "GET", "svc.ns"
			if tt.connect {
				method, host = "CONNECT", tt.target
			}
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, tt.target, host)
			if tt.authz != "" {
				fmt.Fprintf(c, "Proxy-Authorization: %s\r\n", tt.authz)
			}
			io.WriteString(c, "\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("reading response: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 407 && !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), "Basic") {
				t.Errorf("407 without a Basic Proxy-Authenticate header: %v", resp.Header)
			}
			if tt.wantStatus != 200 {
				return
			}
			if tt.connect {
				if got := d.lastAsked(); got != tt.target {
					t.Fatalf("dialer got %q, want %q", got, tt.target)
				}
				// Speak HTTP to the web server through the tunnel.
				fmt.Fprintf(c, "GET /c HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tt.target)
				resp, err = http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("reading tunnelled response: %v", err)
				}
			} else if got := d.lastAsked(); got != "svc.ns:80" {
				t.Fatalf("dialer got %q, want svc.ns:80", got)
			}
			body, _ := io.ReadAll(resp.Body)
			if string(body) != tt.wantBody {
				t.Fatalf("body = %q, want %q", body, tt.wantBody)
			}
		})
	}
}

func TestHTTPProxyWithStdlibClient(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer web.Close()
	d := &fakeDialer{names: map[string]string{"svc.ns:8080": strings.TrimPrefix(web.URL, "http://")}}
	h := &HTTP{Dialer: d, Username: "u", Password: "p"}
	ln := listen(t)
	serve(t, func() error { return h.Serve(ln) }, h.Close)
	pu := &url.URL{Scheme: "http", User: url.UserPassword("u", "p"), Host: ln.Addr().String()}
	cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 5 * time.Second}
	resp, err := cl.Get("http://svc.ns:8080/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// fakeExchanger answers ok.test. and big.test. and fails everything else.
type fakeExchanger struct{}

func (fakeExchanger) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	r := new(dns.Msg).SetReply(m)
	switch m.Question[0].Name {
	case "ok.test.":
		rr, _ := dns.NewRR("ok.test. 60 IN A 127.0.0.1")
		r.Answer = append(r.Answer, rr)
	case "big.test.":
		for i := range 60 {
			rr, _ := dns.NewRR(fmt.Sprintf(`big.test. 60 IN TXT "record number %03d with some padding"`, i))
			r.Answer = append(r.Answer, rr)
		}
	default:
		return nil, errors.New("upstream broken")
	}
	return r, nil
}

func TestDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	d := &DNS{Exchanger: fakeExchanger{}, Logf: testLogf(t)}
	ctx, cancel := context.WithCancel(context.Background())
	serve(t, func() error { return d.Serve(ctx, pc, ln) }, func() error { cancel(); return nil })
	tests := []struct {
		name      string
		net       string
		qname     string
		edns      uint16
		wantRcode int
		wantTC    bool
		wantN     int // answers
	}{
		{"udp ok", "udp", "ok.test.", 0, dns.RcodeSuccess, false, 1},
		{"tcp ok", "tcp", "ok.test.", 0, dns.RcodeSuccess, false, 1},
		{"udp servfail", "udp", "fail.test.", 0, dns.RcodeServerFailure, false, 0},
		{"tcp servfail", "tcp", "fail.test.", 0, dns.RcodeServerFailure, false, 0},
		{"udp big truncated", "udp", "big.test.", 0, dns.RcodeSuccess, true, -1},
		{"udp big with edns", "udp", "big.test.", 4096, dns.RcodeSuccess, false, 60},
		{"tcp big", "tcp", "big.test.", 0, dns.RcodeSuccess, false, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := pc.LocalAddr().String()
			if tt.net == "tcp" {
				addr = ln.Addr().String()
			}
			q := new(dns.Msg).SetQuestion(tt.qname, dns.TypeA)
			if tt.edns > 0 {
				q.SetEdns0(tt.edns, false)
			}
			cl := &dns.Client{Net: tt.net, Timeout: 5 * time.Second, UDPSize: 65535}
			resp, _, err := cl.Exchange(q, addr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.wantRcode || resp.Truncated != tt.wantTC {
				t.Fatalf("rcode %s tc %v, want %s tc %v", dns.RcodeToString[resp.Rcode], resp.Truncated,
					dns.RcodeToString[tt.wantRcode], tt.wantTC)
			}
			if tt.wantN >= 0 && len(resp.Answer) != tt.wantN {
				t.Fatalf("%d answers, want %d", len(resp.Answer), tt.wantN)
			}
			resp.Compress = true // as sent
			if tt.wantTC && (len(resp.Answer) >= 60 || resp.Len() > dns.MinMsgSize) {
				t.Fatalf("truncated answer has %d records, %d bytes", len(resp.Answer), resp.Len())
			}
		})
	}
}

// TestProxiesFailClosed: a proxy given no credentials, without NoAuth, refuses to serve.
func TestProxiesFailClosed(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Listener) error
	}{
		{"socks5, no credentials", (&SOCKS5{}).Serve},
		{"socks5, no password", (&SOCKS5{Username: "u"}).Serve},
		{"http, no credentials", (&HTTP{}).Serve},
		{"http, no username", (&HTTP{Password: "p"}).Serve},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t)
			errc := make(chan error, 1)
			go func() { errc <- tt.serve(ln) }()
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), "must both be set") {
					t.Fatalf("Serve = %v, want a refusal", err)
				}
			case <-time.After(10 * time.Second): // failure detection only: a refusal is immediate
				ln.Close()
				t.Fatal("Serve is serving an open proxy instead of refusing")
			}
		})
	}
}
