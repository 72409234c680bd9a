package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
)

// dialMapped connects to an IPv4 loopback address from an IPv6 socket, as a JVM does (its sockets
// are dual-stack), so the client socket is listed in /proc/net/tcp6 with an IPv4-mapped address.
func dialMapped(t *testing.T, addr string) net.Conn {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no IPv6 sockets here: %v", err)
	}
	f := os.NewFile(uintptr(fd), "dual-stack socket")
	defer f.Close()
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
		t.Fatal(err)
	}
	sa := &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if err := syscall.Connect(fd, sa); err != nil {
		t.Fatalf("connecting to [::ffff:%s]: %v", addr, err)
	}
	if _, ok := mustGetsockname(t, fd).(*syscall.SockaddrInet6); !ok {
		t.Fatal("the client socket is not IPv6")
	}
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustGetsockname(t *testing.T, fd int) syscall.Sockaddr {
	t.Helper()
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

func dialV4(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sameUser wraps a fresh loopback listener; uid overrides the accepted user.
func sameUser(t *testing.T, uid int, log *testnet.Log) *SameUserListener {
	t.Helper()
	l, err := SameUser(listen(t), log.Logf)
	if err != nil {
		t.Fatal(err)
	}
	l.UID = uid
	t.Cleanup(func() { l.Close() })
	return l
}

type accepted struct {
	c   net.Conn
	err error
}

// TestSameUserRealSockets accepts real loopback connections, from an IPv4 and from a dual-stack
// socket: the test's own connections pass; with UID set to another user they are closed unread.
func TestSameUserRealSockets(t *testing.T) {
	dials := []struct {
		name string
		dial func(*testing.T, string) net.Conn
	}{
		{"ipv4", dialV4},
		{"dual-stack, v4-mapped", dialMapped},
	}
	for _, d := range dials {
		for _, own := range []bool{true, false} {
			name := d.name + ", same uid"
			uid := os.Getuid()
			if !own {
				name, uid = d.name+", other uid", uid+1
			}
			t.Run(name, func(t *testing.T) {
				var log testnet.Log
				l := sameUser(t, uid, &log)
				got := make(chan accepted, 1)
				go func() { c, err := l.Accept(); got <- accepted{c, err} }()
				c := d.dial(t, l.Addr().String())
				defer c.Close()
				if _, err := io.WriteString(c, "ping"); err != nil {
					t.Fatal(err)
				}
				if !own {
					c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("read from a refused connection = %d, %v; want it closed", n, err)
					}
					l.Close()
					if a := <-got; a.err == nil {
						a.c.Close()
						t.Fatalf("Accept returned %v from uid %d, want only the listener's error", a.c.RemoteAddr(), os.Getuid())
					}
					if log.Count("refused connection") != 1 {
						t.Errorf("log = %q, want one refused connection", log.Lines())
					}
					return
				}
				a := <-got
				if a.err != nil {
					t.Fatalf("Accept = %v; log %q", a.err, log.Lines())
				}
				defer a.c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(a.c, buf); err != nil || string(buf) != "ping" {
					t.Fatalf("server read %q, %v; want ping", buf, err)
				}
			})
		}
	}
}

// TestSOCKS5BehindSameUser serves SOCKS5 without credentials behind SameUser, as the session does
// for the JVM: the same user's CONNECT works, another user's greeting is met by a closed
// connection and nothing is dialled.
func TestSOCKS5BehindSameUser(t *testing.T) {
	for _, own := range []bool{true, false} {
		name, uid := "same uid", os.Getuid()
		if !own {
			name, uid = "other uid", uid+1
		}
		t.Run(name, func(t *testing.T) {
			d := &fakeDialer{names: map[string]string{"svc.ns:80": echoAddr(t)}}
			var log testnet.Log
			l := sameUser(t, uid, &log)
			s := &SOCKS5{Dialer: d, NoAuth: true, Logf: testLogf(t)}
			serve(t, func() error { return s.Serve(l) }, s.Close)
			if own {
				if rep, _ := socksConnect(t, l.Addr().String(), "", "", "svc.ns", 80); rep != 0 {
					t.Fatalf("reply = %#x, want success", rep)
				}
				return
			}
			c := dialMapped(t, l.Addr().String())
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			greetingAndConnect := []byte{5, 1, 0, 5, 1, 0, 3, 6, 's', 'v', 'c', '.', 'n', 's', 0, 80}
			_, _ = c.Write(greetingAndConnect)
			if b, err := io.ReadAll(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("another user's client read %x, %v; want the connection closed unanswered", b, err)
			}
			if got := d.lastAsked(); got != "" {
				t.Fatalf("dialer asked for %q for another user", got)
			}
		})
	}
}
