// Package podshim is the in-cluster end of the kubectl-tp tunnel: a [Server] that
// accepts tunnel streams (see package tunnel), dials TCP destinations from inside the
// pod, resolves DNS with the pod's resolv.conf semantics, reports its environment,
// sends the contents of its volumes, listens on exposed ports and hands inbound
// connections back to the laptop over parked streams, answers heartbeats, and exits
// when no client has been heard from for a while. In router mode (see [RouterConfig]) it
// is instead the shared intercept router of one Service.
//
// It leaves out the listener (the caller provides one, normally on 127.0.0.1 and
// reached through a Kubernetes port-forward), flag parsing and process exit (see
// cmd/podshim), UDP proxying, and any TLS or encryption: the stream transport and the
// per-session token are the only protection. It must not import any k8s.io package.
package podshim

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/kubectl-tp/kubectl-tp/internal/relay"

	"github.com/libp2p/go-yamux/v5"

	"github.com/kubectl-tp/kubectl-tp/internal/version"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// ErrIdle is returned by [Server.Serve] when no client was heard from for IdleTimeout.
var ErrIdle = errors.New("podshim: no client heard from within the idle timeout")

// Defaults for the zero values of Server fields.
const (
	// DefaultIdleTimeout is used when Server.IdleTimeout is zero.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultResolvConf is used when Server.ResolvConf is empty.
	DefaultResolvConf = "/etc/resolv.conf"
	// DialTimeout bounds each outgoing dial.
	DialTimeout = 10 * time.Second
	// requestTimeout bounds reading the first frame of a stream.
	requestTimeout = 10 * time.Second
)

// Server serves the tunnel protocol. The zero value is usable (with no token check).
// Fields must not be changed once Serve has been called.
type Server struct {
	// Token is the per-session secret every request must carry. Empty disables the
	// check; that is only meant for tests.
	Token string
	// IdleTimeout is how long Serve runs without hearing from any client (an
	// authenticated request or a ping) before returning ErrIdle. Zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// ResolvConf is the resolver configuration file. Empty means DefaultResolvConf.
	ResolvConf string
	// Nameservers, if non-empty, replaces the nameservers of ResolvConf for DNS
	// streams; entries are "host" or "host:port" (port 53 by default). Search and
	// ndots still come from ResolvConf. Meant for tests.
	Nameservers []string
	// Logf logs diagnostics; nil means no logging.
	Logf logger.Logf
	// Dial opens outgoing connections; nil means a net.Dialer (which uses the pod's
	// resolver and search list).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Environ returns the environment the env op reports ("KEY=value" entries); nil
	// means os.Environ. Meant for tests.
	Environ func() []string

	// ReadyAddr, when set, is where podshim starts listening once ports have been exposed, for a
	// tcpSocket readiness probe: a Service then sends traffic to the pod only when it is carried
	// back to the laptop. Empty means no readiness listener.
	ReadyAddr string
	// Direct, when set, is the direct path's listener state (OpDirect registers clients with
	// it); the caller serves Direct.Listener's connections with Serve too (MergeListeners).
	Direct *Direct
	// ExposeHost is the address exposed ports are bound to; empty means all the pod's addresses
	// (what --expose needs). Tests set 127.0.0.1.
	ExposeHost string
	// Router, when set, runs podshim as the intercept router of a Service (see RouterConfig):
	// Serve also listens on Router.Ports, serves only the hello, mux and intercept ops, and
	// does not end for want of clients (IdleTimeout does not apply; see RouterStatus).
	Router *RouterConfig

	// router is the running router of Serve in router mode.
	router atomic.Pointer[routerState]

	lastHeard atomic.Int64 // unix nanoseconds

	// exposeStates holds the --expose state of each running Serve call, by its context.
	exposeMu     sync.Mutex
	exposeStates map[context.Context]*reverseState
	readyOnce    sync.Once

	// muxBudget is the window growth budget all multiplexed carriers share.
	muxBudget     func() (yamux.MemoryManager, error)
	muxBudgetOnce sync.Once
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) resolvConf() string {
	if s.ResolvConf != "" {
		return s.ResolvConf
	}
	return DefaultResolvConf
}

func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (s *Server) heard() { s.lastHeard.Store(time.Now().UnixNano()) }

// Serve accepts streams on ln and serves them until ctx is cancelled (it then
// returns nil) or no client has been heard from for IdleTimeout (it returns
// ErrIdle). The idle clock starts when Serve is called. Serve closes ln and every
// stream it accepted before returning.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.heard()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if s.Router != nil {
		rs, err := s.startRouter(ctx)
		if err != nil {
			ln.Close()
			return err
		}
		defer rs.wait()
	}

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	acceptErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			mu.Lock()
			if ctx.Err() != nil {
				mu.Unlock()
				c.Close()
				continue
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				s.serveConn(ctx, c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
		}
	}()

	idle := s.idleTimeout()
	timer := time.NewTimer(idle)
	defer timer.Stop()
	if s.Router != nil {
		timer.Stop() // a router serves until cancelled
	}
	var result error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-acceptErr:
			result = fmt.Errorf("podshim: accepting: %w", err)
			break loop
		case <-timer.C:
			left := time.Until(time.Unix(0, s.lastHeard.Load()).Add(idle))
			if left <= 0 {
				result = ErrIdle
				break loop
			}
			timer.Reset(left)
		}
	}
	mu.Lock()
	cancel(result)
	ln.Close()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return result
}

// serveConn handles one stream; the caller closes c.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	var req tunnel.Request
	if err := tunnel.ReadFrame(c, &req); err != nil {
		s.logf("%v: bad request: %v", c.RemoteAddr(), err)
		if errors.Is(err, tunnel.ErrFrameTooLarge) {
			s.reply(c, fail(tunnel.CodeBadRequest, err.Error()))
		}
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if s.Token != "" && subtle.ConstantTimeCompare([]byte(req.Token), []byte(s.Token)) != 1 {
		s.logf("%v: %s request with a wrong token", c.RemoteAddr(), req.Op)
		s.reply(c, fail(tunnel.CodeAuth, "wrong token"))
		return
	}
	s.heard()
	if s.Router != nil && !routerOp(req.Op) {
		s.reply(c, fail(tunnel.CodeBadRequest, fmt.Sprintf("op %q is not served by an intercept router", req.Op)))
		return
	}
	switch req.Op {
	case tunnel.OpHello:
		s.serveHello(c)
	case tunnel.OpDial:
		s.serveDial(ctx, c, &req)
	case tunnel.OpDNS:
		s.serveDNS(ctx, c)
	case tunnel.OpEnv:
		s.serveEnv(c)
	case tunnel.OpFiles:
		s.serveFiles(ctx, c, &req)
	case tunnel.OpExpose:
		s.serveExpose(ctx, c, &req)
	case tunnel.OpAccept:
		s.serveAccept(ctx, c)
	case tunnel.OpMux:
		s.serveMux(ctx, c)
	case tunnel.OpDirect:
		s.serveDirect(c, &req)
	case tunnel.OpIntercept:
		s.serveIntercept(ctx, c, &req)
	case tunnel.OpInterceptAccept:
		s.serveInterceptAccept(ctx, c, &req)
	case tunnel.OpInterceptList:
		s.serveInterceptList(c)
	case tunnel.OpInterceptRetire:
		s.serveInterceptRetire(c)
	default:
		s.reply(c, fail(tunnel.CodeBadRequest, fmt.Sprintf("unknown op %q", req.Op)))
	}
}

func fail(code, msg string) *tunnel.Response {
	return &tunnel.Response{Code: code, Error: msg}
}

func (s *Server) reply(c net.Conn, r *tunnel.Response) bool {
	_ = c.SetWriteDeadline(time.Now().Add(requestTimeout))
	err := tunnel.WriteFrame(c, r)
	_ = c.SetWriteDeadline(time.Time{})
	if err != nil {
		s.logf("%v: %v", c.RemoteAddr(), err)
		return false
	}
	return true
}

// serveHello answers a hello and then pings until the stream ends.
func (s *Server) serveHello(c net.Conn) {
	resp := &tunnel.Response{OK: true, Version: version.Version}
	resp.Hostname, _ = os.Hostname()
	if rc, err := readResolvConf(s.resolvConf()); err != nil {
		s.logf("%v", err)
	} else {
		resp.Nameservers, resp.Search, resp.Ndots = rc.Servers, rc.Search, rc.Ndots
	}
	if !s.reply(c, resp) {
		return
	}
	for {
		var req tunnel.Request
		if err := tunnel.ReadFrame(c, &req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logf("%v: heartbeat: %v", c.RemoteAddr(), err)
			}
			return
		}
		if req.Op != tunnel.OpPing {
			s.reply(c, fail(tunnel.CodeBadRequest, fmt.Sprintf("unexpected op %q on heartbeat stream", req.Op)))
			return
		}
		s.heard()
		if !s.reply(c, &tunnel.Response{OK: true}) {
			return
		}
	}
}

// serveMux runs a yamux session on c (podshim as server) and serves every stream opened in it as
// if it had arrived on the listener, until the carrier or ctx ends.
func (s *Server) serveMux(ctx context.Context, c net.Conn) {
	if !s.reply(c, &tunnel.Response{OK: true, Version: version.Version}) {
		return
	}
	s.muxBudgetOnce.Do(func() { s.muxBudget = tunnel.NewWindowBudget(tunnel.MuxGrowthBudget) })
	sess, err := yamux.Server(c, tunnel.MuxConfig(), s.muxBudget)
	if err != nil {
		s.logf("%v: starting yamux: %v", c.RemoteAddr(), err)
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	var wg sync.WaitGroup
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := tunnel.MuxStream(st)
			s.serveConn(ctx, conn)
			conn.Close()
		}()
	}
	_ = sess.Close()
	wg.Wait()
}

// serveDial dials req.Addr and then copies bytes both ways.
func (s *Server) serveDial(ctx context.Context, c net.Conn, req *tunnel.Request) {
	if req.Network != "tcp" {
		s.reply(c, fail(tunnel.CodeBadRequest, fmt.Sprintf("unsupported network %q", req.Network)))
		return
	}
	if _, _, err := net.SplitHostPort(req.Addr); err != nil {
		s.reply(c, fail(tunnel.CodeBadRequest, err.Error()))
		return
	}
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	target, err := s.dial(dctx, "tcp", req.Addr)
	cancel()
	if err != nil {
		s.logf("dial %s: %v", req.Addr, err)
		s.reply(c, fail(DialErrorCode(err), err.Error()))
		return
	}
	defer target.Close()
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	relay.Pipe(c, target)
}

// DialErrorCode maps a dial error to a tunnel code.
func DialErrorCode(err error) string {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return tunnel.CodeNXDomain
	case errors.Is(err, syscall.ECONNREFUSED):
		return tunnel.CodeRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return tunnel.CodeUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return tunnel.CodeTimeout
	}
	return tunnel.CodeError
}

type closeWriter interface{ CloseWrite() error }
