// Package forward opens byte streams to one port of one pod through the Kubernetes API server's
// port-forward subresource, without binding any local port.
//
// A Forwarder keeps a single upgraded connection and opens a fresh pair of port-forward streams on
// it for every Open, as
// `kubectl port-forward` does for every accepted local connection, but with the pair's two streams
// created at once (one round trip to the node instead of two). kubectl-tp opens one such stream as
// the carrier of its multiplexed tunnel (tunnel.Mux). When the connection breaks, the next Open
// dials a new one.
//
// What it leaves out: listening on local ports (the proxy package does that), UDP (the port-forward
// subresource carries TCP only), multiplexing (package tunnel) and any retry policy beyond
// re-dialing a broken connection.
//
// The connection is SPDY, falling back to SPDY tunnelled in a websocket (kubectl ≥ 1.31's first
// choice) when the SPDY upgrade fails, for example through a proxy that passes only websockets.
// SPDY comes first because it costs less per byte: the API server hands the upgraded connection to
// the kubelet untouched, where a websocket's frames are taken apart and re-framed as SPDY on the
// way, and the laptop frames each message once instead of twice. On the test cluster a download
// through SPDY took 0.8 s less laptop CPU and 0.75 s less API server CPU per GB than through the
// websocket (see docs/benchmarks.md). Once the websocket was needed, a Forwarder dials it first.
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Forwarder opens streams to Port of the pod Namespace/Pod. Its zero value is not usable: set
// Config, Namespace, Pod and Port. It is safe for concurrent use.
type Forwarder struct {
	// Config is the REST config of the cluster (from the user's kubeconfig).
	Config *rest.Config
	// Namespace and Pod name the pod to forward to.
	Namespace, Pod string
	// Port is the pod port that each stream connects to.
	Port int
	// DialTimeout bounds the upgrade of a new connection (default 15 s), both protocols together;
	// SPDY gets at most half of it when the websocket is still to be tried.
	DialTimeout time.Duration

	// dialMu serializes dials (Opens that arrive meanwhile wait for the one connection); mu
	// guards Pod, conn and gen and is never held across a dial, so Reset, Retarget and Close
	// return at once.
	dialMu sync.Mutex
	mu     sync.Mutex
	conn   httpstream.Connection
	gen    uint64 // incremented by Reset and Retarget: a dial begun before is stale
	nextID atomic.Int64
	// proto is the Protocol of the last connection dialled; wsFirst is set once SPDY failed and
	// the websocket worked.
	proto   atomic.Value
	wsFirst atomic.Bool
}

// Protocol names the upgrade that carries a Forwarder's streams.
type Protocol string

const (
	// SPDY is SPDY/3.1 straight over the API server's TLS connection.
	SPDY Protocol = "SPDY"
	// Websocket is SPDY/3.1 tunnelled in a websocket (portforward.k8s.io's websocket tunnelling).
	Websocket Protocol = "websocket"
)

// Protocol returns the protocol of the last connection dialled, "" before the first.
func (f *Forwarder) Protocol() Protocol {
	p, _ := f.proto.Load().(Protocol)
	return p
}

// Open returns a new stream to the pod port as a net.Conn. CloseWrite half-closes it; Close
// resets it. Errors that the kubelet reports for the stream (nothing listening, pod gone) are
// returned by Read.
func (f *Forwarder) Open(ctx context.Context) (net.Conn, error) {
	conn, err := f.connection(ctx)
	if err != nil {
		return nil, err
	}
	// Creating a stream waits for the other end's reply, and a broken connection may never send
	// it: wait in a goroutine, bounded by ctx and by the connection closing.
	type result struct {
		c   *streamConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := f.streams(conn)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			// A connection that cannot create streams is broken: forget it so the next Open re-dials.
			f.drop(conn)
			return nil, r.err
		}
		return r.c, nil
	case <-ctx.Done():
	case <-conn.CloseChan():
		ctx = context.Background()
	}
	go func() {
		if r := <-ch; r.c != nil {
			_ = r.c.Close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.drop(conn)
	return nil, errors.New("port-forward: the connection to the API server closed")
}

// Reset closes the current connection, if any, so that the next Open dials a new one.
func (f *Forwarder) Reset() {
	f.mu.Lock()
	conn := f.conn
	f.conn = nil
	f.gen++
	f.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// Retarget points the Forwarder at another pod of the same namespace (a replacement proxy pod) and
// closes the current connection, so every stream on it ends now and the next Open dials the new
// pod.
func (f *Forwarder) Retarget(pod string) {
	f.mu.Lock()
	f.Pod = pod
	conn := f.conn
	f.conn = nil
	f.gen++
	f.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

func (f *Forwarder) pod() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Pod
}

// Close closes the connection and every stream on it.
func (f *Forwarder) Close() error { f.Reset(); return nil }

func (f *Forwarder) drop(conn httpstream.Connection) {
	f.mu.Lock()
	if f.conn == conn {
		f.conn = nil
	}
	f.mu.Unlock()
	_ = conn.Close()
}

func (f *Forwarder) connection(ctx context.Context) (httpstream.Connection, error) {
	if c, _ := f.current(); c != nil {
		return c, nil
	}
	f.dialMu.Lock()
	defer f.dialMu.Unlock()
	c, gen := f.current()
	if c != nil { // dialled while this caller waited
		return c, nil
	}
	conn, err := f.dial(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gen != gen {
		// Reset, Retarget or Close came during the dial: the connection may lead to the old pod.
		_ = conn.Close()
		return nil, fmt.Errorf("port-forward to pod %s/%s: reset while connecting", f.Namespace, f.Pod)
	}
	f.conn = conn
	return conn, nil
}

// current returns the live connection, if any, and the generation it belongs to.
func (f *Forwarder) current() (httpstream.Connection, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		select {
		case <-f.conn.CloseChan():
			f.conn = nil
		default:
		}
	}
	return f.conn, f.gen
}

func (f *Forwarder) dial(ctx context.Context) (httpstream.Connection, error) {
	pod := f.pod()
	if f.Config == nil || pod == "" || f.Port == 0 {
		return nil, errors.New("forward: Config, Pod and Port must be set")
	}
	core, err := corev1client.NewForConfig(f.Config)
	if err != nil {
		return nil, err
	}
	u := core.RESTClient().Post().Resource("pods").Namespace(f.Namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(f.Config)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialer(u, f.Config)
	if err != nil {
		return nil, err
	}
	timeout := f.DialTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tries := []try{{SPDY, spdyDialer}, {Websocket, wsDialer}}
	if f.wsFirst.Load() {
		tries[0], tries[1] = tries[1], tries[0]
	}
	conn, p, err := dialFirst(ctx, tries, timeout/2)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("no answer from the API server within %s", timeout)
		}
		return nil, fmt.Errorf("port-forward to pod %s/%s: %w", f.Namespace, pod, err)
	}
	if p == Websocket && tries[0].proto == SPDY {
		f.wsFirst.Store(true)
	}
	f.proto.Store(p)
	return conn, nil
}

// try is one protocol to dial a port-forward connection with.
type try struct {
	proto  Protocol
	dialer httpstream.Dialer
}

// dialFirst dials with each of tries in turn until one works and returns that one's connection
// and protocol. Every try but the last gets at most early. A try that fails hands over to the
// next (a refused upgrade, a proxy that drops it, no answer) unless the API server itself answered
// with a status (forbidden, no such pod, the kubelet unreachable), which the next protocol would
// get as well. When all fail, the error is the first try's, with the others' when they differ.
// ctx bounds the whole.
func dialFirst(ctx context.Context, tries []try, early time.Duration) (httpstream.Connection, Protocol, error) {
	var msgs []string
	var first error
	for i, t := range tries {
		tctx := ctx
		if i < len(tries)-1 {
			var cancel context.CancelFunc
			tctx, cancel = context.WithTimeout(ctx, early)
			defer cancel()
		}
		conn, err := dialOne(tctx, t.dialer)
		if err == nil {
			return conn, t.proto, nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", early)
		}
		if first == nil {
			first = err
			var status apierrors.APIStatus
			if errors.As(err, &status) {
				break
			}
		} else if m := err.Error(); m != first.Error() {
			msgs = append(msgs, fmt.Sprintf("%s: %s", t.proto, m))
		}
	}
	if len(msgs) > 0 {
		return nil, "", fmt.Errorf("%w (%s)", first, strings.Join(msgs, "; "))
	}
	return nil, "", first
}

// dialOne dials with d, bounded by ctx (the dialers take no context: a dial that is given up
// on is closed when it completes).
func dialOne(ctx context.Context, d httpstream.Dialer) (httpstream.Connection, error) {
	type result struct {
		conn httpstream.Connection
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, _, err := d.Dial(portforward.PortForwardProtocolV1Name)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// streams creates the error and data streams of one port-forward request. CreateStream waits for
// the other end's reply, and the kubelet (or the runtime's streaming server) pairs the two streams
// by request ID in whichever order they arrive, so both are created at once: one round trip to the
// node instead of the two that `kubectl port-forward` spends.
func (f *Forwarder) streams(conn httpstream.Connection) (*streamConn, error) {
	id := f.nextID.Add(1)
	headers := func(typ string) http.Header {
		h := http.Header{}
		h.Set(corev1.StreamType, typ)
		h.Set(corev1.PortHeader, strconv.Itoa(f.Port))
		h.Set(corev1.PortForwardRequestIDHeader, strconv.FormatInt(id, 10))
		return h
	}
	type created struct {
		s   httpstream.Stream
		err error
	}
	errCh := make(chan created, 1)
	go func() {
		s, err := conn.CreateStream(headers(corev1.StreamTypeError))
		errCh <- created{s, err}
	}()
	data, dataErr := conn.CreateStream(headers(corev1.StreamTypeData))
	e := <-errCh
	if dataErr != nil || e.err != nil {
		for _, s := range []httpstream.Stream{data, e.s} {
			if s != nil {
				_ = s.Reset()
				conn.RemoveStreams(s)
			}
		}
		if e.err != nil {
			return nil, fmt.Errorf("port-forward: creating error stream: %w", e.err)
		}
		return nil, fmt.Errorf("port-forward: creating data stream: %w", dataErr)
	}
	errStream := e.s
	_ = errStream.Close() // we never write to it
	c := &streamConn{conn: conn, data: data, errStream: errStream, local: addr("local"), remote: addr(fmt.Sprintf("%s/%s:%d", f.Namespace, f.pod(), f.Port))}
	c.start()
	return c, nil
}

// streamConn adapts a port-forward data stream to net.Conn. Reads go straight to the stream (no
// extra copy or goroutine hand-off on the data path). A port-forward stream cannot interrupt a
// waiting read, so a read deadline means "give up": when it passes, the stream is reset and Read
// returns an error wrapping os.ErrDeadlineExceeded; the stream is not usable afterwards (callers
// here only use deadlines to bound a handshake, and close the stream when it fails). Write
// deadlines are not enforced: a write blocks only while the API server's TCP connection is full.
type streamConn struct {
	conn          httpstream.Connection
	data          httpstream.Stream
	errStream     httpstream.Stream
	local, remote net.Addr

	errMu     sync.Mutex
	remoteErr error
	closeOnce sync.Once

	dlMu     sync.Mutex
	dlTimer  *time.Timer
	timedOut atomic.Bool
}

var _ net.Conn = (*streamConn)(nil)

func (c *streamConn) start() { go c.watchErrors() }

func (c *streamConn) watchErrors() {
	msg, err := io.ReadAll(c.errStream)
	c.errMu.Lock()
	defer c.errMu.Unlock()
	switch {
	case len(msg) > 0:
		c.remoteErr = fmt.Errorf("port-forward: %s", strings.TrimSpace(string(msg)))
		// The kubelet could not connect: unblock readers.
		_ = c.data.Reset()
	case err != nil && !errors.Is(err, io.EOF):
		c.remoteErr = err
	}
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.timedOut.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	n, err := c.data.Read(p)
	if err != nil && n == 0 {
		if c.timedOut.Load() {
			return 0, os.ErrDeadlineExceeded
		}
		c.errMu.Lock()
		rerr := c.remoteErr
		c.errMu.Unlock()
		if rerr != nil {
			return 0, rerr
		}
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) { return c.data.Write(p) }

// CloseWrite tells the pod side that no more data follows (half-close).
func (c *streamConn) CloseWrite() error { return c.data.Close() }

func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.SetReadDeadline(time.Time{})
		_ = c.data.Reset()
		c.conn.RemoveStreams(c.data, c.errStream)
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read deadline; see streamConn for write deadlines.
func (c *streamConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline resets the stream when t passes (see streamConn); the zero time clears it.
func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if c.dlTimer != nil {
		c.dlTimer.Stop()
		c.dlTimer = nil
	}
	if !t.IsZero() {
		c.dlTimer = time.AfterFunc(time.Until(t), func() {
			c.timedOut.Store(true)
			_ = c.data.Reset()
		})
	}
	return nil
}

// SetWriteDeadline is accepted and not enforced; see streamConn.
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

type addr string

func (a addr) Network() string { return "portforward" }
func (a addr) String() string  { return string(a) }
