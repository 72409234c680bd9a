//go:build !linux

package capture

import (
	"errors"
	"os/exec"
	"runtime"
)

// MinKernel is the oldest Linux transparent mode runs on.
const MinKernel = "5.19"

// Supervisor exists only on Linux; elsewhere Prepare fails.
type Supervisor struct {
	Router     *Router
	Redirector *Redirector
	DNS        DNSAddrs
	Logf       func(format string, args ...any)
}

var errUnsupported = errors.New("transparent mode needs Linux " + MinKernel + " or newer; on " + runtime.GOOS + " kubectl-tp uses proxy variables")

// Prepare fails: there is no seccomp here.
func (s *Supervisor) Prepare(*exec.Cmd) error { return errUnsupported }

// Attach fails: there is no seccomp here.
func (s *Supervisor) Attach() error { return errUnsupported }

// Close does nothing.
func (s *Supervisor) Close() error { return nil }

// Probe says why transparent mode cannot work on this operating system.
func Probe() error { return errUnsupported }

// IsHelper is false: no helper runs here.
func IsHelper() bool { return false }

// HelperMain is never called here.
func HelperMain(before func() error) {}
