package intercept

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/net/http2"
)

// h2conn routes the streams of one h2c client connection; it keeps one upstream HTTP/2
// connection per destination, shared by the streams going there.
type h2conn struct {
	r   *Router
	ctx context.Context
	t   *http2.Transport

	mu     sync.Mutex
	closed bool
	ups    map[*entry]*h2up
	all    []*http2.ClientConn // every upstream connection opened, to close at the end
}

type h2up struct {
	mu sync.Mutex // held while dialing
	cc *http2.ClientConn
}

// bufConn is a net.Conn whose reads go through the sniffing buffer first.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (r *Router) serveH2(ctx context.Context, c net.Conn, br *bufio.Reader) {
	h := &h2conn{
		r:   r,
		ctx: ctx,
		// DisableCompression: no Accept-Encoding added, no transparent gunzip.
		t:   &http2.Transport{AllowHTTP: true, DisableCompression: true},
		ups: make(map[*entry]*h2up),
	}
	defer h.closeAll()
	srv := &http2.Server{}
	srv.ServeConn(&bufConn{Conn: c, r: br}, &http2.ServeConnOpts{
		Context:    ctx,
		Handler:    http.HandlerFunc(h.serveStream),
		BaseConfig: &http.Server{ErrorLog: log.New(io.Discard, "", 0)},
	})
}

func (h *h2conn) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, cc := range h.all {
		cc.Close()
	}
	h.all = nil
}

// serveStream forwards one stream to the upstream chosen by its headers.
func (h *h2conn) serveStream(w http.ResponseWriter, req *http.Request) {
	e := h.r.Table.choose(req.Header, req.Host)
	cc, err := h.clientConn(req.Context(), e)
	if err != nil {
		if req.Context().Err() == nil {
			http.Error(w, fmt.Sprintf("kubectl-tp intercept router: cannot reach the upstream: %v", err), http.StatusBadGateway)
		}
		return
	}
	out := (&http.Request{
		Method:        req.Method,
		URL:           upstreamURL(req),
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        req.Header,
		Host:          req.Host,
		Body:          req.Body,
		ContentLength: req.ContentLength,
		Trailer:       req.Trailer,
	}).WithContext(req.Context())
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // the transport would add its own
	}
	resp, err := cc.RoundTrip(out)
	if err != nil {
		if req.Context().Err() == nil {
			http.Error(w, fmt.Sprintf("kubectl-tp intercept router: upstream failed: %v", err), http.StatusBadGateway)
		}
		return
	}
	defer resp.Body.Close()
	hdr := w.Header()
	for k, vv := range resp.Header {
		hdr[k] = vv
	}
	// Let the server add nothing: no Date, no sniffed Content-Type.
	for _, k := range []string{"Date", "Content-Type"} {
		if _, ok := hdr[k]; !ok {
			hdr[k] = nil
		}
	}
	w.WriteHeader(resp.StatusCode)
	fl := w.(http.Flusher)
	fl.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				panic(http.ErrAbortHandler)
			}
			fl.Flush()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The upstream stream failed after the headers went out: reset the client's stream
			// rather than end it as if it were complete.
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		hdr[http.TrailerPrefix+k] = vv
	}
}

// upstreamURL rebuilds the request target as the client sent it (:path, with its raw query).
func upstreamURL(req *http.Request) *url.URL {
	u := &url.URL{Scheme: "http", Host: req.Host}
	path, query, hasQuery := strings.Cut(req.RequestURI, "?")
	if path == "" || strings.HasPrefix(path, "//") {
		u.Path, u.RawPath = req.URL.Path, req.URL.RawPath
	} else {
		u.Opaque = path
	}
	u.RawQuery = query
	u.ForceQuery = hasQuery && query == ""
	return u
}

// clientConn returns an upstream connection for e (Default when e is nil, removed or
// unreachable) that can take a new stream, dialing one if needed.
func (h *h2conn) clientConn(ctx context.Context, e *entry) (*http2.ClientConn, error) {
	if e != nil && e.ctx.Err() != nil {
		e = nil
	}
	if e != nil {
		if cc, err := h.clientConnFor(ctx, e); err == nil {
			return cc, nil
		} else if ctx.Err() != nil {
			return nil, err
		}
	}
	return h.clientConnFor(ctx, nil)
}

func (h *h2conn) clientConnFor(ctx context.Context, e *entry) (*http2.ClientConn, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, net.ErrClosed
	}
	for k := range h.ups {
		if k != nil && k.ctx.Err() != nil {
			delete(h.ups, k) // its connection was closed by Remove
		}
	}
	live := h.all[:0]
	for _, cc := range h.all {
		if !cc.State().Closed {
			live = append(live, cc)
		}
	}
	h.all = live
	u := h.ups[e]
	if u == nil {
		u = &h2up{}
		h.ups[e] = u
	}
	h.mu.Unlock()

	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cc != nil && u.cc.CanTakeNewRequest() {
		return u.cc, nil
	}
	var c net.Conn
	var err error
	if e != nil {
		c, err = h.r.dialEntry(ctx, e)
	} else {
		c, err = h.r.dialDefault(ctx)
	}
	if err != nil {
		return nil, err
	}
	cc, err := h.t.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		cc.Close()
		return nil, net.ErrClosed
	}
	u.cc = cc
	h.all = append(h.all, cc)
	return cc, nil
}
