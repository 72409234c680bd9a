package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubectl-tp/kubectl-tp/internal/testnet"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// The test binary is also the captured child: TestMain hands over to the helper, and to
// childMain when TP_CAPTURE_CHILD names an action.
func TestMain(m *testing.M) {
	if IsHelper() {
		HelperMain(nil)
	}
	if action := os.Getenv("TP_CAPTURE_CHILD"); action != "" {
		os.Exit(childMain(action, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// childMain runs one action per line of stdin ("blocking ADDR", "nonblocking ADDR", "udp ADDR",
// "iouring", "dns ADDR") and prints one result line each: "ok <reply>" or "err <errno name>".
func childMain(_ string, _ []string) int {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(sc.Text(), " ")
		fmt.Println(childAction(verb, arg))
	}
	return 0
}

func childAction(verb, arg string) string {
	switch verb {
	case "iouring":
		_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)
		return "err " + unix.ErrnoName(e)
	case "blocking", "nonblocking":
		ap := netip.MustParseAddrPort(arg)
		dom := unix.AF_INET
		if ap.Addr().Is6() {
			dom = unix.AF_INET6
		}
		fd, err := unix.Socket(dom, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return "err socket " + err.Error()
		}
		f := os.NewFile(uintptr(fd), "sock")
		defer f.Close()
		if verb == "nonblocking" {
			_ = unix.SetNonblock(fd, true)
		}
		err = unix.Connect(fd, sockaddr(ap, dom == unix.AF_INET6))
		if verb == "nonblocking" {
			if !errors.Is(err, unix.EINPROGRESS) && err != nil {
				return "err " + unix.ErrnoName(err.(unix.Errno))
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, 5000); err != nil {
				return "err poll"
			}
			if soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); soErr != 0 {
				return "err " + unix.ErrnoName(unix.Errno(soErr))
			}
			_ = unix.SetNonblock(fd, false)
		} else if err != nil {
			return "err " + unix.ErrnoName(err.(unix.Errno))
		}
		if _, err := unix.Write(fd, []byte("ping\n")); err != nil {
			return "err write " + err.Error()
		}
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "err " + unix.ErrnoName(err.(unix.Errno))
		}
		if n == 0 {
			return "err eof"
		}
		return "ok " + strings.TrimSpace(string(buf[:n]))
	case "connects":
		// "connects N ADDR": N non-blocking connects, each closed at once; prints the median
		// time of the connect call alone.
		nStr, addr, _ := strings.Cut(arg, " ")
		n, _ := strconv.Atoi(nStr)
		ap := netip.MustParseAddrPort(addr)
		times := make([]time.Duration, 0, n)
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return "err socket"
			}
			t0 := time.Now()
			err = unix.Connect(fd, sockaddr(ap, false))
			times = append(times, time.Since(t0))
			unix.Close(fd)
			if err != nil && !errors.Is(err, unix.EINPROGRESS) {
				return "err " + err.Error()
			}
		}
		slices.Sort(times)
		return fmt.Sprintf("ok %d", times[len(times)/2].Nanoseconds())
	case "udp":
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return "err socket"
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sockaddr(ap, false)); err != nil {
			return "err " + unix.ErrnoName(err.(unix.Errno))
		}
		if _, err := unix.Write(fd, []byte("q")); err != nil {
			return "err write"
		}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "err read " + err.Error()
		}
		return "ok " + string(buf[:n])
	}
	return "err unknown verb " + verb
}

// fakeTunnel dials an echo server for every destination but "refused.test", and records what
// it was asked for.
type fakeTunnel struct {
	echo string
	mu   sync.Mutex
	seen []string
}

func (f *fakeTunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.seen = append(f.seen, addr)
	f.mu.Unlock()
	if strings.HasPrefix(addr, "refused.test:") || strings.HasPrefix(addr, "10.96.7.7:") {
		return nil, &tunnel.RemoteError{Code: tunnel.CodeRefused, Msg: "connection refused"}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.echo)
	if err != nil {
		return nil, err
	}
	// Tag the line so the child can tell a tunnelled connection from a direct one.
	if _, err := c.Write([]byte("via-tunnel ")); err != nil {
		return nil, err
	}
	return c, nil
}

func (f *fakeTunnel) dialled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

// prefixEcho answers each connection with its first line, prefixed by tag; the prefix written by
// fakeTunnel comes back first.
func prefixEcho(t testing.TB, tag string) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, tag+" "+line)
			}()
		}
	}()
	return addrPort(ln.Addr())
}

type capturedChild struct {
	in  io.WriteCloser
	out *bufio.Scanner
	cmd *exec.Cmd
	sup *Supervisor
}

func (c *capturedChild) do(t testing.TB, line string) string {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, line); err != nil {
		t.Fatal(err)
	}
	if !c.out.Scan() {
		t.Fatalf("child ended before answering %q: %v", line, c.out.Err())
	}
	return c.out.Text()
}

func startCaptured(t testing.TB, r *Router, dialer Dialer, dns DNSAddrs) *capturedChild {
	t.Helper()
	if err := Probe(); err != nil {
		t.Fatalf("transparent mode cannot work on this machine, which the project requires: %v", err)
	}
	red := &Redirector{Dialer: dialer, DialTimeout: 5 * time.Second}
	if err := red.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = red.Serve() }()
	t.Cleanup(func() { red.Close() })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "TP_CAPTURE_CHILD=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sup := &Supervisor{Router: r, Redirector: red, DNS: dns, Logf: t.Logf}
	if err := sup.prepare(cmd, self, true); err != nil {
		t.Fatal(err)
	}
	cmd.Path = self
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := sup.Attach(); err != nil {
		_ = cmd.Process.Kill()
		t.Fatal(err)
	}
	c := &capturedChild{in: in, out: bufio.NewScanner(out), cmd: cmd, sup: sup}
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Wait()
		sup.Close()
	})
	return c
}

func TestSupervisorRoutesConnects(t *testing.T) {
	echo := prefixEcho(t, "echo")
	ft := &fakeTunnel{echo: echo.String()}
	pool := &Pool{}
	svcAddr, _ := pool.Addr("web.default.svc.cluster.local.")
	dnsUDP, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dnsUDP.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := dnsUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = dnsUDP.WriteTo(append([]byte("dns:"), buf[:n]...), from)
		}
	}()
	dns := DNSAddrs{UDP4: netip.MustParseAddrPort(dnsUDP.LocalAddr().String()), TCP4: echo}
	r := &Router{Pool: pool, Cluster: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}
	c := startCaptured(t, r, ft, dns)

	cases := []struct {
		name, action, want, dialled string
	}{
		{"literal cluster IP, blocking", "blocking 10.96.0.1:443", "ok echo via-tunnel ping", "10.96.0.1:443"},
		{"literal cluster IP, non-blocking", "nonblocking 10.96.3.4:80", "ok echo via-tunnel ping", "10.96.3.4:80"},
		{"synthetic address by name", "blocking " + svcAddr.String() + ":8080", "ok echo via-tunnel ping", "web.default.svc.cluster.local:8080"},
		{"v4-mapped IPv6", "blocking [::ffff:10.96.0.2]:80", "ok echo via-tunnel ping", "10.96.0.2:80"},
		{"loopback untouched", "blocking " + echo.String(), "ok echo ping", ""},
		{"tunnel refuses, blocking", "blocking 10.96.7.7:80", "err ECONNREFUSED", "10.96.7.7:80"},
		{"tunnel refuses, non-blocking: reset", "nonblocking 10.96.7.7:81", "err ECONNRESET", "10.96.7.7:81"},
		{"synthetic never handed out", "blocking 198.19.200.1:80", "err ENETUNREACH", ""},
		{"UDP to the cluster refused", "udp 10.96.0.5:9999", "err ENETUNREACH", ""},
		{"DNS on any server goes to ours", "udp 10.255.255.53:53", "ok dns:q", ""},
		{"io_uring is unavailable", "iouring", "err ENOSYS", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ft.dialled())
			got := c.do(t, tc.action)
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("%s: got %q, want %q", tc.action, got, tc.want)
			}
			d := ft.dialled()[before:]
			if tc.dialled == "" && len(d) != 0 || tc.dialled != "" && (len(d) != 1 || d[0] != tc.dialled) {
				t.Fatalf("%s: tunnel dialled %q, want %q", tc.action, d, tc.dialled)
			}
		})
	}
}

func TestSupervisorFailsClosed(t *testing.T) {
	echo := prefixEcho(t, "echo")
	ft := &fakeTunnel{echo: echo.String()}
	r := &Router{Cluster: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}
	c := startCaptured(t, r, ft, DNSAddrs{})
	if got := c.do(t, "blocking 10.96.0.1:443"); got != "ok echo via-tunnel ping" {
		t.Fatalf("before Close: %q", got)
	}
	c.sup.Close()
	for _, action := range []string{"blocking 10.96.0.1:443", "blocking " + echo.String()} {
		if got := c.do(t, action); got != "err ENOSYS" {
			t.Errorf("after the supervisor closed, %s: got %q, want err ENOSYS (never a direct connection)", action, got)
		}
	}
}

func TestRedirectorRefusesStrangers(t *testing.T) {
	red := &Redirector{Dialer: &fakeTunnel{echo: testnet.Echo(t)}}
	if err := red.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = red.Serve() }()
	defer red.Close()
	c, err := net.Dial("tcp", red.Addr(false).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection nobody announced was served")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a connection nobody announced was kept open")
	}
}

// BenchmarkConnect reports the median time of one non-blocking connect(2) in a captured child:
// let through (loopback) and diverted (a cluster address), beside the same outside capture. Run
// with: go test -run '^$' -bench Connect ./capture/
func BenchmarkConnect(b *testing.B) {
	echo := prefixEcho(b, "echo")
	r := &Router{Cluster: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}
	c := startCaptured(b, r, &fakeTunnel{echo: echo.String()}, DNSAddrs{})
	for _, tc := range []struct{ name, addr string }{{"let-through", echo.String()}, {"diverted", "10.96.0.1:80"}} {
		b.Run(tc.name, func(b *testing.B) {
			got := c.do(b, fmt.Sprintf("connects %d %s", b.N, tc.addr))
			ns, err := strconv.Atoi(strings.TrimPrefix(got, "ok "))
			if err != nil {
				b.Fatal(got)
			}
			b.ReportMetric(float64(ns)/1000, "µs-p50")
		})
	}
	b.Run("outside", func(b *testing.B) {
		got := childAction("connects", fmt.Sprintf("%d %s", b.N, echo))
		ns, _ := strconv.Atoi(strings.TrimPrefix(got, "ok "))
		b.ReportMetric(float64(ns)/1000, "µs-p50")
	})
}
