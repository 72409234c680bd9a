package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// connectRun times n connect(2) calls (one untimed warm-up first) of raw IPv4 TCP sockets to target
// (IP:port; "" starts a loopback listener in this process that accepts and closes). Only the
// connect call is timed: with nonblock it returns EINPROGRESS (or 0) and the wait for the
// handshake comes after the clock stops. After each connect, untimed, the socket sends an
// HTTP/1.0 GET / and reads until the peer closes, so no earlier connection is still being set up
// or torn down (in a transparent session: dialled through the tunnel) while the next one is
// timed. With carried, a connection whose peer is not on loopback fails the op: a connect that
// transparent mode carries is connected to its loopback redirector, so this catches a destination
// that was reached straight (this machine may route Service and pod IPs itself). A positive
// maxDur stops the run early once it has taken that long (at a long round trip each connection
// costs several); Count says how many were timed. Results are in µs.
func connectRun(target string, n int, nonblock, carried bool, maxDur time.Duration) (result, error) {
	if target == "" {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		target = ln.Addr().String()
	}
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().Is4() {
		return result{}, fmt.Errorf("connect: %q is not IPv4:port", target)
	}
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	ds := make([]float64, 0, n)
	bad := 0
	var first error
	t0 := time.Now()
	for i := range n + 1 {
		if maxDur > 0 && len(ds) > 0 && time.Since(t0) > maxDur {
			break
		}
		d, err := connectOnce(sa, nonblock, carried)
		if err != nil {
			bad++
			if first == nil {
				first = err
			}
			continue
		}
		if i > 0 {
			ds = append(ds, float64(d.Nanoseconds())/1000)
		}
	}
	r := result{Count: len(ds), Errors: bad}
	if first != nil {
		r.Err = fmt.Sprintf("%d of %d connects failed, first: %v", bad, n+1, first)
	}
	if len(ds) == 0 || errors.Is(first, errNotCarried) {
		return result{}, errors.New(r.Err)
	}
	slices.Sort(ds)
	r.P50, r.P99 = percentile(ds, 50), percentile(ds, 99)
	return r, nil
}

var errNotCarried = errors.New("not carried by transparent mode: the peer is not on loopback")

// connectOnce times one connect(2) of a new socket to sa, then finishes the connection (untimed).
func connectOnce(sa *unix.SockaddrInet4, nonblock, carried bool) (time.Duration, error) {
	typ := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
	if nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	t0 := time.Now()
	err = unix.Connect(fd, sa)
	d := time.Since(t0)
	if nonblock && errors.Is(err, unix.EINPROGRESS) {
		err = waitConnected(fd, 10*time.Second)
	}
	if err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("connect: %w", err)
	}
	if carried {
		if peer, err := unix.Getpeername(fd); err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("getpeername: %w", err)
		} else if p4, ok := peer.(*unix.SockaddrInet4); !ok || p4.Addr[0] != 127 {
			unix.Close(fd)
			return 0, errNotCarried
		}
	}
	// net.FileConn takes a duplicate (made non-blocking for Go's poller); the exchange's errors
	// do not count: the loopback listener closes at once, before the request is read.
	f := os.NewFile(uintptr(fd), "connect")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\nHost: bench\r\n\r\n")); err == nil {
		var buf [4096]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				break
			}
		}
	}
	return d, nil
}

// waitConnected waits until the non-blocking connect on fd completes and returns its result.
func waitConnected(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// execRun runs args n times, one after the other, with no input or output, and returns the seconds
// all runs took (after one untimed warm-up run).
func execRun(args []string, n int) (result, error) {
	if len(args) == 0 {
		return result{}, errors.New("exec: no command")
	}
	var t0 time.Time
	for i := -1; i < n; i++ {
		if i == 0 {
			t0 = time.Now()
		}
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return result{}, fmt.Errorf("exec %q (run %d): %v: %s", args, i+1, err, out)
		}
	}
	return result{Value: time.Since(t0).Seconds(), Count: n}, nil
}
