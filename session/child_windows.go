//go:build windows

package session

import (
	"os"
	"os/exec"
)

// ownProcessGroup does nothing on Windows: console signals are not process-group based there.
func ownProcessGroup(*exec.Cmd) {}

// followWindowSize does nothing on Windows (no SIGWINCH; creack/pty has no Windows pty).
func followWindowSize(_, _ *os.File) (stop func()) { return func() {} }
