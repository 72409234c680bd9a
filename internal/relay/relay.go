// Package relay joins two connections: the one bidirectional copy that podshim, --expose and
// transparent mode share.
//
// It leaves out buffering policy (io.Copy picks splice or a 32 KiB buffer), deadlines and
// accounting: callers wrap the connections for those.
package relay

import (
	"context"
	"io"
	"net"
	"sync"
)

// Pipe copies bytes between a and b in both directions until both are done. When one direction
// reaches EOF, the writing side of its destination is shut down (CloseWrite) if supported, else
// the destination is closed. An error in either direction closes both. Pipe closes neither
// connection fully on a clean finish; callers close them.
func Pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
			dst.Close()
		}
	}
	wg.Go(func() { half(a, b) })
	wg.Go(func() { half(b, a) })
	wg.Wait()
}

// PipeContext is Pipe that also ends, closing a and b, when ctx is done first.
func PipeContext(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	Pipe(a, b)
}
