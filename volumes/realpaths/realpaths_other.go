//go:build !linux

package realpaths

import "os/exec"

// Prepare fails: files at their real paths need Linux.
func Prepare(cmd *exec.Cmd, mounts []Mount) error { return ErrUnsupported }

// Setup does nothing outside Linux.
func Setup() error { return nil }

// Apply fails: files at their real paths need Linux.
func Apply(mounts []Mount) error { return ErrUnsupported }

// IsProbe is false outside Linux.
func IsProbe() bool { return false }

// ProbeMain is never called outside Linux.
func ProbeMain() {}

// Probe says that files at their real paths need Linux.
func Probe() error { return ErrUnsupported }
