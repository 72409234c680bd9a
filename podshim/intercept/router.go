package intercept

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSniffTimeout is how long Router waits for a client's first byte before deciding that
// the connection is not HTTP (a server-speaks-first protocol such as MySQL or SMTP).
const DefaultSniffTimeout = 300 * time.Millisecond

// DefaultDialTimeout bounds each upstream dial when Router.DialTimeout is zero.
const DefaultDialTimeout = 10 * time.Second

// sniffBufSize is the size of the downstream read buffer, and so the longest request line the
// sniffer looks at before deciding (a longer line that is still a valid prefix counts as HTTP/1).
const sniffBufSize = 16 << 10

// h2Preface is the HTTP/2 client connection preface (prior knowledge, RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Router is the data plane of a Service with personal intercepts: it accepts the Service's
// connections and sends each request to the intercept whose Match it satisfies (see Table for the
// order), or to Default, the real pods.
//
//   - A header-less intercept takes whole connections as raw bytes, without looking at them.
//   - HTTP/1.x is routed per request, even on one kept-alive connection, and forwarded byte for
//     byte: the request and response heads are passed on exactly as read (nothing added, removed
//     or reordered: no User-Agent, no X-Forwarded-For, hop-by-hop headers kept), bodies keep their
//     framing (chunked bodies are copied chunk by chunk, extensions and trailers included) and
//     stream both ways at once. One upstream connection is kept per destination per client
//     connection; an idle one that the upstream closed is noticed and redialed, and a request
//     without body that meets a stale one is sent again (as net/http's Transport does).
//     Expect: 100-continue is left to the upstream (its 100 is passed on). An upgrade (101, e.g.
//     WebSocket, or an h2c upgrade, which is not treated specially) or a 2xx answer to CONNECT
//     turns the rest of the connection into a raw splice with the upstream that the upgrading
//     request went to. Bytes that net/http cannot parse as a request (or response) make the
//     rest of the connection a raw splice to the real pods (or with that upstream).
//   - HTTP/2 in cleartext with prior knowledge (h2c, gRPC) is routed per stream and forwarded to
//     the upstream over h2c: method, path, authority, headers, body, status, trailers, streaming
//     in both directions. Header names arrive lower-case as HTTP/2 requires; HPACK and framing are
//     re-done.
//   - Anything else (TLS, other protocols, a client silent for SniffTimeout) goes raw to Default.
//
// When an intercept's upstream cannot be dialed, its requests go to Default and the failure is
// reported once (Logf, Report) until a dial to it succeeds again. Only dial errors do that: an
// upstream that fails after accepting a request gets the client a 502 (or a reset stream or
// connection once the response has begun). When an intercept is removed from the Table, requests
// routed afterwards go elsewhere and the router's connections to its upstream are closed,
// ending what was in flight there the same way. When Default cannot be dialed,
// an HTTP/1 client gets 502 and the connection is closed, an HTTP/2 stream gets 502, a raw
// connection is closed.
//
// It leaves out: TLS termination (TLS passes to Default untouched), HTTP/2 over TLS, protocol
// translation (an h2c client needs an h2c upstream), extended CONNECT (WebSocket over HTTP/2),
// forwarding of 1xx answers other than 100 and 101 over HTTP/2, load balancing (each Dialer
// decides), timeouts on idle clients (TCP keep-alive of the listener does that) and log rate
// limiting (the caller's job; the router logs only state changes, never per request).
//
// A Router must not be copied after first use. Its fields must not change while it serves.
type Router struct {
	// Table holds the intercepts; nil means none.
	Table *Table
	// Default reaches the real pods (e.g. the headless shadow Service). Required.
	Default Dialer
	// Logf, if set, receives one line per state change (an intercept or Default becoming
	// unreachable or reachable again).
	Logf func(format string, args ...any)
	// Report, if set, is called when an intercept's upstream becomes unreachable (err != nil; its
	// requests now go to Default) and when it is reachable again (err == nil). Once per change;
	// it is called on a serving goroutine and must not block.
	Report func(ic Intercept, err error)
	// SniffTimeout is how long to wait for the first bytes of a connection before treating it
	// as not HTTP (server-speaks-first protocols); zero means DefaultSniffTimeout, negative means
	// wait as long as the client takes. Set it negative when the Service port is known to carry
	// HTTP (appProtocol, port name): clients that open connections ahead of use (browsers'
	// preconnect, warm pools) may stay silent longer, and such a connection would otherwise go to
	// the real pods as a whole.
	SniffTimeout time.Duration
	// DialTimeout bounds each upstream dial; zero means DefaultDialTimeout.
	DialTimeout time.Duration

	defaultDown atomic.Bool
}

// Serve accepts connections on ln and serves each with ServeConn until ctx is done (then it
// closes ln and returns nil) or Accept fails (then it returns that error, temporary or not:
// retrying is the caller's choice). It returns once the connections it started have ended; they
// end when ctx is done.
func (r *Router) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.ServeConn(ctx, c)
		}()
	}
}

// ServeConn serves one client connection until it ends or ctx is done, and closes it.
func (r *Router) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if e := r.Table.headerless(); e != nil {
		up, _, err := r.dialRoute(ctx, e)
		if err != nil {
			return
		}
		splice(c, nil, up, nil)
		return
	}
	br := bufio.NewReaderSize(c, sniffBufSize)
	switch r.sniff(c, br) {
	case protoH2:
		r.serveH2(ctx, c, br)
	case protoHTTP1:
		r.serveHTTP1(ctx, c, br)
	default:
		up, _, err := r.dialRoute(ctx, nil)
		if err != nil {
			return
		}
		splice(c, br, up, nil)
	}
}

type proto int

const (
	protoRaw proto = iota
	protoHTTP1
	protoH2
)

// sniff reads the first bytes of c into br (without consuming them) until it can tell HTTP/1,
// h2c or something else. Each read may wait SniffTimeout; a client that stalls or closes before
// the decision is treated as raw.
func (r *Router) sniff(c net.Conn, br *bufio.Reader) proto {
	timeout := r.SniffTimeout
	if timeout == 0 {
		timeout = DefaultSniffTimeout
	}
	defer c.SetReadDeadline(time.Time{})
	want := 1
	for {
		if timeout > 0 {
			c.SetReadDeadline(time.Now().Add(timeout))
		}
		b, err := br.Peek(want)
		if p, done := classify(b); done {
			return p
		}
		if err != nil {
			return protoRaw
		}
		if len(b) == br.Size() {
			return protoHTTP1 // a valid request line longer than the buffer
		}
		want = len(b) + 1
		if n := br.Buffered(); n > want {
			want = n
		}
	}
}

// classify decides from the first bytes of a connection: done is false while b is a proper
// prefix of both an HTTP/1 request line or the HTTP/2 preface and more bytes are needed.
func classify(b []byte) (p proto, done bool) {
	h2 := len(b) <= len(h2Preface) && string(b) == h2Preface[:len(b)] ||
		len(b) > len(h2Preface) && string(b[:len(h2Preface)]) == h2Preface
	if h2 && len(b) >= len(h2Preface) {
		return protoH2, true
	}
	complete, possible := scanRequestLine(b)
	switch {
	case complete:
		return protoHTTP1, true
	case possible || h2:
		return protoRaw, false
	default:
		return protoRaw, true
	}
}

// scanRequestLine reports whether b starts with a complete HTTP/1.x request line
// (method SP request-target SP "HTTP/1." digit CRLF; a bare LF is tolerated), or could still
// become one with more bytes.
func scanRequestLine(b []byte) (complete, possible bool) {
	i := 0
	for i < len(b) && isTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		return false, true
	}
	if i == 0 || b[i] != ' ' {
		return false, false
	}
	i++
	start := i
	for i < len(b) && b[i] > ' ' && b[i] != 0x7f {
		i++
	}
	if i == len(b) {
		return false, true
	}
	if i == start || b[i] != ' ' {
		return false, false
	}
	rest := b[i+1:]
	const v = "HTTP/1."
	if len(rest) < len(v) {
		return false, string(rest) == v[:len(rest)]
	}
	if string(rest[:len(v)]) != v {
		return false, false
	}
	rest = rest[len(v):]
	if len(rest) == 0 {
		return false, true
	}
	if rest[0] < '0' || rest[0] > '9' {
		return false, false
	}
	rest = rest[1:]
	switch {
	case len(rest) == 0:
		return false, true
	case rest[0] == '\n':
		return true, true
	case rest[0] != '\r':
		return false, false
	case len(rest) == 1:
		return false, true
	default:
		return rest[1] == '\n', rest[1] == '\n'
	}
}

// dialRoute dials e's upstream, or Default when e is nil or its upstream cannot be reached. It
// returns the entry actually used (nil for Default).
func (r *Router) dialRoute(ctx context.Context, e *entry) (net.Conn, *entry, error) {
	if e != nil {
		c, err := r.dialEntry(ctx, e)
		if err == nil {
			return c, e, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
	}
	c, err := r.dialDefault(ctx)
	return c, nil, err
}

// dialEntry dials e's upstream, logging and reporting when its reachability changes. The
// returned connection is closed when e is removed from the Table.
func (r *Router) dialEntry(ctx context.Context, e *entry) (net.Conn, error) {
	c, err := r.dial(ctx, e.ic.Dialer)
	if err != nil {
		if ctx.Err() == nil && e.ctx.Err() == nil && !e.down.Swap(true) {
			r.logf("intercept %s (%s, headers %s) is unreachable, its requests go to the real pods: %v", e.ic.ID, owner(e.ic), e.ic.Match, err)
			if r.Report != nil {
				r.Report(e.ic, err)
			}
		}
		return nil, err
	}
	if e.down.Swap(false) {
		r.logf("intercept %s (%s, headers %s) is reachable again", e.ic.ID, owner(e.ic), e.ic.Match)
		if r.Report != nil {
			r.Report(e.ic, nil)
		}
	}
	w := &watchedConn{Conn: c}
	w.stop = context.AfterFunc(e.ctx, func() { c.Close() })
	return w, nil
}

// dialDefault dials the real pods, logging when their reachability changes.
func (r *Router) dialDefault(ctx context.Context) (net.Conn, error) {
	if r.Default == nil {
		return nil, errors.New("intercept: Router.Default is nil")
	}
	c, err := r.dial(ctx, r.Default)
	if err != nil {
		if ctx.Err() == nil && !r.defaultDown.Swap(true) {
			r.logf("the real pods are unreachable: %v", err)
		}
		return nil, err
	}
	if r.defaultDown.Swap(false) {
		r.logf("the real pods are reachable again")
	}
	return c, nil
}

func (r *Router) dial(ctx context.Context, d Dialer) (net.Conn, error) {
	timeout := r.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err == nil && c == nil {
		err = errors.New("dialer returned no connection")
	}
	return c, err
}

func (r *Router) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// watchedConn is an upstream connection that is closed when its intercept is removed.
type watchedConn struct {
	net.Conn
	stop func() bool
}

func (w *watchedConn) Close() error {
	w.stop()
	return w.Conn.Close()
}

func (w *watchedConn) CloseWrite() error {
	if cw, ok := w.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

type closeWriter interface{ CloseWrite() error }

// splice copies bytes both ways between a and b until both directions have ended, then closes
// both. abuf and bbuf, if not nil, hold bytes already read from a and b: they are sent first.
// When one side ends cleanly (EOF), the other is half-closed if it can be (CloseWrite), so the
// other direction goes on; on an error both are closed.
func splice(a net.Conn, abuf *bufio.Reader, b net.Conn, bbuf *bufio.Reader) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(b, a, abuf)
	}()
	pipe(a, b, bbuf)
	wg.Wait()
	a.Close()
	b.Close()
}

// pipe copies src (after what srcBuf already holds) to dst; see splice.
func pipe(dst, src net.Conn, srcBuf *bufio.Reader) {
	var err error
	if srcBuf != nil && srcBuf.Buffered() > 0 {
		p, _ := srcBuf.Peek(srcBuf.Buffered())
		_, err = dst.Write(p)
	}
	if err == nil {
		_, err = io.Copy(dst, src)
	}
	if err == nil {
		// Clean end: half-close dst. If it cannot half-close, leave the other direction
		// running; splice closes both when it ends.
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
		return
	}
	dst.Close()
	src.Close()
}
