// Package expose carries connections made inside the cluster back to the laptop: it
// is the laptop side of kubectl tp run --expose LOCAL[:REMOTE]. A [Forwarder] asks
// podshim to listen on the REMOTE pod ports, keeps a few accept streams parked in
// podshim, and connects every in-cluster connection handed to one of them to
// 127.0.0.1:LOCAL, copying bytes both ways with half-close.
//
// It leaves out the wire protocol and the pod side (packages tunnel and podshim), the
// transport that opens streams, parsing of the --expose flag, UDP, and any access
// control: every in-cluster client that can reach the pod reaches the local port.
// It imports nothing from k8s.io.
package expose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/kubectl-tp/kubectl-tp/internal/relay"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Client is the part of the tunnel client a [Forwarder] uses; *tunnel.Client
// implements it.
type Client interface {
	// Expose makes the pod listen on ports until the returned Closer is closed. If the
	// Closer also has a method Done() <-chan struct{}, the Forwarder exposes the ports
	// again when that channel closes (the stream broke) while it is running.
	Expose(ctx context.Context, ports []int) (io.Closer, error)
	// Accept waits for one in-cluster connection to an exposed port and returns it with
	// the pod port it arrived on and the in-cluster peer's address. Closing conn
	// without writing to it makes the pod reset the in-cluster connection.
	Accept(ctx context.Context) (conn net.Conn, port int, peer string, err error)
}

var _ Client = (*tunnel.Client)(nil)

// DefaultPool is the number of parked accept streams when Forwarder.Pool is zero.
const DefaultPool = 4

const (
	minBackoff       = 200 * time.Millisecond
	maxBackoff       = 2 * time.Second
	logInterval      = time.Minute // per message key, see logLimited
	localDialTimeout = 5 * time.Second
)

// Forwarder forwards in-cluster connections on pod ports to local ports. Set the
// fields, then call [Forwarder.Start] (optional) and [Forwarder.Run], once; fields
// must not change after that.
type Forwarder struct {
	// Client talks to podshim.
	Client Client
	// Ports maps each pod port to expose to the local port its connections go to.
	// Both are 1 to 65535; at most tunnel.MaxExposePorts entries.
	Ports map[int]int
	// Pool is the number of accept streams kept parked in podshim, that is, how many
	// in-cluster connections can be handed over at the same moment without waiting
	// for a new stream. Zero means DefaultPool.
	Pool int
	// Logf logs problems (a local port nothing listens on, a broken tunnel), each kind
	// at most once a minute; nil means no logging.
	Logf logger.Logf
	// DialLocal connects to a local port; nil means a net.Dialer to 127.0.0.1:port.
	DialLocal func(ctx context.Context, port int) (net.Conn, error)

	mu       sync.Mutex
	state    int       // notStarted, started or ran
	exposure io.Closer // the current expose stream while started
	lastLog  map[string]time.Time
}

const (
	notStarted = iota
	started
	ran
)

// remotePorts validates f.Ports and returns the pod ports, sorted.
func (f *Forwarder) remotePorts() ([]int, error) {
	if len(f.Ports) == 0 {
		return nil, errors.New("expose: no ports to expose")
	}
	for remote, local := range f.Ports {
		if local < 1 || local > 65535 {
			return nil, fmt.Errorf("expose: local port %d (for pod port %d) out of range 1-65535", local, remote)
		}
	}
	ports := make([]int, 0, len(f.Ports))
	for remote := range f.Ports {
		ports = append(ports, remote)
	}
	slices.Sort(ports)
	ports, err := tunnel.ValidatePorts(ports)
	if err != nil {
		return nil, fmt.Errorf("expose: %w", err)
	}
	return ports, nil
}

// Start asks podshim to listen on the pod ports of f.Ports and returns once it does,
// or with the error (an invalid, busy or privileged port, a broken tunnel). ctx bounds
// only the request. After a successful Start, call Run to forward connections; the
// ports stay exposed until Run returns.
func (f *Forwarder) Start(ctx context.Context) error {
	ports, err := f.remotePorts()
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.state != notStarted {
		f.mu.Unlock()
		return errors.New("expose: Forwarder already started")
	}
	f.state = started
	f.mu.Unlock()
	c, err := f.Client.Expose(ctx, ports)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.state = notStarted
		return fmt.Errorf("expose: exposing pod ports %v: %w", ports, err)
	}
	f.exposure = c
	return nil
}

// Run calls Start unless it was called already, returning its error at once if it
// fails. It then keeps Pool accept streams parked and forwards every connection
// handed to them, until ctx is done; it then closes the exposure and every forwarded
// connection and returns ctx.Err(). Tunnel failures never end Run: it retries with a
// backoff of 200ms to 2s, and exposes the ports again if the expose stream broke.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	state := f.state
	f.mu.Unlock()
	switch state {
	case notStarted:
		if err := f.Start(ctx); err != nil {
			return err
		}
	case ran:
		return errors.New("expose: Forwarder.Run called twice")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		f.mu.Lock()
		f.state = ran
		if f.exposure != nil {
			f.exposure.Close()
			f.exposure = nil
		}
		f.mu.Unlock()
		wg.Wait()
	}()
	wg.Go(func() { f.keepExposed(ctx) })
	pool := f.Pool
	if pool <= 0 {
		pool = DefaultPool
	}
	for range pool {
		wg.Go(func() { f.acceptLoop(ctx, &wg) })
	}
	<-ctx.Done()
	return parent.Err()
}

// keepExposed exposes the ports again whenever the current expose stream reports it
// has ended, until ctx is done.
func (f *Forwarder) keepExposed(ctx context.Context) {
	ports, _ := f.remotePorts() // validated by Start
	for {
		f.mu.Lock()
		d, ok := f.exposure.(interface{ Done() <-chan struct{} })
		f.mu.Unlock()
		if !ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-d.Done():
		}
		var backoff time.Duration
		for {
			c, err := f.Client.Expose(ctx, ports)
			if ctx.Err() != nil {
				if err == nil {
					c.Close()
				}
				return
			}
			if err == nil {
				f.mu.Lock()
				if f.state == ran {
					f.mu.Unlock()
					c.Close()
					return
				}
				f.exposure.Close()
				f.exposure = c
				f.mu.Unlock()
				f.logf("expose: pod ports %v exposed again", ports)
				break
			}
			f.logLimited("expose", "expose: the tunnel lost pod ports %v; exposing them again: %v", ports, err)
			backoff = nextBackoff(backoff)
			if !sleep(ctx, backoff) {
				return
			}
		}
	}
}

// acceptLoop keeps one accept stream parked and starts a handler for each
// connection it delivers, until ctx is done.
func (f *Forwarder) acceptLoop(ctx context.Context, wg *sync.WaitGroup) {
	var backoff time.Duration
	for ctx.Err() == nil {
		conn, port, peer, err := f.Client.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.logLimited("accept", "expose: waiting for in-cluster connections: %v (retrying)", err)
			backoff = nextBackoff(backoff)
			sleep(ctx, backoff)
			continue
		}
		backoff = 0
		wg.Go(func() { f.handle(ctx, conn, port, peer) })
	}
}

// handle connects conn, an in-cluster connection that arrived on pod port port, to
// its local port; if that fails it closes conn, which resets the in-cluster side.
func (f *Forwarder) handle(ctx context.Context, conn net.Conn, port int, peer string) {
	defer conn.Close()
	local, ok := f.Ports[port]
	if !ok {
		f.logLimited("unknown:"+strconv.Itoa(port), "expose: podshim handed over a connection from %s to pod port %d, which is not exposed; resetting it", peer, port)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, localDialTimeout)
	lc, err := f.dialLocal(dctx, local)
	cancel()
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			f.logLimited("dial:"+strconv.Itoa(local), "expose: nothing listens on 127.0.0.1:%d; in-cluster connections to pod port %d are reset", local, port)
		} else {
			f.logLimited("dial:"+strconv.Itoa(local), "expose: cannot connect to 127.0.0.1:%d: %v; in-cluster connections to pod port %d are reset", local, err, port)
		}
		return
	}
	defer lc.Close()
	relay.PipeContext(ctx, conn, lc)
}

func (f *Forwarder) dialLocal(ctx context.Context, port int) (net.Conn, error) {
	if f.DialLocal != nil {
		return f.DialLocal(ctx, port)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

func (f *Forwarder) logf(format string, args ...any) {
	if f.Logf != nil {
		f.Logf(format, args...)
	}
}

// logLimited logs at most once per logInterval for each key.
func (f *Forwarder) logLimited(key, format string, args ...any) {
	if f.Logf == nil {
		return
	}
	now := time.Now()
	f.mu.Lock()
	if f.lastLog == nil {
		f.lastLog = make(map[string]time.Time)
	}
	last, seen := f.lastLog[key]
	if seen && now.Sub(last) < logInterval {
		f.mu.Unlock()
		return
	}
	f.lastLog[key] = now
	f.mu.Unlock()
	f.Logf(format, args...)
}

func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, minBackoff), maxBackoff)
}

// sleep waits for d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
