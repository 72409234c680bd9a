package intercept_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

// clientHello returns the first bytes a TLS client sends.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	go tls.Client(a, &tls.Config{ServerName: "svc", InsecureSkipVerify: true}).Handshake()
	defer a.Close()
	defer b.Close()
	buf := make([]byte, 4096)
	b.SetReadDeadline(time.Now().Add(guard))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestNonHTTPGoesToDefault: TLS, binary and text protocols that are not HTTP, and clients that
// wait for the server to speak first, are spliced to the real pods, both ways.
func TestNonHTTPGoesToDefault(t *testing.T) {
	w := newWorld(t, rawAddr, func(rt *intercept.Router) {
		rt.SniffTimeout = 20 * time.Millisecond // only matters for the server-speaks-first case
	})
	for _, tc := range []struct {
		name  string
		first []byte
	}{
		{"TLS ClientHello", clientHello(t)},
		{"binary", []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f}},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n")},
		{"Redis", []byte("PING\r\n")},
		{"HTTP/2 version on an HTTP/1 line", []byte("GET / HTTP/2.0\r\n\r\n")},
		{"server speaks first", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialClient(t, w.addr)
			c.c.Write(tc.first)
			if line, err := c.br.ReadString('\n'); err != nil || line != "hello from default\n" {
				t.Fatalf("greeting: %q, %v", line, err)
			}
			echo := make([]byte, len(tc.first))
			if _, err := io.ReadFull(c.br, echo); err != nil || !bytes.Equal(echo, tc.first) {
				t.Fatalf("echo: %q, %v", echo, err)
			}
			// Both ways, after the decision too.
			c.write("more X-Dev: alice\n")
			if line, err := c.br.ReadString('\n'); err != nil || line != "more X-Dev: alice\n" {
				t.Fatalf("echo after: %q, %v", line, err)
			}
		})
	}
}

// TestHeaderlessTakesAll: a header-less intercept takes every connection, raw or HTTP; once
// removed, its spliced connections end and new ones go to the real pods.
func TestHeaderlessTakesAll(t *testing.T) {
	carol, def := newUpstream(t, "carol"), newUpstream(t, "default")
	tab := &intercept.Table{}
	add(t, tab, "carol", "carol@laptop", carol.dialer(carol.rawAddr))
	rt := &intercept.Router{Table: tab, Default: def.dialer(def.rawAddr)}
	addr := startRouter(t, rt)
	var open []*client
	for _, first := range []string{"\x00\x01binary", "GET / HTTP/1.1\r\nHost: svc\r\n\r\n", ""} {
		c := dialClient(t, addr)
		c.write(first)
		if line, err := c.br.ReadString('\n'); err != nil || line != "hello from carol\n" {
			t.Fatalf("%q: greeting %q, %v", first, line, err)
		}
		open = append(open, c)
	}
	if !tab.Remove("carol") {
		t.Fatal("Remove: not registered")
	}
	for _, c := range open {
		c.waitClosed("spliced connection after Remove")
	}
	c := dialClient(t, addr)
	c.write("\x00raw")
	if line, err := c.br.ReadString('\n'); err != nil || line != "hello from default\n" {
		t.Fatalf("after Remove: %q, %v", line, err)
	}
}
