package intercept_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

// guard is how long a test connection may block before the test fails instead of hanging. It is
// a hang guard, not a synchronisation.
const guard = 30 * time.Second

// upstream is a fake destination answering with its name: an HTTP/1 + h2c server, a raw server
// that speaks first and echoes, and a capture server that records raw HTTP/1 requests.
type upstream struct {
	name     string
	httpAddr string
	rawAddr  string
	captAddr string
	captured chan []byte   // raw requests received by the capture server
	release  chan struct{} // closed by the test to let /stream finish
	dials    atomic.Int32  // connections dialed by the router through dialers of this upstream
}

func newUpstream(t testing.TB, name string) *upstream {
	t.Helper()
	u := &upstream{name: name, captured: make(chan []byte, 16), release: make(chan struct{})}
	// HTTP/1 and h2c.
	ln := listen(t)
	u.httpAddr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(u.serveHTTP)}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	// Raw: greets, then echoes.
	rln := listen(t)
	u.rawAddr = rln.Addr().String()
	go acceptLoop(rln, func(c net.Conn) {
		fmt.Fprintf(c, "hello from %s\n", name)
		io.Copy(c, c)
	})
	// Capture: records each raw request (head + Content-Length body), answers its name.
	cln := listen(t)
	u.captAddr = cln.Addr().String()
	go acceptLoop(cln, func(c net.Conn) {
		br := bufio.NewReader(c)
		defer func() { recover() }()
		for {
			var raw []byte
			n, chunked := 0, false
			readLine := func() string {
				line, err := br.ReadString('\n')
				raw = append(raw, line...)
				if err != nil {
					panic(http.ErrAbortHandler) // ends this connection
				}
				return line
			}
			for {
				line := readLine()
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
					n, _ = strconv.Atoi(strings.TrimSpace(v))
				}
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "transfer-encoding") {
					chunked = strings.TrimSpace(v) == "chunked"
				}
				if line == "\r\n" {
					break
				}
			}
			for chunked { // chunk lines and data, then trailers, as raw bytes
				size, _ := strconv.ParseInt(strings.TrimSpace(strings.Split(readLine(), ";")[0]), 16, 64)
				if size == 0 {
					for readLine() != "\r\n" {
					}
					break
				}
				data := make([]byte, size)
				if _, err := io.ReadFull(br, data); err != nil {
					return
				}
				raw = append(raw, data...)
				readLine()
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			u.captured <- append(raw, body...)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
		}
	})
	return u
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func acceptLoop(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(guard))
			serve(c)
		}()
	}
}

func (u *upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Upstream", u.name)
	_, ua := r.Header["User-Agent"]
	w.Header().Set("X-Saw-User-Agent", strconv.FormatBool(ua))
	w.Header().Set("X-Request-Uri", r.RequestURI)
	switch r.URL.Path {
	case "/stream": // a first piece, then the rest once the test has seen it
		fmt.Fprintf(w, "first from %s\n", u.name)
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "rest from %s\n", u.name)
	case "/duplex": // echoes each line of the request body as it arrives, then sets trailers
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "%s:%s\n", u.name, sc.Text())
			w.(http.Flusher).Flush()
		}
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "done by "+u.name)
	case "/upgrade": // 101, then a raw line echo prefixed with the name
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s:%s", u.name, line)
		}
	case "/echo": // the body back
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", u.name, b)
	default:
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, u.name)
	}
}

// dialer returns a Dialer to addr that counts its dials on u.
func (u *upstream) dialer(addr string) intercept.Dialer {
	return intercept.DialerFunc(func(ctx context.Context) (net.Conn, error) {
		u.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
}

// failing is a Dialer that fails while down is set.
type failing struct {
	down atomic.Bool
	next intercept.Dialer
}

func (f *failing) DialContext(ctx context.Context) (net.Conn, error) {
	if f.down.Load() {
		return nil, errors.New("laptop gone")
	}
	return f.next.DialContext(ctx)
}

// startRouter serves rt on a loopback listener until the test ends and returns its address.
func startRouter(t testing.TB, rt *intercept.Router) string {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

func add(t testing.TB, tab *intercept.Table, id, owner string, d intercept.Dialer, headers ...string) {
	t.Helper()
	m, err := intercept.ParseMatch(headers...)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(intercept.Intercept{ID: id, Owner: owner, Started: time.Now(), Match: m, Dialer: d}); err != nil {
		t.Fatal(err)
	}
}

// client is a raw HTTP/1 client on one connection.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(guard))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

// get writes a GET with these extra header lines.
func (c *client) get(path string, headers ...string) {
	c.t.Helper()
	c.write("GET " + path + " HTTP/1.1\r\nHost: svc\r\n" + lines(headers) + "\r\n")
}

// read reads one response and its whole body.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, string(b)
}

func lines(headers []string) string {
	var b bytes.Buffer
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	return b.String()
}

// waitClosed fails the test unless the router ends the connection (EOF or reset; the router may
// close with unread bytes) before the hang guard.
func (c *client) waitClosed(what string) {
	c.t.Helper()
	_, err := io.Copy(io.Discard, c.br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("%s: connection not closed", what)
	}
}
