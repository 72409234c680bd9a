//go:build windows

package volumes

// Windows has neither flag; os.Root still keeps every path inside the mirror's root, and the
// mirror checks each path with Lstat before writing it.
const (
	oNoFollow = 0
	oNonBlock = 0
)
