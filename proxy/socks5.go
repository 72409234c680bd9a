package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// dialTimeout bounds a dial through the Dialer for one proxied connection.
const dialTimeout = 30 * time.Second

// SOCKS5 is a SOCKS5 proxy with socks5h semantics: destination names are passed
// unresolved to Dialer. Only CONNECT is supported. The zero value needs Dialer set.
type SOCKS5 struct {
	// Dialer opens the proxied connections.
	Dialer Dialer
	// Username and Password require RFC 1929 authentication. Both must be set unless NoAuth
	// is: Serve fails closed rather than run an open proxy by mistake.
	Username, Password string
	// NoAuth serves without authentication (for a listener guarded otherwise, e.g. SameUser).
	NoAuth bool
	// Logf logs diagnostics; nil means no logging.
	Logf logger.Logf

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
}

// Serve accepts SOCKS5 clients on ln until ln fails or Close is called (then it
// returns nil). It closes ln.
func (s *SOCKS5) Serve(ln net.Listener) error {
	if err := checkCredentials("socks5", s.Username, s.Password, s.NoAuth); err != nil {
		ln.Close()
		return err
	}
	if !s.track(ln) {
		ln.Close()
		return nil
	}
	defer s.untrackListener(ln)
	opts := []socks5.Option{
		socks5.WithResolver(noResolver{}),
		socks5.WithConnectHandle(s.connect),
		socks5.WithBindHandle(notSupported),
		socks5.WithAssociateHandle(notSupported),
		socks5.WithLogger(socksLogger{s.Logf}),
	}
	if !s.NoAuth {
		opts = append(opts, socks5.WithCredential(credentials{s.Username, s.Password}))
	}
	srv := socks5.NewServer(opts...)
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			return fmt.Errorf("proxy: socks5 accept: %w", err)
		}
		if !s.trackConn(c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.untrackConn(c)
			if err := srv.ServeConn(c); err != nil {
				logf(s.Logf, "socks5: %v: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// Close stops every Serve call and closes all client connections.
func (s *SOCKS5) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	return nil
}

func (s *SOCKS5) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.lns == nil {
		s.lns = make(map[net.Listener]struct{})
	}
	s.lns[ln] = struct{}{}
	return true
}

func (s *SOCKS5) untrackListener(ln net.Listener) {
	s.mu.Lock()
	delete(s.lns, ln)
	s.mu.Unlock()
	ln.Close()
}

func (s *SOCKS5) trackConn(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *SOCKS5) untrackConn(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *SOCKS5) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// connect dials the requested destination, by name if the client sent a name,
// writes the SOCKS reply and relays bytes.
func (s *SOCKS5) connect(ctx context.Context, w io.Writer, req *socks5.Request) error {
	dst := req.RawDestAddr
	host := dst.FQDN
	if host == "" {
		host = dst.IP.String()
	}
	addr := net.JoinHostPort(host, strconv.Itoa(dst.Port))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	target, err := s.Dialer.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		if rerr := socks5.SendReply(w, SOCKSReplyCode(err), nil); rerr != nil {
			return fmt.Errorf("sending reply: %w", rerr)
		}
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer target.Close()
	// The reply carries a bind address; the tunnel has none worth reporting.
	bind, ok := target.LocalAddr().(*net.TCPAddr)
	if !ok {
		bind = &net.TCPAddr{IP: net.IPv4zero}
	}
	if err := socks5.SendReply(w, statute.RepSuccess, bind); err != nil {
		return fmt.Errorf("sending reply: %w", err)
	}
	client, _ := w.(net.Conn)
	relay(client, req.Reader, target)
	return nil
}

// relay copies src→target and target→client until both directions end,
// propagating half-close where the connections support it.
func relay(client net.Conn, src io.Reader, target net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(target, src)
		if cw, ok := target.(closeWriter); err != nil || !ok || cw.CloseWrite() != nil {
			target.Close()
		}
	}()
	_, err := io.Copy(client, target)
	if cw, ok := client.(closeWriter); err != nil || !ok || cw.CloseWrite() != nil {
		client.Close()
		target.Close()
	}
	<-done
}

// SOCKSReplyCode maps a dial error to a SOCKS5 reply code.
func SOCKSReplyCode(err error) uint8 {
	var de *tunnel.RemoteError
	if errors.As(err, &de) {
		switch de.Code {
		case tunnel.CodeRefused:
			return statute.RepConnectionRefused
		case tunnel.CodeUnreachable, tunnel.CodeNXDomain:
			return statute.RepHostUnreachable
		case tunnel.CodeTimeout:
			return statute.RepTTLExpired
		}
		return statute.RepServerFailure
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return statute.RepTTLExpired
	}
	return statute.RepServerFailure
}

func notSupported(_ context.Context, w io.Writer, _ *socks5.Request) error {
	if err := socks5.SendReply(w, statute.RepCommandNotSupported, nil); err != nil {
		return fmt.Errorf("sending reply: %w", err)
	}
	return errors.New("command not supported")
}

// noResolver leaves names unresolved so that they reach the Dialer as names.
type noResolver struct{}

func (noResolver) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

// credentials checks one user name and password in constant time.
type credentials struct{ user, pass string }

func (c credentials) Valid(user, pass, _ string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(c.user))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(c.pass))
	return u&p == 1
}

type socksLogger struct{ f func(string, ...any) }

func (l socksLogger) Errorf(format string, args ...any) { logf(l.f, "socks5: "+format, args...) }

var (
	_ socks5.NameResolver    = noResolver{}
	_ socks5.CredentialStore = credentials{}
	_ socks5.Logger          = socksLogger{}
)
