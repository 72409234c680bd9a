package podshim

import (
	"crypto/sha256"
	"crypto/tls"
	"net"
	"sync"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Direct is podshim's end of the direct path (see package tunnel): a TLS listener on every
// address of the pod that accepts only the clients whose certificates were registered over the
// port-forward (OpDirect). What arrives on it is served like the tunnel listener's streams, token
// check included.
//
// What it leaves out: choosing the path (the laptop decides) and any NetworkPolicy (one that
// blocks the port makes the laptop fall back to the port-forward).
type Direct struct {
	// Port is the port the direct listener is bound to, reported to clients.
	Port int

	cert    tls.Certificate
	mu      sync.Mutex
	allowed map[[32]byte]bool
}

// NewDirect returns a Direct for a listener on port, with a fresh certificate.
func NewDirect(port int) (*Direct, error) {
	cert, err := tunnel.SelfSigned()
	if err != nil {
		return nil, err
	}
	return &Direct{Port: port, cert: cert, allowed: map[[32]byte]bool{}}, nil
}

// Listener wraps ln (normally on all the pod's addresses) in TLS 1.3 requiring a registered
// client certificate.
func (d *Direct) Listener(ln net.Listener) net.Listener {
	return tls.NewListener(ln, &tls.Config{
		Certificates:          []tls.Certificate{d.cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: tunnel.Pinned(d.isAllowed),
		MinVersion:            tls.VersionTLS13,
	})
}

func (d *Direct) isAllowed(sum [32]byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allowed[sum]
}

// register pins a client certificate and returns the server's.
func (d *Direct) register(cert []byte) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.allowed[sha256.Sum256(cert)] = true
	return d.cert.Certificate[0]
}

// serveDirect answers OpDirect.
func (s *Server) serveDirect(c net.Conn, req *tunnel.Request) {
	if s.Direct == nil {
		s.reply(c, fail(tunnel.CodeBadRequest, "no direct listener (podshim started without -direct)"))
		return
	}
	if len(req.Cert) == 0 {
		s.reply(c, fail(tunnel.CodeBadRequest, "direct: no client certificate"))
		return
	}
	s.reply(c, &tunnel.Response{OK: true, Port: s.Direct.Port, Cert: s.Direct.register(req.Cert)})
}

// MergeListeners returns a listener that accepts from a and b; closing it closes both. Accept
// fails once both have failed.
func MergeListeners(a, b net.Listener) net.Listener {
	m := &merged{a: a, conns: make(chan net.Conn), done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, ln := range []net.Listener{a, b} {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				select {
				case m.conns <- c:
				case <-m.done:
					c.Close()
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(m.conns) }()
	m.closeAll = func() { a.Close(); b.Close() }
	return m
}

type merged struct {
	a        net.Listener
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
	closeAll func()
}

func (m *merged) Accept() (net.Conn, error) {
	c, ok := <-m.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

func (m *merged) Close() error {
	m.once.Do(func() { close(m.done); m.closeAll() })
	return nil
}

func (m *merged) Addr() net.Addr { return m.a.Addr() }
