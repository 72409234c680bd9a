package podshim_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// TestDirectPath: a client that registered its certificate over the tunnel reaches podshim over
// TLS on the direct listener and is served (token checked); a client with another certificate, a
// pin of another server certificate, or no registration at all is refused.
func TestDirectPath(t *testing.T) {
	const token = "direct-token"
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &podshim.Server{Token: token, IdleTimeout: time.Minute}
	if srv.Direct, err = podshim.NewDirect(dln.Addr().(*net.TCPAddr).Port); err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	merged := podshim.MergeListeners(ln, srv.Direct.Listener(dln))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, merged) }()

	mine, err := tunnel.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	other, err := tunnel.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	// Registration travels over the ordinary (port-forward) listener, with the token.
	info, err := newClient(ln.Addr().String(), token).Direct(ctx, mine.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if info.Port != dln.Addr().(*net.TCPAddr).Port {
		t.Fatalf("direct port %d, want %d", info.Port, dln.Addr().(*net.TCPAddr).Port)
	}
	if _, err := newClient(ln.Addr().String(), "wrong").Direct(ctx, other.Certificate[0]); err == nil {
		t.Fatal("a client with a wrong token registered a certificate")
	}

	hello := func(cert tls.Certificate, info tunnel.DirectInfo, tok string) error {
		c := &tunnel.Client{Token: tok, Open: func(ctx context.Context) (net.Conn, error) {
			return tunnel.DialDirect(ctx, "127.0.0.1", info, cert)
		}}
		hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
		defer hcancel()
		_, err := c.Hello(hctx)
		return err
	}
	forged := info
	forged.Cert = other.Certificate[0]
	tests := []struct {
		name   string
		cert   tls.Certificate
		info   tunnel.DirectInfo
		token  string
		wantOK bool
	}{
		{"registered client", mine, info, token, true},
		{"unregistered certificate", other, info, token, false},
		{"server not the pinned one", mine, forged, token, false},
		{"registered client, wrong token", mine, info, "wrong", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := hello(tt.cert, tt.info, tt.token)
			if (err == nil) != tt.wantOK {
				t.Fatalf("hello over the direct path: %v, want success %v", err, tt.wantOK)
			}
		})
	}
	// A podshim without a direct listener says so.
	plain := &podshim.Server{Token: token, IdleTimeout: time.Minute}
	addr, _ := startServer(t, plain)
	if _, err := newClient(addr, token).Direct(ctx, mine.Certificate[0]); err == nil {
		t.Fatal("a podshim without -direct offered a direct path")
	}
}
