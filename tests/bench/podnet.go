package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubectl-tp/kubectl-tp/tests/latency"
)

// directPort is podshim's direct-path port.
const directPort = 4749

// podnetMark marks the delaying proxy's own connections to the pods, which the redirect skips.
const podnetMark = 0x4749

// delayDirectPath puts the pod network at the same distance as the API server for the direct
// path: this machine's TCP connections to port 4749 of any address but loopback (the sessions'
// direct carriers to their proxy pods) are redirected (iptables, nat OUTPUT) to a delaying proxy,
// which connects on to the address each came for. Without it, -rtt would delay the port-forward
// path only and flatter the direct one. The returned function undoes it. It needs root (iptables,
// SO_MARK); this kernel has no netem, and a user-space proxy costs the same CPU as the API
// server's delaying proxy, so both paths are treated alike. The undo function returns how many
// connections were delayed.
func delayDirectPath(rtt time.Duration, window int) (undo func() int, err error) {
	var n atomic.Int64
	p := &latency.Proxy{Delay: rtt / 2, Window: window, Dial: func(c net.Conn) (net.Conn, error) {
		n.Add(1)
		return dialOriginal(c)
	}}
	if err := p.Start(); err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(p.Addr())
	rule := []string{"OUTPUT", "-t", "nat", "-p", "tcp", "!", "-d", "127.0.0.0/8", "--dport", strconv.Itoa(directPort),
		"-m", "mark", "!", "--mark", strconv.Itoa(podnetMark), "-m", "comment", "--comment", "kubectl-tp bench: delay the direct path",
		"-j", "REDIRECT", "--to-ports", port}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		p.Close()
		return nil, fmt.Errorf("iptables -I %s: %v: %s", strings.Join(rule, " "), err, out)
	}
	return func() int {
		_ = exec.Command("iptables", append([]string{"-D"}, rule...)...).Run()
		p.Close()
		return int(n.Load())
	}, nil
}

// dialOriginal connects to the address a redirected connection was for (SO_ORIGINAL_DST), with
// the mark that exempts the connection from the redirect.
func dialOriginal(client net.Conn) (net.Conn, error) {
	tc, ok := client.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("not TCP: %T", client)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dst netip.AddrPort
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST fills a sockaddr_in; GetsockoptIPv6Mreq reads 16 bytes, which fit it.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), binary.BigEndian.Uint16(m.Multiaddr[2:4]))
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var merr error
		if err := c.Control(func(fd uintptr) { merr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, podnetMark) }); err != nil {
			return err
		}
		return merr
	}}
	return d.Dial("tcp", dst.String())
}
