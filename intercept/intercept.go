// Package intercept is the laptop side of personal intercepts (kubectl tp run --intercept
// SERVICE[:PORT] --header x-dev=alice): a [Forwarder] registers the developer's headers with the
// Service's intercept router (a podshim in router mode, see package podshim), keeps a few accept
// streams parked there, and connects every connection the router hands over (a request that
// carries the headers) to the local process, 127.0.0.1:LOCAL.
//
// It leaves out the wire protocol and the router (packages tunnel and podshim), finding and
// reaching the router pod (the caller supplies a tunnel.Client whose streams reach it, with the
// router's token), parsing of the flags (the router validates the headers and its refusals come
// back verbatim), the Kubernetes side (router pod, selector switch, shadow Service) and UDP. It
// imports nothing from k8s.io.
package intercept

import (
	"context"
	"errors"
	"fmt"
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

// DefaultPool is the number of parked accept streams when Forwarder.Pool is zero.
const DefaultPool = 4

const (
	minBackoff       = 200 * time.Millisecond
	maxBackoff       = 2 * time.Second
	localDialTimeout = 5 * time.Second
	// registerTimeout bounds a registration made again (through a tunnel that may be dead).
	registerTimeout = 10 * time.Second
)

// Forwarder holds one session's intercept of one Service. Set the fields, then call
// [Forwarder.Start] (optional) and [Forwarder.Run], once; fields must not change after that.
type Forwarder struct {
	// Client reaches the router pod's podshim (its own tunnel, with the router's token).
	Client *tunnel.Client
	// Match are the header equalities a request must carry to be intercepted, "NAME=VALUE"
	// (e.g. "x-dev=alice"); empty intercepts every connection to the ports.
	Match []string
	// Owner names the developer (user@host), shown to others in clash errors and status.
	Owner string
	// Started is when the session began; zero means when Start is called.
	Started time.Time
	// Ports maps each Service target port to intercept to the local port its connections go
	// to. Both are 1 to 65535; at least one entry.
	Ports map[int]int
	// Pool is the number of accept streams kept parked in the router: how many matched
	// connections can be handed over at the same moment without waiting for a new stream. Zero
	// means DefaultPool.
	Pool int
	// Logf receives one line per state change (registration lost, registered again, a local
	// port unreachable or reachable again); nil means no logging.
	Logf logger.Logf
	// DialLocal connects to a local port; nil means a net.Dialer to 127.0.0.1:port.
	DialLocal func(ctx context.Context, port int) (net.Conn, error)

	mu        sync.Mutex
	state     int
	reg       *tunnel.InterceptRegistration // the current registration while started
	regCh     chan struct{}                 // closed (and replaced) when reg changes
	stop      context.CancelFunc            // ends Run
	localDown map[int]bool
	lastState string // of the registration, for logging changes only
}

const (
	notStarted = iota
	started
	running
	done
)

// refusedError is the router's refusal, worded as the router worded it.
type refusedError struct{ re *tunnel.RemoteError }

func (e *refusedError) Error() string { return e.re.Msg }
func (e *refusedError) Unwrap() error { return e.re }

func (f *Forwarder) spec(replace string) (*tunnel.InterceptSpec, error) {
	if len(f.Ports) == 0 {
		return nil, errors.New("intercept: no ports to intercept")
	}
	ports := make([]int, 0, len(f.Ports))
	for remote, local := range f.Ports {
		if remote < 1 || remote > 65535 || local < 1 || local > 65535 {
			return nil, fmt.Errorf("intercept: port %d -> local port %d: out of range 1-65535", remote, local)
		}
		ports = append(ports, remote)
	}
	slices.Sort(ports)
	return &tunnel.InterceptSpec{Headers: f.Match, Owner: f.Owner, Started: f.Started, Ports: ports, Replace: replace}, nil
}

// Start registers the intercept with the router and returns once it holds, or with the error.
// A refusal by the router (a clash with another developer's headers, naming its owner and
// start; bad headers or ports) is returned verbatim as the router worded it (errors.As finds the
// *tunnel.RemoteError; its Code is tunnel.CodeConflict for a clash). ctx bounds only the request.
// After a successful Start, call Run (or Close to give the intercept up).
func (f *Forwarder) Start(ctx context.Context) error {
	f.mu.Lock()
	if f.state != notStarted {
		f.mu.Unlock()
		return errors.New("intercept: Forwarder already started")
	}
	if f.Started.IsZero() {
		f.Started = time.Now()
	}
	f.state = started
	f.mu.Unlock()
	reg, err := f.register(ctx, "")
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.state = notStarted
		return err
	}
	if f.state == done { // closed meanwhile
		reg.Close()
		return errors.New("intercept: Forwarder closed")
	}
	f.reg, f.regCh = reg, make(chan struct{})
	return nil
}

func (f *Forwarder) register(ctx context.Context, replace string) (*tunnel.InterceptRegistration, error) {
	spec, err := f.spec(replace)
	if err != nil {
		return nil, err
	}
	reg, err := f.Client.Intercept(ctx, spec)
	var re *tunnel.RemoteError
	if errors.As(err, &re) && re.Msg != "" {
		return nil, &refusedError{re}
	}
	if err != nil {
		return nil, fmt.Errorf("intercept: registering with the router: %w", err)
	}
	return reg, nil
}

// Run calls Start unless it was called already, returning its error at once if it fails. It
// then keeps Pool accept streams parked and forwards every connection handed to them, until ctx
// is done or Close is called; it then deregisters, closes every forwarded connection and returns
// ctx.Err() (nil after Close; Run after Close returns nil at once). Tunnel failures never end Run: a lost registration is made again
// (replacing the old one if the router still holds it) with a backoff of 200ms to 2s.
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	state := f.state
	f.mu.Unlock()
	switch state {
	case notStarted:
		if err := f.Start(ctx); err != nil {
			return err
		}
	case running:
		return errors.New("intercept: Forwarder.Run called twice")
	case done:
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	if f.state == done {
		f.mu.Unlock()
		cancel()
		return nil
	}
	f.state, f.stop = running, cancel
	f.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { f.keepRegistered(ctx) })
	pool := f.Pool
	if pool <= 0 {
		pool = DefaultPool
	}
	for range pool {
		wg.Go(func() { f.acceptLoop(ctx, &wg) })
	}
	<-ctx.Done()
	f.mu.Lock()
	f.state = done
	if f.reg != nil {
		f.reg.Close()
	}
	f.mu.Unlock()
	wg.Wait()
	return parent.Err()
}

// Close deregisters the intercept (the router sends its requests to the real pods at once) and
// ends Run. It may be called at any time, more than once.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = done
	if f.stop != nil {
		f.stop()
	}
	if f.reg != nil {
		f.reg.Close()
	}
	return nil
}

// current returns the current registration and a channel closed when it is replaced.
func (f *Forwarder) current() (*tunnel.InterceptRegistration, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reg, f.regCh
}

// keepRegistered registers again whenever the current registration ends, until ctx is done.
func (f *Forwarder) keepRegistered(ctx context.Context) {
	for {
		reg, _ := f.current()
		select {
		case <-ctx.Done():
			return
		case <-reg.Done():
		}
		if ctx.Err() != nil {
			return
		}
		f.logState("lost", "intercept: the registration with the router was lost (%v); registering again", reg.Err())
		var backoff time.Duration
		for {
			rctx, cancel := context.WithTimeout(ctx, registerTimeout)
			nreg, err := f.register(rctx, reg.Key)
			cancel()
			if ctx.Err() != nil {
				if err == nil {
					nreg.Close()
				}
				return
			}
			if err == nil {
				f.logState("registered", "intercept: registered with the router again")
				f.mu.Lock()
				if f.state == done {
					f.mu.Unlock()
					nreg.Close()
					return
				}
				f.reg = nreg
				close(f.regCh)
				f.regCh = make(chan struct{})
				f.mu.Unlock()
				break
			}
			var re *tunnel.RemoteError
			if errors.As(err, &re) {
				f.logState("refused:"+re.Msg, "intercept: the router refuses the registration: %v (retrying)", err)
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if !sleep(ctx, backoff) {
				return
			}
		}
	}
}

// acceptLoop keeps one accept stream parked for the current registration and starts a handler
// for each connection it delivers, until ctx is done.
func (f *Forwarder) acceptLoop(ctx context.Context, wg *sync.WaitGroup) {
	var backoff time.Duration
	for ctx.Err() == nil {
		reg, changed := f.current()
		select {
		case <-reg.Done():
			// Wait for keepRegistered to make a new one.
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		default:
		}
		// A stream parked for a registration that ended is useless (on a dead tunnel it would
		// hang): give it up when the registration ends.
		actx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-reg.Done():
				cancel()
			case <-actx.Done():
			}
		}()
		h, err := f.Client.AcceptIntercept(actx, reg.Key)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-changed:
				backoff = 0
			}
			t.Stop()
			continue
		}
		backoff = 0
		wg.Go(func() { f.handle(ctx, h) })
	}
}

// handle connects a handed-over connection to its local port, or refuses it (the router then
// sends it to the real pods).
func (f *Forwarder) handle(ctx context.Context, h *tunnel.InterceptHandoff) {
	local, ok := f.Ports[h.Port]
	if !ok {
		h.Refuse(tunnel.CodeBadRequest, fmt.Sprintf("port %d is not intercepted by this session", h.Port))
		return
	}
	dctx, cancel := context.WithTimeout(ctx, localDialTimeout)
	lc, err := f.dialLocal(dctx, local)
	cancel()
	if err != nil {
		msg := fmt.Sprintf("cannot connect to 127.0.0.1:%d: %v", local, err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			msg = fmt.Sprintf("nothing listens on 127.0.0.1:%d", local)
		}
		f.localState(local, h.Port, msg)
		h.Refuse(tunnel.CodeRefused, msg)
		return
	}
	defer lc.Close()
	f.localState(local, h.Port, "")
	conn, err := h.Confirm()
	if err != nil {
		return
	}
	defer conn.Close()
	relay.PipeContext(ctx, conn, lc)
}

func (f *Forwarder) dialLocal(ctx context.Context, port int) (net.Conn, error) {
	if f.DialLocal != nil {
		return f.DialLocal(ctx, port)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// localState logs when a local port becomes unreachable (problem != "") or reachable again.
func (f *Forwarder) localState(local, port int, problem string) {
	f.mu.Lock()
	if f.localDown == nil {
		f.localDown = make(map[int]bool)
	}
	was := f.localDown[local]
	f.localDown[local] = problem != ""
	f.mu.Unlock()
	switch {
	case problem != "" && !was:
		f.logf("intercept: %s; intercepted requests to port %d go to the real pods meanwhile", problem, port)
	case problem == "" && was:
		f.logf("intercept: 127.0.0.1:%d is reachable again; intercepted requests to port %d reach it", local, port)
	}
}

// logState logs when the registration's state (key) changes.
func (f *Forwarder) logState(key, format string, args ...any) {
	f.mu.Lock()
	changed := f.lastState != key
	f.lastState = key
	f.mu.Unlock()
	if changed {
		f.logf(format, args...)
	}
}

func (f *Forwarder) logf(format string, args ...any) {
	if f.Logf != nil {
		f.Logf(format, args...)
	}
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
