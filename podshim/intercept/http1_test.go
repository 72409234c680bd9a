package intercept_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

// world is a router with intercepts for alice (X-Dev: alice) and bob (X-Dev: bob) and a default.
type world struct {
	alice, bob, def *upstream
	tab             *intercept.Table
	rt              *intercept.Router
	logs            *testnet.Log
	addr            string
}

// newWorld builds a world whose dialers point at the address pick chooses of each upstream.
func newWorld(t *testing.T, pick func(*upstream) string, configure ...func(*intercept.Router)) *world {
	t.Helper()
	w := &world{
		alice: newUpstream(t, "alice"),
		bob:   newUpstream(t, "bob"),
		def:   newUpstream(t, "default"),
		tab:   &intercept.Table{},
		logs:  &testnet.Log{},
	}
	add(t, w.tab, "alice", "alice@laptop", w.alice.dialer(pick(w.alice)), "x-dev=alice")
	add(t, w.tab, "bob", "bob@laptop", w.bob.dialer(pick(w.bob)), "x-dev=bob")
	w.rt = &intercept.Router{Table: w.tab, Default: w.def.dialer(pick(w.def)), Logf: w.logs.Logf}
	for _, f := range configure {
		f(w.rt)
	}
	w.addr = startRouter(t, w.rt)
	return w
}

func httpAddr(u *upstream) string { return u.httpAddr }
func captAddr(u *upstream) string { return u.captAddr }
func rawAddr(u *upstream) string  { return u.rawAddr }

func TestHTTP1RoutesByHeader(t *testing.T) {
	w := newWorld(t, httpAddr)
	for _, tc := range []struct {
		name    string
		headers []string
		want    string
	}{
		{"alice", []string{"X-Dev: alice"}, "alice"},
		{"bob, lower-case name", []string{"x-dev: bob"}, "bob"},
		{"no header", nil, "default"},
		{"other value", []string{"X-Dev: carol"}, "default"},
		{"value is case-sensitive", []string{"X-Dev: Alice"}, "default"},
		{"surrounding whitespace", []string{"X-Dev:   alice  "}, "alice"},
		{"list in one line is not split", []string{"X-Dev: alice, bob"}, "default"},
		{"two lines: earlier registration wins", []string{"X-Dev: bob", "X-Dev: alice"}, "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialClient(t, w.addr)
			c.get("/", tc.headers...)
			resp, body := c.read("GET")
			if resp.StatusCode != 200 || body != tc.want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, tc.want)
			}
		})
	}
}

// TestHTTP1KeepAliveMix: on one kept-alive connection, each request goes where its own headers
// say, pipelined or not, and each destination is dialed once.
func TestHTTP1KeepAliveMix(t *testing.T) {
	w := newWorld(t, httpAddr, func(rt *intercept.Router) { rt.SniffTimeout = -1 })
	c := dialClient(t, w.addr)
	// Three requests written at once, then three responses read.
	c.write("GET /1 HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n" +
		"GET /2 HTTP/1.1\r\nHost: svc\r\n\r\n" +
		"GET /3 HTTP/1.1\r\nHost: svc\r\nX-Dev: bob\r\n\r\n")
	for _, want := range []string{"alice", "default", "bob"} {
		if _, body := c.read("GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
	// And one at a time, back to an upstream already used.
	for _, tc := range []struct{ header, want string }{{"X-Dev: bob", "bob"}, {"X-Dev: alice", "alice"}, {"X-Other: 1", "default"}} {
		c.get("/", tc.header)
		if _, body := c.read("GET"); body != tc.want {
			t.Fatalf("got %q, want %q", body, tc.want)
		}
	}
	for _, u := range []*upstream{w.alice, w.bob, w.def} {
		if n := u.dials.Load(); n != 1 {
			t.Errorf("%s dialed %d times, want 1 (one kept connection per destination)", u.name, n)
		}
	}
}

// TestHTTP1StreamingResponse: the first piece of a streamed response reaches the client while
// the upstream still waits (for the client to have seen it).
func TestHTTP1StreamingResponse(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.get("/stream", "X-Dev: alice")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first from alice\n" {
		t.Fatalf("first piece: %q, %v", line, err)
	}
	close(w.alice.release) // only now may the upstream finish
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "rest from alice\n" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
	// The connection is still good for another request.
	c.get("/", "X-Dev: bob")
	if _, body := c.read("GET"); body != "bob" {
		t.Fatalf("next request: %q", body)
	}
}

// TestHTTP1DuplexChunked: a chunked request body streams to the upstream piece by piece while its
// streamed response comes back, chunked with trailers.
func TestHTTP1DuplexChunked(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.write("POST /duplex HTTP/1.1\r\nHost: svc\r\nX-Dev: bob\r\nTransfer-Encoding: chunked\r\nTe: trailers\r\n\r\n")
	c.write("4\r\none\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := bufio.NewReader(resp.Body)
	for i, msg := range []string{"one", "two", "three"} {
		if i > 0 {
			c.write(fmt.Sprintf("%x;ext=1\r\n%s\n\r\n", len(msg)+1, msg))
		}
		line, err := body.ReadString('\n')
		if err != nil || line != "bob:"+msg+"\n" {
			t.Fatalf("echo of %q: %q, %v", msg, line, err)
		}
	}
	c.write("0\r\n\r\n")
	if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
		t.Fatalf("after last chunk: %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Errorf("trailer Grpc-Status = %q, want 0", got)
	}
	if got := resp.Trailer.Get("Grpc-Message"); got != "done by bob" {
		t.Errorf("trailer Grpc-Message = %q", got)
	}
	c.get("/", "X-Dev: alice")
	if _, body := c.read("GET"); body != "alice" {
		t.Fatalf("next request: %q", body)
	}
}

// TestHTTP1Unchanged: what the upstream receives is byte for byte what the client sent: no
// User-Agent added, hop-by-hop headers kept, names not canonicalised, raw path and query, HTTP/1.0
// without Host left alone, chunk extensions and trailers kept.
func TestHTTP1Unchanged(t *testing.T) {
	w := newWorld(t, captAddr)
	for _, tc := range []struct {
		name, req, want string
	}{
		{"GET without User-Agent, hop-by-hop headers", "GET /a%2Fb/./c?x=1&y=%20&x=2 HTTP/1.1\r\nhost: svc\r\nx-dev: alice\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\naccept: */*\r\nAccept: text/plain\r\n\r\n", "alice"},
		{"POST with Content-Length", "POST /p HTTP/1.1\r\nHost: svc:8080\r\nX-Dev: bob\r\nContent-Length: 11\r\nContent-Type: text/odd\r\n\r\nhello\r\nbody", "bob"},
		{"chunked with extensions and trailers", "PUT /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;name=val\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n", "default"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n", "alice"},
		{"absolute form", "GET http://svc/x?q HTTP/1.1\r\nHost: svc\r\nX-Dev: bob\r\n\r\n", "bob"},
		{"HTTP/1.0 without Host", "GET /old HTTP/1.0\r\nX-Dev: alice\r\n\r\n", "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialClient(t, w.addr)
			c.write(tc.req)
			resp, body := c.read(strings.Fields(tc.req)[0])
			if resp.StatusCode != 200 || body != tc.want {
				t.Fatalf("got %d %q, want %q", resp.StatusCode, body, tc.want)
			}
			var got []byte
			switch tc.want {
			case "alice":
				got = <-w.alice.captured
			case "bob":
				got = <-w.bob.captured
			default:
				got = <-w.def.captured
			}
			if string(got) != tc.req {
				t.Fatalf("upstream received\n%q\nwant\n%q", got, tc.req)
			}
		})
	}
}

// TestHTTP1HeadAndExpect: a HEAD response carries Content-Length but no body; Expect:
// 100-continue gets the upstream's 100 before the client sends the body; the connection stays
// usable after both.
func TestHTTP1HeadAndExpect(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.write("HEAD / HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n")
	resp, body := c.read("HEAD")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Upstream") != "alice" {
		t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	c.write("POST /echo HTTP/1.1\r\nHost: svc\r\nX-Dev: bob\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ = c.read("POST")
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue first, got %d", resp.StatusCode)
	}
	c.write("hello")
	if resp, body = c.read("POST"); resp.StatusCode != 200 || body != "bob:hello" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	c.get("/")
	if _, body = c.read("GET"); body != "default" {
		t.Fatalf("after: %q", body)
	}
}

// TestHTTP1ConnectionClose: a request with Connection: close gets its response, then the
// connection ends.
func TestHTTP1ConnectionClose(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.get("/", "X-Dev: alice", "Connection: close")
	if _, body := c.read("GET"); body != "alice" {
		t.Fatalf("got %q", body)
	}
	if b, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("want EOF after Connection: close, got %q, %v", b, err)
	}
}

// TestHTTP1Upgrade: after a 101 the connection is a raw pipe to the upstream of the upgrading
// request, whatever later bytes look like.
func TestHTTP1Upgrade(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.get("/upgrade", "X-Dev: alice", "Connection: Upgrade", "Upgrade: echo")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("want 101, got %v %v", resp, err)
	}
	for _, line := range []string{"ping\n", "GET / HTTP/1.1\r\n", "X-Dev: bob\r\n", "\r\n"} {
		c.write(line)
		got, err := c.br.ReadString('\n')
		if err != nil || got != "alice:"+line {
			t.Fatalf("echo of %q: %q, %v", line, got, err)
		}
	}
}

// TestStaleKeepAlive: an upstream that closes its kept-alive connection without saying so does
// not cost the client its next request.
func TestStaleKeepAlive(t *testing.T) {
	ln := listen(t)
	go acceptLoop(ln, func(c net.Conn) { // one response per connection, then close
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	rt := &intercept.Router{Table: &intercept.Table{}, Default: intercept.TCPDialer(ln.Addr().String())}
	c := dialClient(t, startRouter(t, rt))
	for i := 0; i < 3; i++ {
		c.get("/")
		if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
}
