//go:build !windows

package session

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/creack/pty"
)

// ownProcessGroup puts the child in its own process group, so that a terminal's signal reaches it
// once, from us, not twice.
func ownProcessGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// followWindowSize copies the terminal's size to the pty now and on every SIGWINCH, until stop.
func followWindowSize(tty, ptmx *os.File) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range winch {
			_ = pty.InheritSize(tty, ptmx)
		}
	}()
	winch <- syscall.SIGWINCH
	// stop returns once the copier is done, so the caller may close the pty after it.
	return func() { signal.Stop(winch); close(winch); <-done }
}
