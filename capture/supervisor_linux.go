package capture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"golang.org/x/sys/unix"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// seccompNotif is struct seccomp_notif (80 bytes).
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

// seccompResp is struct seccomp_notif_resp (24 bytes).
type seccompResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// Supervisor handles the connect(2) calls of one captured command and all its descendants. Set
// the fields, call [Supervisor.Prepare] on the command before starting it and
// [Supervisor.Attach] right after; [Supervisor.Close] when the command is done.
//
// Once attached, a cluster-bound connect is carried or fails: when the supervisor cannot handle
// it (or has been closed, or has crashed) the child gets an error, never a connection to
// whatever that address means on the laptop.
type Supervisor struct {
	// Router decides where each destination goes.
	Router *Router
	// Redirector carries cluster connections; it must be listening.
	Redirector *Redirector
	// DNS is where port-53 connects go.
	DNS DNSAddrs
	// Logf logs what the supervisor does (verbose); nil means no logging.
	Logf logger.Logf

	parentEnd, childEnd *os.File

	mu       sync.RWMutex // write-locked to close listener
	listener int
	closed   bool
	wake     [2]int
	done     chan struct{}
	handlers sync.WaitGroup
}

// Prepare rewrites cmd (already resolved by exec.Command) to start through the helper: the same
// argv and environment, the kubectl-tp executable as the program, the command's path and the
// socketpair in the helper's variables.
func (s *Supervisor) Prepare(cmd *exec.Cmd) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("capture: finding kubectl-tp's own executable: %w", err)
	}
	return s.prepare(cmd, self, true)
}

func (s *Supervisor) prepare(cmd *exec.Cmd, self string, run bool) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("capture: socketpair: %w", err)
	}
	s.parentEnd = os.NewFile(uintptr(fds[0]), "capture-supervisor")
	s.childEnd = os.NewFile(uintptr(fds[1]), "capture-helper")
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = withoutHelperEnv(env)
	cmd.ExtraFiles = append(cmd.ExtraFiles, s.childEnd)
	env = append(env, envFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	if run {
		env = append(env, envPath+"="+cmd.Path)
	}
	cmd.Env = env
	cmd.Path = self
	return nil
}

// Attach receives the listener from the helper of the started command, lets it run the command
// and starts handling notifications. On error the caller must kill the command.
func (s *Supervisor) Attach() error {
	if s.parentEnd == nil {
		return errors.New("capture: Attach without Prepare")
	}
	s.childEnd.Close()
	defer s.parentEnd.Close()
	listener, err := receiveListener(s.parentEnd, 10*time.Second)
	if err != nil {
		return err
	}
	if _, err := s.parentEnd.Write([]byte{'A'}); err != nil {
		unix.Close(listener)
		return fmt.Errorf("capture: releasing the helper: %w", err)
	}
	if err := unix.Pipe2(s.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(listener)
		return fmt.Errorf("capture: pipe: %w", err)
	}
	// Wake the supervisor on the trapped thread's CPU and back (Linux 6.6+; older kernels refuse
	// the flag and keep the ordinary wake-up): a trapped connect then costs far fewer scheduler hops.
	_, _, _ = unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	s.listener = listener
	s.done = make(chan struct{})
	go s.loop()
	return nil
}

// receiveListener reads the helper's message: the listener fd, or its error text.
func receiveListener(f *os.File, timeout time.Duration) (int, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return -1, fmt.Errorf("capture: %w", err)
	}
	defer c.Close()
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, errors.New("capture: the helper's socket is not a unix socket")
	}
	_ = uc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, fmt.Errorf("capture: waiting for the helper: %w", err)
	}
	if n == 0 {
		return -1, errors.New("capture: the helper exited before installing its filter")
	}
	if buf[0] == 'E' {
		return -1, errors.New(string(buf[1:n]))
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, errors.New("capture: the helper sent no listener")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, errors.New("capture: the helper sent no listener")
	}
	unix.CloseOnExec(fds[0])
	return fds[0], nil
}

// Close stops handling notifications and closes the listener: calls still trapped, and every
// later connect of a process that outlives the session, fail with ENOSYS.
func (s *Supervisor) Close() error {
	if s.done == nil {
		if s.parentEnd != nil {
			s.parentEnd.Close()
			s.childEnd.Close()
		}
		return nil
	}
	s.mu.RLock()
	if !s.closed {
		_, _ = unix.Write(s.wake[1], []byte{0})
	}
	s.mu.RUnlock()
	<-s.done
	s.closeListener()
	return nil
}

// closeListener closes the listener (every call still trapped, and every later one, fails with
// ENOSYS) and the wake-up pipe, once.
func (s *Supervisor) closeListener() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		unix.Close(s.listener)
		unix.Close(s.wake[0])
		unix.Close(s.wake[1])
	}
}

func (s *Supervisor) loop() {
	defer close(s.done)
	// However the loop ends, nobody answers any more: fail closed rather than leave calls waiting.
	defer s.closeListener()
	// One thread receives and answers: the trapped thread waits for it, so scheduler hops cost
	// every connect of the child.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fds := []unix.PollFd{{Fd: int32(s.listener), Events: unix.POLLIN}, {Fd: int32(s.wake[0]), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			logf(s.Logf, "transparent: poll: %v", err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&unix.POLLIN != 0 {
			n := new(seccompNotif)
			if err := ioctl(s.listener, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n)); err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
					continue // the caller went away in between
				}
				logf(s.Logf, "transparent: receiving a notification: %v", err)
				return
			}
			s.handle(n)
			continue
		}
		if fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return // no process left under the filter
		}
	}
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// answer is the reply to one notification: run the call as is, or return errno (0: success).
type answer struct {
	cont  bool
	errno unix.Errno
}

var letThrough = answer{cont: true}

// handle answers n. Only a carried connect of a blocking socket waits for the tunnel: it is
// finished in a goroutine, so the loop goes on with other calls.
func (s *Supervisor) handle(n *seccompNotif) {
	a, ok, later := s.decide(n)
	if later != nil {
		s.handlers.Add(1)
		go func() {
			defer s.handlers.Done()
			s.respond(n.ID, later())
		}()
		return
	}
	if ok {
		s.respond(n.ID, a)
	}
}

// respond sends the answer to notification id.
func (s *Supervisor) respond(id uint64, a answer) {
	resp := seccompResp{ID: id}
	if a.cont {
		resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	} else {
		resp.Error = -int32(a.errno)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	// ENOENT: the caller was killed meanwhile; nothing to tell.
	_ = ioctl(s.listener, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
}

// valid reports whether notification id still stands for a waiting call (so what was read from
// its memory belongs to it, not to a recycled pid).
func (s *Supervisor) valid(id uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closed && ioctl(s.listener, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// decide returns the answer to a connect notification; false when the call is gone. A non-nil
// later computes the answer instead, off the receiving thread.
func (s *Supervisor) decide(n *seccompNotif) (_ answer, _ bool, later func() answer) {
	addrLen := int(n.Args[2])
	if addrLen < 2 || addrLen > 128 {
		return letThrough, true, nil // the kernel rejects it as it would anyway
	}
	buf := make([]byte, addrLen)
	if err := readMemory(int(n.Pid), uintptr(n.Args[1]), buf); err != nil {
		if errors.Is(err, unix.EFAULT) {
			return letThrough, true, nil // a bad pointer: the kernel answers EFAULT itself
		}
		if !s.valid(n.ID) {
			return answer{}, false, nil
		}
		return answer{errno: unix.ECONNREFUSED}, true, nil
	}
	if !s.valid(n.ID) {
		return answer{}, false, nil
	}
	dst, ok := parseSockaddr(buf)
	if !ok {
		return letThrough, true, nil // not IPv4 or IPv6: a Unix socket, AF_UNSPEC, …
	}
	route := s.Router.Route(dst)
	if route.Verdict == Direct {
		return letThrough, true, nil
	}
	sock, err := takeFD(int(n.Pid), int(n.Args[0]))
	if err != nil {
		if errors.Is(err, unix.EBADF) {
			return answer{errno: unix.EBADF}, true, nil
		}
		logf(s.Logf, "transparent: connect to %s: taking the socket: %v", dst, err)
		return answer{errno: unix.ECONNREFUSED}, true, nil
	}
	keep := false
	defer func() {
		if !keep {
			unix.Close(sock)
		}
	}()
	typ, err1 := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE)
	dom, err2 := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err1 != nil || err2 != nil {
		return letThrough, true, nil // not a socket: the kernel answers ENOTSOCK
	}
	if dom != unix.AF_INET && dom != unix.AF_INET6 {
		return letThrough, true, nil // a family mismatch: the kernel answers it
	}
	v6 := dom == unix.AF_INET6
	switch route.Verdict {
	case ToDNS:
		switch typ {
		case unix.SOCK_DGRAM:
			return answer{errno: connectTo(sock, s.dnsAddr(false, v6), v6)}, true, nil
		case unix.SOCK_STREAM:
			return answer{errno: connectTo(sock, s.dnsAddr(true, v6), v6)}, true, nil
		}
		return letThrough, true, nil
	case ToCluster:
		if typ != unix.SOCK_STREAM {
			return answer{errno: unix.ENETUNREACH}, true, nil // UDP to the cluster is not carried
		}
		flags, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0)
		if err != nil {
			return answer{errno: unix.ECONNREFUSED}, true, nil
		}
		if flags&unix.O_NONBLOCK != 0 {
			return answer{errno: s.redirect(sock, v6, route.Dest, nil)}, true, nil
		}
		// A blocking socket waits for the tunnel's dial, so the child gets its real error.
		keep = true
		return answer{}, true, func() answer {
			defer unix.Close(sock)
			up, err := s.Redirector.Dial(context.Background(), route.Dest)
			if err != nil {
				logf(s.Logf, "transparent: %s: %v", route.Dest, err)
				return answer{errno: dialErrno(err)}
			}
			return answer{errno: s.redirect(sock, v6, route.Dest, up)}
		}
	}
	return answer{errno: unix.ENETUNREACH}, true, nil // Refuse
}

func (s *Supervisor) dnsAddr(tcp, v6 bool) netip.AddrPort {
	a := s.DNS.UDP4
	if tcp {
		a = s.DNS.TCP4
	}
	if v6 {
		if b := map[bool]netip.AddrPort{false: s.DNS.UDP6, true: s.DNS.TCP6}[tcp]; b.IsValid() {
			return b
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port())
	}
	return a
}

// redirect binds the child's socket to loopback, announces it to the Redirector and connects it
// there. up is the tunnel connection already dialled for a blocking socket; a non-blocking socket
// (up nil) gets EINPROGRESS at once, and a reset if the Redirector's dial then fails.
func (s *Supervisor) redirect(sock int, v6 bool, dest string, up net.Conn) unix.Errno {
	fail := func(e unix.Errno) unix.Errno {
		if up != nil {
			up.Close()
		}
		return e
	}
	target := s.Redirector.Addr(v6)
	bindTo := netip.AddrPortFrom(target.Addr(), 0)
	if err := unix.Bind(sock, sockaddr(bindTo, v6)); err != nil && !errors.Is(err, unix.EINVAL) {
		// EINVAL: bound already, by the program; its address is kept.
		logf(s.Logf, "transparent: %s: binding to loopback: %v", dest, err)
		return fail(unix.ECONNREFUSED)
	}
	sa, err := unix.Getsockname(sock)
	if err != nil {
		return fail(unix.ECONNREFUSED)
	}
	local := fromSockaddr(sa)
	if local.Addr().IsUnspecified() {
		local = netip.AddrPortFrom(target.Addr().Unmap(), local.Port())
	}
	s.Redirector.Expect(local, dest, up)
	e := connectTo(sock, target, v6)
	if e != 0 && e != unix.EINPROGRESS {
		s.Redirector.Forget(local)
	}
	return e
}

// dialErrno is the errno a blocking connect returns for a failed tunnel dial.
func dialErrno(err error) unix.Errno {
	var de *tunnel.RemoteError
	if errors.As(err, &de) {
		switch de.Code {
		case tunnel.CodeTimeout:
			return unix.ETIMEDOUT
		case tunnel.CodeUnreachable, tunnel.CodeNXDomain:
			return unix.EHOSTUNREACH
		}
		return unix.ECONNREFUSED
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return unix.ETIMEDOUT
	}
	return unix.ECONNREFUSED
}

// connectTo connects sock (of family v6 or not) to a and returns the errno (0 on success).
func connectTo(sock int, a netip.AddrPort, v6 bool) unix.Errno {
	err := unix.Connect(sock, sockaddr(a, v6))
	var e unix.Errno
	if err != nil && !errors.As(err, &e) {
		return unix.ECONNREFUSED
	}
	return e
}

func sockaddr(a netip.AddrPort, v6 bool) unix.Sockaddr {
	if v6 {
		return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().Unmap().As4()}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// parseSockaddr reads a struct sockaddr_in or sockaddr_in6 in the caller's (native) byte order.
func parseSockaddr(b []byte) (netip.AddrPort, bool) {
	family := *(*uint16)(unsafe.Pointer(&b[0]))
	switch family {
	case unix.AF_INET:
		if len(b) < 8 {
			return netip.AddrPort{}, false
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case unix.AF_INET6:
		if len(b) < 24 {
			return netip.AddrPort{}, false
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port), true
	}
	return netip.AddrPort{}, false
}

func readMemory(pid int, addr uintptr, buf []byte) error {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: addr, Len: len(buf)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(buf) {
		return unix.EFAULT
	}
	return nil
}

// takeFD duplicates file descriptor fd of the thread tid's process into this one.
func takeFD(tid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, 0)
	// A thread that is not its group's leader: EINVAL before Linux 6.15 or so, ENOENT after.
	if err != nil && !errors.Is(err, unix.ESRCH) {
		tgid, terr := threadGroup(tid)
		if terr != nil {
			return -1, terr
		}
		pidfd, err = unix.PidfdOpen(tgid, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	sock, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		if errors.Is(err, unix.EBADF) {
			return -1, unix.EBADF
		}
		return -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return sock, nil
}

func threadGroup(tid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Tgid:")); ok {
			return strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	return 0, fmt.Errorf("no Tgid in /proc/%d/status", tid)
}
