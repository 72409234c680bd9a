package capture

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MinKernel is the oldest Linux transparent mode runs on: 5.19 brought
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, without which a signal (Go programs get SIGURG often)
// restarts a connect the supervisor is already carrying.
const MinKernel = "5.19"

// Probe reports why transparent mode cannot work for this process, or nil when it can. Besides
// the static checks (architecture, kernel version, seccomp user notification, Yama) it starts
// the real helper once and takes a file descriptor from it, which is what a session will do: a
// nested session (EBUSY) and a ptrace restriction show up here, not halfway through a session.
func Probe() error {
	if _, ok := abis[runtime.GOARCH]; !ok {
		return fmt.Errorf("transparent mode supports amd64 and arm64, not %s", runtime.GOARCH)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		rel := unix.ByteSliceToString(u.Release[:])
		if !kernelAtLeast(rel, 5, 19) {
			return fmt.Errorf("Linux %s is older than %s", rel, MinKernel)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail"); err != nil || !strings.Contains(string(b), "user_notif") {
		return errors.New("the kernel offers no seccomp user notification")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		if v, _ := strconv.Atoi(strings.TrimSpace(string(b))); v >= 2 {
			return fmt.Errorf("Yama's ptrace_scope is %d, which forbids taking a child's sockets (1 or 0 allows it)", v)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding kubectl-tp's own executable: %w", err)
	}
	return probeHelper(self)
}

// probeHelper runs self as a helper in probe mode (no command), receives its listener and
// duplicates the helper's end of the socketpair with pidfd_getfd.
func probeHelper(self string) error {
	var s Supervisor
	cmd := exec.Command(self)
	if err := s.prepare(cmd, self, false); err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.Close()
		return fmt.Errorf("starting the capture helper: %w", err)
	}
	s.childEnd.Close()
	defer s.parentEnd.Close()
	listener, err := receiveListener(s.parentEnd, 10e9)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	unix.Close(listener)
	fd, err := takeFD(cmd.Process.Pid, 2+len(cmd.ExtraFiles))
	if err == nil {
		unix.Close(fd)
	} else {
		err = fmt.Errorf("cannot take a socket from a child process (%v)", err)
	}
	_, _ = s.parentEnd.Write([]byte{'A'})
	if werr := cmd.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("the capture helper failed: %v %s", werr, strings.TrimSpace(stderr.String()))
	}
	return err
}

// kernelAtLeast compares a release string such as "6.1.0-18-amd64" with major.minor.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return true // unknown: let the real probe decide
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}
