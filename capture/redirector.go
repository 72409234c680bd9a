package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/kubectl-tp/kubectl-tp/internal/relay"
)

// Dialer opens connections through the tunnel (normally a *tunnel.Client). Host names in addr
// are resolved in the cluster.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Redirector is the loopback end of redirected connections. The supervisor binds the child's
// socket to a loopback address, announces it with [Redirector.Expect] and connects it to
// [Redirector.Addr]; the Redirector pairs the accepted connection with the announced destination
// and relays it through the tunnel. A connection that was not announced (another process on the
// machine) is closed at once: the listener gives nobody else the tunnel.
//
// It leaves out name resolution (the tunnel's) and UDP. Fields are set before Listen.
type Redirector struct {
	// Dialer carries connections to the cluster.
	Dialer Dialer
	// DialTimeout bounds one dial through the tunnel (default 30 s).
	DialTimeout time.Duration
	// Logf logs failed dials; nil means no logging.
	Logf logger.Logf

	mu      sync.Mutex
	pending map[netip.AddrPort]*expected
	lns     []net.Listener
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// expected is one announced connection.
type expected struct {
	dest string
	// upstream is the tunnel connection dialled before the child's connect returned (blocking
	// sockets, so the child gets the real error); nil: dial after accept.
	upstream net.Conn
}

// Listen opens the loopback listeners: 127.0.0.1 and, when the machine has it, [::1].
func (r *Redirector) Listen() error {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("capture: listening on loopback: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lns = append(r.lns, ln)
	if ln6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		r.lns = append(r.lns, ln6)
	}
	return nil
}

// Addr returns the listener for a socket of family v6 (false: IPv4). Without an IPv6 loopback,
// IPv6 sockets get the IPv4 listener's v4-mapped address.
func (r *Redirector) Addr(v6 bool) netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lns) == 0 {
		return netip.AddrPort{}
	}
	v4 := addrPort(r.lns[0].Addr())
	if !v6 {
		return v4
	}
	if len(r.lns) > 1 {
		return addrPort(r.lns[1].Addr())
	}
	return netip.AddrPortFrom(netip.AddrFrom16(v4.Addr().As16()), v4.Port())
}

// Serve accepts on every listener until Close. It returns nil after Close.
func (r *Redirector) Serve() error {
	r.mu.Lock()
	lns := r.lns
	r.mu.Unlock()
	if len(lns) == 0 {
		return errors.New("capture: redirector: Listen was not called")
	}
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- r.accept(ln) }()
	}
	var first error
	for range lns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	r.wg.Wait()
	return first
}

func (r *Redirector) accept(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			r.mu.Lock()
			closed := r.closed
			r.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("capture: redirector: %w", err)
		}
		key := addrPort(c.RemoteAddr())
		r.mu.Lock()
		e := r.pending[key]
		delete(r.pending, key)
		if e == nil || r.closed {
			r.mu.Unlock()
			c.Close() // not announced: not ours to carry
			continue
		}
		r.track(c, true)
		r.wg.Add(1)
		r.mu.Unlock()
		go r.carry(c, e)
	}
}

func (r *Redirector) carry(c net.Conn, e *expected) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		r.track(c, false)
		r.mu.Unlock()
		c.Close()
	}()
	up := e.upstream
	if up == nil {
		var err error
		up, err = r.Dial(context.Background(), e.dest)
		if err != nil {
			logf(r.Logf, "transparent: %s: %v", e.dest, err)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // a reset: the child sees the dial fail
			}
			return
		}
	}
	defer up.Close()
	r.mu.Lock()
	r.track(up, true)
	r.mu.Unlock()
	relay.Pipe(c, up)
	r.mu.Lock()
	r.track(up, false)
	r.mu.Unlock()
}

// track adds or removes c from the set closed by Close; r.mu is held.
func (r *Redirector) track(c net.Conn, add bool) {
	if add {
		if r.conns == nil {
			r.conns = map[net.Conn]struct{}{}
		}
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

// Dial opens a tunnel connection to dest within DialTimeout.
func (r *Redirector) Dial(ctx context.Context, dest string) (net.Conn, error) {
	d := r.DialTimeout
	if d == 0 {
		d = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return r.Dialer.DialContext(ctx, "tcp", dest)
}

// Expect announces that the socket bound to local will connect to the listener and must be
// carried to dest, over upstream when it is not nil (Forget or Close closes it if unused).
func (r *Redirector) Expect(local netip.AddrPort, dest string, upstream net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[netip.AddrPort]*expected{}
	}
	key := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if old := r.pending[key]; old != nil && old.upstream != nil {
		old.upstream.Close()
	}
	r.pending[key] = &expected{dest: dest, upstream: upstream}
}

// Forget withdraws an announcement whose connect failed.
func (r *Redirector) Forget(local netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if e := r.pending[key]; e != nil && e.upstream != nil {
		e.upstream.Close()
	}
	delete(r.pending, key)
}

// Close stops the listeners and every carried connection.
func (r *Redirector) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, ln := range r.lns {
		ln.Close()
	}
	for c := range r.conns {
		c.Close()
	}
	for k, e := range r.pending {
		if e.upstream != nil {
			e.upstream.Close()
		}
		delete(r.pending, k)
	}
	r.mu.Unlock()
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func logf(f func(string, ...any), format string, args ...any) {
	if f != nil {
		f(format, args...)
	}
}
