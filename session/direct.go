package session

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// The direct path (--direct, on by default): when this machine can reach the proxy pod's IP (a
// local cluster, a VPN into the pod network), the tunnel's carriers go over TLS straight to
// podshim instead of through the API server, kubelet and container runtime. The certificates are
// exchanged over the port-forward (tunnel.Client.Direct) and pinned on both sides. A quick probe
// chooses the path at start and after a healed pod; when the direct path breaks, new carriers go
// through the port-forward again, with one line saying so.
//
// What it leaves out: going back to the direct path after it broke (until the pod is replaced),
// and any path through a proxy or jump host.

// directProbe bounds the probe of the direct path; directDial bounds each direct carrier's dial.
const (
	directProbe = 1500 * time.Millisecond
	directDial  = 3 * time.Second
)

// directPath is a working direct path to the current proxy pod.
type directPath struct {
	host string
	info tunnel.DirectInfo
	cert tls.Certificate
}

func (d *directPath) String() string { return fmt.Sprintf("%s:%d", d.host, d.info.Port) }

// carrier opens a carrier of the tunnel: over the direct path while it works, else through the
// API server's port-forward.
func (s *Session) carrier(ctx context.Context) (net.Conn, error) {
	if d := s.direct.Load(); d != nil {
		dctx, cancel := context.WithTimeout(ctx, directDial)
		c, err := tunnel.DialDirect(dctx, d.host, d.info, d.cert)
		cancel()
		if err == nil {
			return c, nil
		}
		if s.direct.CompareAndSwap(d, nil) {
			s.logf("direct path to %s lost (%s); the tunnel goes through the API server's port-forward again", d, oneLine(err.Error()))
		}
	}
	return s.fwd.Open(ctx)
}

// tryDirect registers a certificate with podshim, probes the direct path to podIP and, when it
// works, moves the tunnel's carriers to it. It reports whether the direct path is in use; a path
// that does not work is said with -v only (it is the usual case outside a local cluster).
func (s *Session) tryDirect(ctx context.Context, podIP string) bool {
	s.direct.Store(nil)
	if !s.opts.Direct || podIP == "" {
		return false
	}
	cert, err := tunnel.SelfSigned()
	if err != nil {
		s.verbosef("direct path: %v", err)
		return false
	}
	info, err := s.client.Direct(ctx, cert.Certificate[0])
	if err != nil {
		s.verbosef("direct path: podshim offers none: %s", oneLine(err.Error()))
		return false
	}
	d := &directPath{host: podIP, info: info, cert: cert}
	pctx, cancel := context.WithTimeout(ctx, directProbe)
	c, err := tunnel.DialDirect(pctx, d.host, d.info, d.cert)
	cancel()
	if err != nil {
		s.verbosef("direct path to %s does not work (%s): using the API server's port-forward", d, oneLine(err.Error()))
		return false
	}
	_ = c.Close()
	s.direct.Store(d)
	// The carriers opened so far go through the port-forward: new ones take the direct path.
	s.mux.Redial()
	return true
}

// pathDescription is the start-up line's account of the tunnel's path.
func (s *Session) pathDescription() string {
	if d := s.direct.Load(); d != nil {
		return "tunnel: direct to " + d.String() + " (TLS)"
	}
	if s.fwd != nil && s.fwd.Protocol() != "" {
		return "tunnel: API server port-forward (" + string(s.fwd.Protocol()) + ")"
	}
	return "tunnel: API server port-forward"
}
