package intercept

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
	"sync"
	"time"
)

// maxHeadBytes bounds a request or response head (as net/http's default MaxHeaderBytes); a longer
// request head makes the rest of the connection a raw splice to the real pods.
const maxHeadBytes = 1 << 20

// maxLineBytes bounds a chunk-size line or a trailer line of a chunked body.
const maxLineBytes = 64 << 10

// h1conn routes the requests of one HTTP/1.x client connection.
type h1conn struct {
	r   *Router
	ctx context.Context
	c   net.Conn      // the client
	br  *bufio.Reader // reads c
	ups map[*entry]*h1up
	wg  sync.WaitGroup // request body copiers
}

// h1up is a kept upstream connection; the key nil is Default.
type h1up struct {
	c    net.Conn
	br   *bufio.Reader
	used bool       // has carried a request (a failure on it may be a stale keep-alive)
	idle chan error // while idle: the result of a watcher's Peek
}

func (r *Router) serveHTTP1(ctx context.Context, c net.Conn, br *bufio.Reader) {
	h := &h1conn{r: r, ctx: ctx, c: c, br: br, ups: make(map[*entry]*h1up)}
	defer h.wg.Wait()
	defer h.closeAll()
	for {
		head, err := readHead(br)
		if err != nil {
			if len(head) > 0 {
				h.raw(head)
			}
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			h.raw(head)
			return
		}
		if !h.exchange(req, head) {
			return
		}
	}
}

// raw passes head and the rest of the connection to Default, unparsed: what the router cannot
// parse is the real pods' business.
func (h *h1conn) raw(head []byte) {
	up, err := h.r.dialDefault(h.ctx)
	if err != nil {
		return
	}
	if _, err := up.Write(head); err != nil {
		up.Close()
		return
	}
	splice(h.c, h.br, up, nil)
}

// exchange forwards one request (head as read, body as framed) to the upstream chosen by its
// headers and the response back. It reports whether the client connection can carry another
// request.
func (h *h1conn) exchange(req *http.Request, head []byte) bool {
	e := h.r.Table.choose(req.Header, req.Host)
	chunked := len(req.TransferEncoding) > 0 // net/http accepts only "chunked"
	hasBody := chunked || req.ContentLength > 0
	expect := hasBody && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
	for attempt := 0; ; attempt++ {
		up, key, err := h.upstream(e)
		if err != nil {
			h.badGateway(err)
			return false
		}
		// A request without body on a reused connection can be sent again on a fresh one if the
		// kept-alive upstream turns out closed before answering (like net/http's Transport).
		retry := attempt == 0 && up.used && !hasBody && idempotent(req.Method)
		up.used = true
		if _, err := up.c.Write(head); err != nil {
			h.drop(key)
			if retry {
				continue
			}
			h.badGateway(err)
			return false
		}
		var bodyDone chan error
		if hasBody {
			bodyDone = make(chan error, 1)
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				bodyDone <- h.copyBody(up, req.ContentLength, chunked)
			}()
		}
		ok, again := h.response(req, up, key, bodyDone, expect, retry)
		if again {
			continue
		}
		return ok
	}
}

// response forwards the upstream's interim and final responses to req. again asks exchange to
// resend the request on a fresh connection.
func (h *h1conn) response(req *http.Request, up *h1up, key *entry, bodyDone chan error, expect, retry bool) (ok, again bool) {
	var resp *http.Response
	wrote, sent100 := false, false
	for {
		rhead, err := readHead(up.br)
		if err != nil {
			h.drop(key)
			if len(rhead) == 0 && retry {
				return false, true
			}
			if !wrote {
				h.badGateway(err)
			}
			return false, false
		}
		resp, err = http.ReadResponse(bufio.NewReader(bytes.NewReader(rhead)), req)
		if err != nil {
			// A response net/http cannot frame: pass it on raw and let the client make sense of it.
			delete(h.ups, key)
			if _, err := h.c.Write(rhead); err != nil {
				return false, false
			}
			if bodyDone == nil {
				splice(h.c, h.br, up.c, up.br)
			} else {
				io.Copy(h.c, up.br)
			}
			return false, false
		}
		if _, err := h.c.Write(rhead); err != nil {
			return false, false
		}
		wrote = true
		if resp.StatusCode == http.StatusSwitchingProtocols || req.Method == http.MethodConnect && resp.StatusCode/100 == 2 {
			// From here on the connection belongs to this upstream, whatever comes next.
			if bodyDone != nil && <-bodyDone != nil {
				return false, false
			}
			delete(h.ups, key)
			splice(h.c, h.br, up.c, up.br)
			return false, false
		}
		if resp.StatusCode/100 != 1 {
			break
		}
		sent100 = sent100 || resp.StatusCode == http.StatusContinue
	}

	closeAfter := req.Close || resp.Close
	var err error
	switch {
	case req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
	case len(resp.TransferEncoding) > 0:
		err = copyChunked(h.c, up.br)
	case resp.ContentLength >= 0:
		err = copyN(h.c, up.br, up.c, resp.ContentLength)
	default: // delimited by the upstream closing
		_, err = io.Copy(h.c, up.br)
		closeAfter = true
	}
	if err != nil {
		return false, false
	}
	if bodyDone != nil {
		if expect && !sent100 {
			// The client may never send the body it announced: the connection's framing is
			// unknown, as net/http's server does, close it.
			closeAfter = true
		} else if err := <-bodyDone; err != nil {
			closeAfter = true
		}
	}
	if closeAfter {
		h.drop(key)
		return false, false
	}
	h.startIdle(key, up)
	return true, false
}

// copyBody copies the request body (n bytes, or chunked) from the client to up. If the client
// fails or sends a malformed body, both connections are closed to end the exchange; if only the
// upstream stops reading, its response is still awaited.
func (h *h1conn) copyBody(up *h1up, n int64, chunked bool) error {
	w := &trackWriter{w: up.c}
	var err error
	if chunked {
		err = copyChunked(w, h.br)
	} else {
		_, err = io.CopyN(w, h.br, n)
	}
	if err != nil && w.err == nil {
		up.c.Close()
		h.c.Close()
	}
	return err
}

// upstream returns a usable connection to e (or Default when e is nil, removed or unreachable)
// and the key it is kept under.
func (h *h1conn) upstream(e *entry) (*h1up, *entry, error) {
	for k, u := range h.ups {
		if k != nil && k.ctx.Err() != nil {
			u.stopIdle()
			u.c.Close()
			delete(h.ups, k)
		}
	}
	if e != nil && e.ctx.Err() != nil {
		e = nil
	}
	if u := h.take(e); u != nil {
		return u, e, nil
	}
	if e != nil {
		c, err := h.r.dialEntry(h.ctx, e)
		if err == nil {
			return h.keep(e, c), e, nil
		}
		if h.ctx.Err() != nil {
			return nil, nil, err
		}
		if u := h.take(nil); u != nil {
			return u, nil, nil
		}
	}
	c, err := h.r.dialDefault(h.ctx)
	if err != nil {
		return nil, nil, err
	}
	return h.keep(nil, c), nil, nil
}

func (h *h1conn) keep(k *entry, c net.Conn) *h1up {
	u := &h1up{c: c, br: bufio.NewReader(c)}
	h.ups[k] = u
	return u
}

// take returns the kept connection for k if it is still usable, and drops it if not.
func (h *h1conn) take(k *entry) *h1up {
	u := h.ups[k]
	if u == nil {
		return nil
	}
	if u.stopIdle() {
		return u
	}
	h.drop(k)
	return nil
}

func (h *h1conn) drop(k *entry) {
	if u := h.ups[k]; u != nil {
		u.c.Close()
		delete(h.ups, k)
	}
}

func (h *h1conn) closeAll() {
	h.c.Close()
	for k, u := range h.ups {
		u.c.Close()
		delete(h.ups, k)
	}
}

// startIdle keeps up for the next request to k, watching it while idle: an upstream that closes
// (or sends anything) while no request is outstanding is not reused.
func (h *h1conn) startIdle(k *entry, u *h1up) {
	if u.br.Buffered() > 0 {
		h.drop(k)
		return
	}
	if u.c.SetReadDeadline(time.Time{}) != nil {
		return // no deadlines: no watcher, a stale connection is noticed when it fails
	}
	ch := make(chan error, 1)
	u.idle = ch
	go func() {
		_, err := u.br.Peek(1)
		if !isTimeout(err) {
			u.c.Close() // closed or talking out of turn: release it now, take drops it later
		}
		ch <- err
	}()
}

// stopIdle ends the idle watcher and reports whether the connection is still usable.
func (u *h1up) stopIdle() bool {
	if u.idle == nil {
		return true
	}
	ch := u.idle
	u.idle = nil
	u.c.SetReadDeadline(time.Unix(1, 0))
	err := <-ch
	u.c.SetReadDeadline(time.Time{})
	return isTimeout(err) && u.br.Buffered() == 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// badGateway answers the client with 502 when the real pods cannot be reached; the connection
// is closed afterwards since the request body may not have been read.
func (h *h1conn) badGateway(err error) {
	body := fmt.Sprintf("kubectl-tp intercept router: cannot reach the upstream: %v\n", err)
	fmt.Fprintf(h.c, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

type trackWriter struct {
	w   io.Writer
	err error
}

func (t *trackWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

// readHead reads one message head (start line and header fields, up to and including the empty
// line) from br as raw bytes, skipping empty lines before it (RFC 9112 2.2). On error it returns
// what it read.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		start := len(head)
		var err error
		head, err = appendLine(head, br, maxHeadBytes)
		if err != nil {
			return head, err
		}
		if isEmptyLine(head[start:]) {
			if start == 0 {
				head = head[:0]
				continue
			}
			return head, nil
		}
	}
}

// appendLine appends one line (up to and including '\n') from br to b, failing when b would grow
// beyond max.
func appendLine(b []byte, br *bufio.Reader, max int) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > max {
			return b, errors.New("intercept: HTTP line or head too long")
		}
		if err != bufio.ErrBufferFull {
			return b, err
		}
	}
}

func isEmptyLine(l []byte) bool {
	return string(l) == "\r\n" || string(l) == "\n"
}

// copyChunked copies one chunked body from br to w as it is on the wire: chunk-size lines with
// their extensions, data, the last chunk and the trailer section. Each chunk is written as soon
// as it is read, so a streamed body stays streamed.
func copyChunked(w io.Writer, br *bufio.Reader) error {
	for {
		line, err := appendLine(nil, br, maxLineBytes)
		if err != nil {
			return err
		}
		size, err := chunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			for start := 0; ; {
				start = len(line)
				if line, err = appendLine(line, br, maxHeadBytes); err != nil {
					return err
				}
				if isEmptyLine(line[start:]) {
					break
				}
			}
			_, err = w.Write(line)
			return err
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if _, err := io.CopyN(w, br, size); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		crlf, err := appendLine(nil, br, maxLineBytes)
		if err != nil {
			return err
		}
		if !isEmptyLine(crlf) {
			return errors.New("intercept: malformed chunked body: no line end after chunk data")
		}
		if _, err := w.Write(crlf); err != nil {
			return err
		}
	}
}

// chunkSize parses the size of a chunk-size line (hex, then optional whitespace and extensions).
func chunkSize(line []byte) (int64, error) {
	s := strings.TrimRight(string(line), "\r\n")
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " \t")
	if s == "" || len(s) > 15 {
		return 0, fmt.Errorf("intercept: malformed chunk size %q", line)
	}
	n, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("intercept: malformed chunk size %q", line)
	}
	return int64(n), nil
}

// copyN copies n bytes of a body from src, read through br, to dst: first what br holds, then
// straight from src, so that two TCP connections are joined by splice(2) in the kernel rather
// than copied through this process (io.CopyN over br would never let the kernel do it).
func copyN(dst io.Writer, br *bufio.Reader, src io.Reader, n int64) error {
	if b := min(int64(br.Buffered()), n); b > 0 {
		if _, err := io.CopyN(dst, br, b); err != nil {
			return err
		}
		n -= b
	}
	if n == 0 {
		return nil
	}
	if br.Buffered() > 0 {
		// Cannot happen (the buffer was drained above); stay correct if it does.
		_, err := io.CopyN(dst, br, n)
		return err
	}
	_, err := io.CopyN(dst, src, n)
	return err
}
