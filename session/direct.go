package session

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/kubectl-tp/kubectl-tp/forward"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// The direct path (--direct, on by default): when this machine can reach the proxy pod's IP (a
// local cluster, a VPN into the pod network), the tunnel's carriers go over TLS straight to
// podshim instead of through the API server, kubelet and container runtime. The certificates are
// exchanged over the port-forward (tunnel.Client.Direct) and pinned on both sides. A quick probe
// chooses the path at start and after a healed pod; when the direct path breaks, new carriers go
// through the port-forward again, with one line saying so. The intercept's connection to its
// router takes the same two paths (a podPath each).
//
// What it leaves out: going back to the direct path after it broke (until the pod is replaced),
// and any path through a proxy or jump host.

// directProbe bounds the probe of the direct path; directDial bounds each direct carrier's dial.
const (
	directProbe = 1500 * time.Millisecond
	directDial  = 3 * time.Second
)

// directPath is a working direct path to a podshim.
type directPath struct {
	host string
	info tunnel.DirectInfo
	cert tls.Certificate
}

func (d *directPath) String() string { return fmt.Sprintf("%s:%d", d.host, d.info.Port) }

// podPath is the way to one podshim (the proxy pod, an intercept router): the API server's
// port-forward, and the direct path while it works. Its zero value (with fwd set) uses the
// port-forward only.
type podPath struct {
	fwd    *forward.Forwarder
	direct atomic.Pointer[directPath]
	// what names the connection in the line said when the direct path is lost ("the tunnel").
	what string
	// logf says a line; verbosef says one with -v only.
	logf, verbosef func(format string, args ...any)
}

// carrier opens a carrier to the podshim: over the direct path while it works, else through the
// API server's port-forward.
func (p *podPath) carrier(ctx context.Context) (net.Conn, error) {
	if d := p.direct.Load(); d != nil {
		dctx, cancel := context.WithTimeout(ctx, directDial)
		c, err := tunnel.DialDirect(dctx, d.host, d.info, d.cert)
		cancel()
		if err == nil {
			return c, nil
		}
		if p.direct.CompareAndSwap(d, nil) {
			p.logf("direct path to %s lost (%s); %s goes through the API server's port-forward again", d, oneLine(err.Error()), p.what)
		}
	}
	return p.fwd.Open(ctx)
}

// try registers a certificate with the podshim (through client), probes the direct path to
// podIP and, when it works, moves mux's carriers to it. It reports whether the direct path is in
// use; a path that does not work is said with -v only (it is the usual case outside a local
// cluster).
func (p *podPath) try(ctx context.Context, client *tunnel.Client, mux *tunnel.Mux, podIP string) bool {
	p.direct.Store(nil)
	if podIP == "" {
		return false
	}
	cert, err := tunnel.SelfSigned()
	if err != nil {
		p.verbosef("direct path: %v", err)
		return false
	}
	info, err := client.Direct(ctx, cert.Certificate[0])
	if err != nil {
		p.verbosef("direct path: podshim offers none: %s", oneLine(err.Error()))
		return false
	}
	d := &directPath{host: podIP, info: info, cert: cert}
	pctx, cancel := context.WithTimeout(ctx, directProbe)
	c, err := tunnel.DialDirect(pctx, d.host, d.info, d.cert)
	cancel()
	if err != nil {
		p.verbosef("direct path to %s does not work (%s): using the API server's port-forward", d, oneLine(err.Error()))
		return false
	}
	_ = c.Close()
	p.direct.Store(d)
	// The carriers opened so far go through the port-forward: new ones take the direct path.
	mux.Redial()
	return true
}

// describe is the start-up line's account of the path.
func (p *podPath) describe() string {
	if d := p.direct.Load(); d != nil {
		return "direct to " + d.String() + " (TLS)"
	}
	if p.fwd != nil && p.fwd.Protocol() != "" {
		return "API server port-forward (" + string(p.fwd.Protocol()) + ")"
	}
	return "API server port-forward"
}

// tryDirect moves the session's tunnel to the direct path to podIP when --direct allows and it
// works (see podPath.try).
func (s *Session) tryDirect(ctx context.Context, podIP string) bool {
	s.path.direct.Store(nil)
	if !s.opts.Direct {
		return false
	}
	return s.path.try(ctx, s.client, s.mux, podIP)
}

// pathDescription is the start-up line's account of the tunnel's path.
func (s *Session) pathDescription() string { return "tunnel: " + s.path.describe() }
