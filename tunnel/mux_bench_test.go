package tunnel

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// BenchmarkBulkPath measures the cost per byte of the tunnel's own hops on a download, without a
// cluster: an "app" writes b.N bytes over loopback TCP to a relay that stands for podshim, which
// copies them on to the reader that stands for the laptop's proxy. "tcp" is the relay as a plain
// TCP-to-TCP copy (what port-forward's last hop costs), "mux" is podshim's real hop: the bytes go
// into a multiplexed stream on a loopback carrier and out of it on the laptop's end. The cpu-ns/B
// metric is the process's user+system CPU per byte (all the hops share the process, so compare
// the rows, not the absolute value); profile with -cpuprofile to see where it goes.
func BenchmarkBulkPath(b *testing.B) {
	for _, tc := range []struct {
		name string
		mux  bool
	}{{"tcp", false}, {"mux", true}} {
		b.Run(tc.name, func(b *testing.B) {
			app := listen(b)
			go func() {
				c, err := app.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 1<<20)
				for n := b.N; n > 0; n -= len(buf) {
					if _, err := c.Write(buf[:min(n, len(buf))]); err != nil {
						return
					}
				}
			}()
			var reader net.Conn
			carrier := listen(b)
			if tc.mux {
				// Pod side: a yamux server on the carrier; each stream is relayed to the app.
				go func() {
					c, err := carrier.Accept()
					if err != nil {
						return
					}
					srv, err := yamux.Server(c, MuxConfig(), nil)
					if err != nil {
						return
					}
					b.Cleanup(func() { srv.Close() })
					st, err := srv.AcceptStream()
					if err != nil {
						return
					}
					relay(b, MuxStream(st), app.Addr().String())
				}()
				c, err := net.Dial("tcp", carrier.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				cl, err := yamux.Client(c, MuxConfig(), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				st, err := cl.OpenStream(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				reader = MuxStream(st)
			} else {
				go func() {
					c, err := carrier.Accept()
					if err != nil {
						return
					}
					relay(b, c, app.Addr().String())
				}()
				c, err := net.Dial("tcp", carrier.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				reader = c
			}
			defer reader.Close()
			b.SetBytes(1)
			b.ResetTimer()
			u0 := cpuTime()
			n, err := io.CopyBuffer(io.Discard, reader, make([]byte, 128<<10))
			if err != nil || n != int64(b.N) {
				b.Fatalf("read %d bytes (%v), want %d", n, err, b.N)
			}
			b.ReportMetric(float64(cpuTime()-u0)/float64(b.N), "cpu-ns/B")
		})
	}
}

func listen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

// relay dials the app and copies its bytes to c (the download direction only).
func relay(b *testing.B, c net.Conn, app string) {
	defer c.Close()
	t, err := net.Dial("tcp", app)
	if err != nil {
		b.Error(err)
		return
	}
	defer t.Close()
	_, _ = io.Copy(c, t)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
