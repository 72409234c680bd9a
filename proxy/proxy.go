// Package proxy implements the laptop-side servers of kubectl-tp: a SOCKS5 proxy
// ([SOCKS5]), an HTTP(S) proxy ([HTTP]) and a DNS server ([DNS]). Each sends
// traffic into the cluster through a [Dialer] or [Exchanger] (normally a
// *tunnel.Client) and never resolves destination names locally. [SameUserListener] narrows a
// loopback listener to the current user's processes, for clients that cannot send credentials.
//
// It leaves out listening (callers pass listeners, normally on 127.0.0.1), SOCKS5
// BIND and UDP ASSOCIATE, TLS interception (CONNECT is tunnelled, never MITMed),
// and DNS caching.
package proxy

import (
	"context"
	"net"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Dialer opens connections to destinations in the cluster.
type Dialer interface {
	// DialContext connects to addr ("host:port") on network ("tcp"). Host names
	// must be resolved by the implementation (in the cluster), not by the caller.
	// ctx bounds only connection establishment. A *tunnel.RemoteError tells why a
	// dial failed.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Dialer = (*tunnel.Client)(nil)

type closeWriter interface{ CloseWrite() error }

func logf(f func(string, ...any), format string, args ...any) {
	if f != nil {
		f(format, args...)
	}
}
