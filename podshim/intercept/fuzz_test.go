package intercept_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

// FuzzHTTP1Conn feeds arbitrary client bytes to the router (real HTTP upstreams behind it) and
// checks that it neither panics nor hangs: once the client has sent everything and half-closed,
// the router must end the connection.
func FuzzHTTP1Conn(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\nGET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: svc\r\nX-Dev: bob\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\nshort",
		"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"GET / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: svc\r\nX-Dev: alice\r\n\r\n\r\n\r\nGET / HTTP/1.0\r\n\r\n",
		"GET /upgrade HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Dev: bob\r\n\r\nraw bytes\n",
		"GET / HTTP/1.1\r\nHost: svc\r\nX-Dev alice\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"\x16\x03\x01\x00",
	} {
		f.Add([]byte(seed))
	}
	alice, bob, def := newUpstream(f, "alice"), newUpstream(f, "bob"), newUpstream(f, "default")
	tab := &intercept.Table{}
	add(f, tab, "alice", "alice", alice.dialer(alice.httpAddr), "x-dev=alice")
	add(f, tab, "bob", "bob", bob.dialer(bob.httpAddr), "x-dev=bob")
	addr := startRouter(f, &intercept.Router{Table: tab, Default: def.dialer(def.httpAddr), SniffTimeout: 50 * time.Millisecond})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(guard))
		if _, err := c.Write(in); err != nil {
			return // the router may have closed already
		}
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("router did not end the connection for input %q", in)
			}
		}
	})
}
