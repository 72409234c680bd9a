//go:build !windows

package volumes

import "syscall"

// oNoFollow and oNonBlock refuse to open a symlink and never block on a FIFO.
const (
	oNoFollow = syscall.O_NOFOLLOW
	oNonBlock = syscall.O_NONBLOCK
)
