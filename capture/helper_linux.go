package capture

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The helper learns its job from two variables, removed before it runs the command.
const (
	// envFD is the number of the helper's end of the socketpair to the supervisor.
	envFD = "KUBECTL_TP_CAPTURE_FD"
	// envPath is the resolved path of the command; absent in a probe, where the helper exits 0
	// once the supervisor holds the listener.
	envPath = "KUBECTL_TP_CAPTURE_PATH"
)

// IsHelper reports whether this process was started by a [Supervisor] as its helper. The main
// function of kubectl-tp calls it first and hands over to [HelperMain] when it is true.
func IsHelper() bool { return os.Getenv(envFD) != "" }

// HelperMain is the helper's whole life: it runs before (when set; an error ends the helper
// with that error given to the supervisor, and the command does not run), sets no_new_privs, installs the [Filter] with a
// user-notification listener, passes the listener to the supervisor over the inherited
// socketpair, waits until the supervisor holds it, and executes the command with the caller's
// argv and environment (without the helper's variables). It never returns. Until the exec the
// helper makes no trapped system call: one would wait for a supervisor that is waiting for it.
func HelperMain(before func() error) {
	os.Exit(helper(before))
}

func helper(before func() error) int {
	fd, err := strconv.Atoi(os.Getenv(envFD))
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "kubectl tp: capture helper: bad %s\n", envFD)
		return 126
	}
	path, exec := os.LookupEnv(envPath)

	// The filter binds to this thread; exec keeps only this thread.
	runtime.LockOSThread()
	if before != nil {
		if err := before(); err != nil {
			_, _ = unix.Write(fd, []byte("E"+err.Error()))
			return 126
		}
	}
	env := withoutHelperEnv(os.Environ())
	listener, err := installFilter()
	if err != nil {
		_, _ = unix.Write(fd, []byte("E"+err.Error()))
		return 126
	}
	if err := unix.Sendmsg(fd, []byte{'L'}, unix.UnixRights(listener), nil, 0); err != nil {
		fmt.Fprintf(os.Stderr, "kubectl tp: capture helper: passing the listener: %v\n", err)
		return 126
	}
	ack := make([]byte, 1)
	if n, err := unix.Read(fd, ack); err != nil || n != 1 {
		// The supervisor is gone: running the command now would leave it without one.
		return 126
	}
	unix.Close(listener)
	unix.Close(fd)
	if !exec {
		return 0
	}
	err = unix.Exec(path, os.Args, env)
	fmt.Fprintf(os.Stderr, "kubectl tp: cannot run %s: %v\n", os.Args[0], err)
	return 126
}

func withoutHelperEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, envFD+"=") || strings.HasPrefix(kv, envPath+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// installFilter sets no_new_privs and installs the filter on the calling thread, returning the
// listener. EBUSY means an earlier filter of this process already has a listener (a session
// inside a session, some sandboxes); EINVAL a kernel without WAIT_KILLABLE_RECV (before 5.19).
func installFilter() (int, error) {
	insns, err := Filter(runtime.GOARCH)
	if err != nil {
		return -1, err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	filters := make([]unix.SockFilter, len(insns))
	for i, in := range insns {
		filters[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filters)), Filter: &filters[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	r, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filters)
	if errno != 0 {
		switch {
		case errors.Is(errno, unix.EBUSY):
			return -1, errors.New("another seccomp supervisor already watches this process (a session inside a session, or a sandbox)")
		case errors.Is(errno, unix.EINVAL):
			return -1, errors.New("the kernel refused the seccomp listener flags (Linux 5.19 or newer needed)")
		}
		return -1, fmt.Errorf("seccomp(SET_MODE_FILTER): %w", errno)
	}
	return int(r), nil
}
