package podshim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/kubectl-tp/kubectl-tp/internal/relay"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Reverse forwarding: expose streams open listeners on pod ports, accept streams wait
// in a FIFO pool, and every inbound connection on an exposed port is handed to the
// oldest parked accept stream (see package tunnel for the protocol).
//
// The state belongs to one Serve call. The Server keeps it in exposeStates, keyed by the
// context Serve passes to its streams, and shuts it down when that context ends.
// Listeners are closed by the expose streams that opened them, which Serve waits
// for, so no listener outlives Serve.

// errProtocol reports bytes sent on a parked accept stream.
var errProtocol = errors.New("client wrote on a parked accept stream")

// watchParked reads from c, a parked accept stream (--expose or an intercept), on which the
// client sends nothing: the returned channel gets the read's error (errProtocol for a byte)
// when the stream breaks, or the caller's own deadline when it stops the watch with
// SetReadDeadline.
func watchParked(c net.Conn) <-chan error {
	readErr := make(chan error, 1)
	go func() {
		var b [1]byte
		n, err := c.Read(b[:])
		if n > 0 {
			err = errProtocol
		}
		readErr <- err
	}()
	return readErr
}

// reverseFor returns the reverse-forwarding state of the Serve call whose context is
// ctx, creating it on first use.
func (s *Server) reverseFor(ctx context.Context) *reverseState {
	s.exposeMu.Lock()
	defer s.exposeMu.Unlock()
	if st := s.exposeStates[ctx]; st != nil {
		return st
	}
	st := &reverseState{logf: s.logf, host: s.ExposeHost, ports: make(map[int]*exposedPort)}
	if ctx.Err() != nil {
		st.closed = true
		return st
	}
	if s.exposeStates == nil {
		s.exposeStates = make(map[context.Context]*reverseState)
	}
	s.exposeStates[ctx] = st
	context.AfterFunc(ctx, func() {
		s.exposeMu.Lock()
		delete(s.exposeStates, ctx)
		s.exposeMu.Unlock()
		st.shutdown()
	})
	return st
}

// reverseState is the listeners, parked accept streams and waiting inbound
// connections of one Serve call.
type reverseState struct {
	logf logger.Logf
	host string

	mu      sync.Mutex
	closed  bool
	ports   map[int]*exposedPort
	parked  []*acceptStream // oldest first
	waiting []*inbound      // oldest first
}

// exposedPort is one listener, shared by the expose streams that asked for its port.
type exposedPort struct {
	ln   net.Listener
	refs int
	done chan struct{} // closed when the accept loop has returned
}

// acceptStream is a parked accept stream; a dispatcher sends it at most one inbound
// connection.
type acceptStream struct {
	assign chan *inbound // buffered, capacity 1
}

// inbound is an accepted in-cluster connection on an exposed port.
type inbound struct {
	conn     net.Conn
	port     int
	deadline time.Time   // when it is reset if no accept stream took it
	timer    *time.Timer // fires at deadline while waiting; guarded by reverseState.mu
}

// acquire makes the state listen on every port of ports, opening those not yet open.
// On failure it gives back what it took and returns an error naming the port.
func (st *reverseState) acquire(ports []int) error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return errors.New("server is stopping")
	}
	var taken []int
	for _, p := range ports {
		if ep := st.ports[p]; ep != nil {
			ep.refs++
			taken = append(taken, p)
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(st.host, strconv.Itoa(p)))
		if err != nil {
			st.mu.Unlock()
			st.release(taken)
			if errors.Is(err, syscall.EACCES) && p < 1024 {
				return fmt.Errorf("port %d: %w (ports below 1024 need the sysctl net.ipv4.ip_unprivileged_port_start or CAP_NET_BIND_SERVICE)", p, err)
			}
			return fmt.Errorf("port %d: %w", p, err)
		}
		ep := &exposedPort{ln: ln, refs: 1, done: make(chan struct{})}
		st.ports[p] = ep
		taken = append(taken, p)
		go st.acceptLoop(p, ep)
	}
	st.mu.Unlock()
	return nil
}

// release drops one reference to each of ports, closing the listeners no expose
// stream needs any more and waiting for their accept loops to return.
func (st *reverseState) release(ports []int) {
	var closed []*exposedPort
	st.mu.Lock()
	for _, p := range ports {
		ep := st.ports[p]
		if ep == nil {
			continue
		}
		if ep.refs--; ep.refs == 0 {
			delete(st.ports, p)
			ep.ln.Close()
			closed = append(closed, ep)
		}
	}
	st.mu.Unlock()
	for _, ep := range closed {
		<-ep.done
	}
}

// acceptLoop dispatches the connections accepted on ep.ln until it is closed.
func (st *reverseState) acceptLoop(port int, ep *exposedPort) {
	defer close(ep.done)
	var delay time.Duration
	for {
		c, err := ep.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Typically out of file descriptors; back off like net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			st.logf("exposed port %d: accepting: %v; retrying in %v", port, err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		st.dispatch(&inbound{conn: c, port: port})
	}
}

// dispatch hands in to the oldest parked accept stream, or queues it until one
// parks or its deadline passes. It never blocks.
func (st *reverseState) dispatch(in *inbound) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		resetConn(in.conn)
		return
	}
	if len(st.parked) > 0 {
		a := st.parked[0]
		st.parked = st.parked[1:]
		a.assign <- in
		return
	}
	if in.deadline.IsZero() {
		in.deadline = time.Now().Add(tunnel.AcceptWait)
	}
	st.waiting = append(st.waiting, in)
	in.timer = time.AfterFunc(time.Until(in.deadline), func() { st.expire(in) })
}

// expire resets in if it is still waiting for an accept stream.
func (st *reverseState) expire(in *inbound) {
	st.mu.Lock()
	i := slices.Index(st.waiting, in)
	if i >= 0 {
		st.waiting = slices.Delete(st.waiting, i, i+1)
	}
	st.mu.Unlock()
	if i >= 0 {
		st.logf("exposed port %d: no accept stream from the client within %v; resetting the connection from %v",
			in.port, tunnel.AcceptWait, in.conn.RemoteAddr())
		resetConn(in.conn)
	}
}

// park adds a to the pool, or hands it the oldest waiting connection at once. It
// reports false if the state is shut down.
func (st *reverseState) park(a *acceptStream) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	if len(st.waiting) > 0 {
		in := st.waiting[0]
		st.waiting = st.waiting[1:]
		in.timer.Stop()
		a.assign <- in
		return true
	}
	st.parked = append(st.parked, a)
	return true
}

// unpark removes a from the pool. It reports false if a is no longer there, in which
// case a connection has been or is being sent on a.assign.
func (st *reverseState) unpark(a *acceptStream) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := slices.Index(st.parked, a)
	if i < 0 {
		return false
	}
	st.parked = slices.Delete(st.parked, i, i+1)
	return true
}

// shutdown stops dispatching and resets the connections still waiting. Parked
// streams notice the end of the Serve context and unpark themselves; listeners are
// closed by their expose streams.
func (st *reverseState) shutdown() {
	st.mu.Lock()
	st.closed = true
	waiting := st.waiting
	st.waiting = nil
	st.mu.Unlock()
	for _, in := range waiting {
		in.timer.Stop()
		resetConn(in.conn)
	}
}

// resetConn closes c with an RST rather than a FIN where it can.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// serveExpose listens on req.Ports until the client closes the stream or Serve ends.
func (s *Server) serveExpose(ctx context.Context, c net.Conn, req *tunnel.Request) {
	ports, err := tunnel.ValidatePorts(req.Ports)
	if err != nil {
		s.reply(c, fail(tunnel.CodeBadRequest, "expose: "+err.Error()))
		return
	}
	st := s.reverseFor(ctx)
	if err := st.acquire(ports); err != nil {
		s.logf("expose: %v", err)
		s.reply(c, fail(tunnel.CodeError, "expose: "+err.Error()))
		return
	}
	defer st.release(ports)
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	s.logf("exposing ports %v", ports)
	s.markReady(ctx)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// The client sends nothing more; the stream ending is the signal to unexpose.
	_, _ = io.Copy(io.Discard, c)
}

// serveAccept parks c until an inbound connection is dispatched to it, then carries
// that connection.
func (s *Server) serveAccept(ctx context.Context, c net.Conn) {
	st := s.reverseFor(ctx)
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	a := &acceptStream{assign: make(chan *inbound, 1)}
	if !st.park(a) {
		return
	}
	// Watch for the client going away while parked. The client sends nothing before
	// the second response, so any read result other than our own deadline means the
	// stream is unusable.
	readErr := watchParked(c)
	var in *inbound
	select {
	case in = <-a.assign:
	case <-readErr:
		if !st.unpark(a) {
			st.dispatch(<-a.assign)
		}
		return
	case <-ctx.Done():
		if !st.unpark(a) {
			resetConn((<-a.assign).conn)
		}
		return
	}
	_ = c.SetReadDeadline(time.Unix(1, 0))
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		st.dispatch(in)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	resp := &tunnel.Response{OK: true, Port: in.port, Peer: in.conn.RemoteAddr().String()}
	if !s.reply(c, resp) {
		st.dispatch(in)
		return
	}
	defer in.conn.Close()
	fromClient := &countingConn{Conn: c}
	relay.Pipe(&inboundConn{Conn: in.conn, fromClient: fromClient}, fromClient)
}

// countingConn is the accept stream during a handoff; it records whether the client
// has sent any byte.
type countingConn struct {
	net.Conn
	got atomic.Bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.got.Store(true)
	}
	return n, err
}

// CloseWrite half-closes the stream if it supports that.
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("podshim: stream does not support half-close")
}

// inboundConn is the in-cluster side of a handoff. When the client ends the stream
// without having sent a byte, it could not reach its local destination: the
// in-cluster connection is then reset instead of half-closed.
type inboundConn struct {
	net.Conn
	fromClient *countingConn
}

// CloseWrite half-closes the connection, or resets it if the client refused it.
func (c *inboundConn) CloseWrite() error {
	if !c.fromClient.got.Load() {
		resetConn(c.Conn)
		return nil
	}
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("podshim: connection does not support half-close")
}

// markReady opens the readiness listener (Server.ReadyAddr) once, after the first successful
// expose; it accepts and closes probe connections until ctx ends.
func (s *Server) markReady(ctx context.Context) {
	if s.ReadyAddr == "" {
		return
	}
	s.readyOnce.Do(func() {
		ln, err := net.Listen("tcp", s.ReadyAddr)
		if err != nil {
			s.logf("readiness listener on %s: %v", s.ReadyAddr, err)
			return
		}
		context.AfterFunc(ctx, func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	})
}
