package podshim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// Router mode: a podshim in front of a Service whose selector was switched to it, shared by all
// the sessions that intercept that Service. It listens on the Service's target ports and serves
// each with an intercept.Router (one intercept.Table per port): requests that carry a
// registration's headers go to that registration's session, the others to the real pods behind
// the headless shadow Service. Sessions reach it through their own tunnels (the same token check
// as any podshim: the router pod's TP_TOKEN, shared by every session that intercepts the
// Service) and speak tunnel.OpIntercept, OpInterceptAccept and OpInterceptList; see package
// tunnel for the protocol.

// Defaults of RouterConfig's zero values.
const (
	// DefaultRouterSessionTimeout is how long a registration survives without a ping: a laptop
	// that vanished without closing its stream is removed within this time of its last ping
	// (pings come every third of it).
	DefaultRouterSessionTimeout = 6 * time.Second
	// DefaultRouterAcceptWait is how long a matched connection waits for a parked accept stream
	// of its registration before it goes to the real pods.
	DefaultRouterAcceptWait = 2 * time.Second
)

// RouterConfig starts podshim in router mode (Server.Router). Only Ports and Shadow are required.
//
// It leaves out everything Kubernetes: the router pod, the selector switch, the shadow Service,
// and restoring the Service when the router stays idle (a watchdog's job; see
// Server.RouterStatus).
type RouterConfig struct {
	// Ports are the Service's target ports the router listens on (1 to 65535, at most
	// tunnel.MaxExposePorts).
	Ports []int
	// Shadow is the host name of the headless shadow Service that selects the real pods (e.g.
	// api-tp-shadow.ns.svc.cluster.local), or an IP address. Unmatched connections to a port go
	// to one of its addresses, picked at random and resolved again for every connection, on the
	// same port.
	Shadow string
	// Host is the address the ports are bound to; empty means all the pod's addresses.
	Host string
	// SessionTimeout is how long a registration lives without a ping; zero means
	// DefaultRouterSessionTimeout. The client is told to ping every third of it.
	SessionTimeout time.Duration
	// AcceptWait is how long a matched connection waits for a parked accept stream of its
	// registration, and then for the session to take it, before falling back to the real pods;
	// zero means DefaultRouterAcceptWait.
	AcceptWait time.Duration
	// SniffTimeout is passed to each intercept.Router (zero means its default).
	SniffTimeout time.Duration
	// Resolve returns the addresses of Shadow; nil means net.DefaultResolver.LookupHost. Meant
	// for tests. (Connections are opened with Server.Dial.)
	Resolve func(ctx context.Context, host string) ([]string, error)
	// Listen opens the listener of one port; nil means a TCP listener on Host:port. Meant for
	// tests.
	Listen func(port int) (net.Listener, error)
	// Now is the clock of RouterStatus.IdleFor and of ages; nil means time.Now.
	Now func() time.Time
}

// RouterStatus is a snapshot of a router's registrations (see Server.RouterStatus).
type RouterStatus struct {
	// Intercepts are the registrations, oldest first.
	Intercepts []tunnel.InterceptInfo
	// IdleFor is how long the router has had no registration (since Serve started or the last
	// one ended); zero while any exists.
	IdleFor time.Duration
	// Changed is closed at the next registration or removal, or when the router retires.
	Changed <-chan struct{}
	// Retiring is set once RetireRouter decided to give the Service back.
	Retiring bool
}

// routerState is the router of one Serve call.
type routerState struct {
	s      *Server
	cfg    *RouterConfig
	tables map[int]*intercept.Table
	wg     sync.WaitGroup

	mu        sync.Mutex
	regs      map[string]*registration // by key
	seq       uint64
	idleSince time.Time // zero while regs is not empty
	changed   chan struct{}
	// retiring is set once the router gives its Service back (Server.RetireRouter): from then on
	// it refuses registrations, so none can come between that decision and the restore.
	retiring bool
}

// registration is one session's intercept: one intercept.Intercept in the Table of each port.
type registration struct {
	key, id    string
	owner      string
	started    time.Time
	registered time.Time
	match      intercept.Match
	ports      []int
	done       chan struct{} // closed when removed

	// guarded by routerState.mu
	parked   []*parkedStream // oldest first
	parkedCh chan struct{}   // closed (and replaced) when a stream parks
}

// parkedStream is a parked accept stream; a dialer sends it at most one handoff.
type parkedStream struct{ assign chan *handoff }

// handoff asks a parked stream to carry a connection to port.
type handoff struct {
	ctx    context.Context // the dial's
	port   int
	result chan handoffResult // buffered; always answered
}

type handoffResult struct {
	conn    net.Conn
	err     error
	refused bool // the client could not reach its local process (so trying another stream is pointless)
}

func (rc *RouterConfig) sessionTimeout() time.Duration {
	if rc.SessionTimeout > 0 {
		return rc.SessionTimeout
	}
	return DefaultRouterSessionTimeout
}

func (rc *RouterConfig) acceptWait() time.Duration {
	if rc.AcceptWait > 0 {
		return rc.AcceptWait
	}
	return DefaultRouterAcceptWait
}

func (rs *routerState) now() time.Time {
	if rs.cfg.Now != nil {
		return rs.cfg.Now()
	}
	return time.Now()
}

// startRouter listens on the router's ports and serves them until ctx ends; wait waits for that.
func (s *Server) startRouter(ctx context.Context) (*routerState, error) {
	cfg := s.Router
	ports, err := tunnel.ValidatePorts(cfg.Ports)
	if err != nil {
		return nil, fmt.Errorf("podshim: router ports: %w", err)
	}
	if cfg.Shadow == "" {
		return nil, errors.New("podshim: router mode needs the shadow Service's host name")
	}
	rs := &routerState{s: s, cfg: cfg, tables: make(map[int]*intercept.Table), regs: make(map[string]*registration), changed: make(chan struct{})}
	rs.idleSince = rs.now()
	if !s.router.CompareAndSwap(nil, rs) {
		return nil, errors.New("podshim: the router is already serving")
	}
	lns := make(map[int]net.Listener, len(ports))
	for _, p := range ports {
		ln, err := rs.listen(p)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			s.router.Store(nil)
			return nil, fmt.Errorf("podshim: router port %d: %w", p, err)
		}
		lns[p] = ln
	}
	for p, ln := range lns {
		t := &intercept.Table{}
		rs.tables[p] = t
		r := &intercept.Router{
			Table:        t,
			Default:      intercept.DialerFunc(func(ctx context.Context) (net.Conn, error) { return rs.dialShadow(ctx, p) }),
			Logf:         s.Logf,
			SniffTimeout: cfg.SniffTimeout,
		}
		rs.wg.Go(func() { rs.serve(ctx, p, r, ln) })
	}
	s.logf("router: serving ports %v; unmatched requests go to %s", ports, cfg.Shadow)
	return rs, nil
}

func (rs *routerState) listen(port int) (net.Listener, error) {
	if rs.cfg.Listen != nil {
		return rs.cfg.Listen(port)
	}
	return net.Listen("tcp", net.JoinHostPort(rs.cfg.Host, strconv.Itoa(port)))
}

// serve runs r on ln until ctx ends, retrying after accept errors (typically out of file
// descriptors).
func (rs *routerState) serve(ctx context.Context, port int, r *intercept.Router, ln net.Listener) {
	var delay time.Duration
	for {
		err := r.Serve(ctx, ln)
		if ctx.Err() != nil || err == nil || errors.Is(err, net.ErrClosed) {
			ln.Close()
			return
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		rs.s.logf("router port %d: accepting: %v; retrying in %v", port, err, delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

// wait waits for the router's listeners and connections to end (after Serve's context).
func (rs *routerState) wait() {
	rs.wg.Wait()
	rs.s.router.CompareAndSwap(rs, nil)
}

// dialShadow connects to a real pod on port: Shadow resolved again, its addresses tried in a
// random order.
func (rs *routerState) dialShadow(ctx context.Context, port int) (net.Conn, error) {
	resolve := rs.cfg.Resolve
	if resolve == nil {
		resolve = net.DefaultResolver.LookupHost
	}
	addrs, err := resolve(ctx, rs.cfg.Shadow)
	if err != nil {
		return nil, fmt.Errorf("resolving the shadow service %s: %w (are any of the real pods ready?)", rs.cfg.Shadow, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("the shadow service %s has no ready endpoints", rs.cfg.Shadow)
	}
	mrand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	var errs []error
	for _, a := range addrs {
		c, err := rs.s.dial(ctx, "tcp", net.JoinHostPort(a, strconv.Itoa(port)))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("no real pod behind %s accepted a connection on port %d: %w", rs.cfg.Shadow, port, errors.Join(errs...))
}

// notifyLocked wakes the waiters on RouterStatus.Changed.
func (rs *routerState) notifyLocked() {
	close(rs.changed)
	rs.changed = make(chan struct{})
}

// register validates req and adds its registration to the Tables, replacing req.Intercept's. On
// failure it returns a tunnel code and a one-line message.
func (rs *routerState) register(req *tunnel.Request) (*registration, string, error) {
	if len(req.Ports) == 0 {
		return nil, tunnel.CodeBadRequest, fmt.Errorf("name the service ports to intercept (this router serves %v)", rs.ports())
	}
	ports, err := tunnel.ValidatePorts(req.Ports)
	if err != nil {
		return nil, tunnel.CodeBadRequest, err
	}
	for _, p := range ports {
		if rs.tables[p] == nil {
			return nil, tunnel.CodeBadRequest, fmt.Errorf("port %d is not a target port of this service (the router serves %v)", p, rs.ports())
		}
	}
	if len(req.Headers) > tunnel.MaxInterceptHeaders {
		return nil, tunnel.CodeBadRequest, fmt.Errorf("%d headers, at most %d", len(req.Headers), tunnel.MaxInterceptHeaders)
	}
	match, err := intercept.ParseMatch(req.Headers...)
	if err != nil {
		return nil, tunnel.CodeBadRequest, err
	}
	if len(req.Owner) > 256 {
		return nil, tunnel.CodeBadRequest, errors.New("owner longer than 256 bytes")
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	reg := &registration{
		key: hex.EncodeToString(k[:]), owner: req.Owner, started: req.Started, match: match, ports: ports,
		done: make(chan struct{}), parkedCh: make(chan struct{}),
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.retiring {
		return nil, tunnel.CodeRetiring, errors.New("this intercept router is giving its service back (no intercept was left); run the command again to start a new one")
	}
	if old := rs.regs[req.Intercept]; req.Intercept != "" && old != nil {
		rs.removeLocked(old, "replaced by a new registration of the same session")
	}
	rs.seq++
	reg.id = strconv.FormatUint(rs.seq, 10)
	reg.registered = rs.now()
	for i, p := range ports {
		err := rs.tables[p].Add(intercept.Intercept{
			ID: reg.id, Owner: reg.owner, Started: reg.started, Match: match,
			Dialer: intercept.DialerFunc(func(ctx context.Context) (net.Conn, error) { return rs.dialSession(ctx, reg, p) }),
		})
		if err != nil {
			for _, q := range ports[:i] {
				rs.tables[q].Remove(reg.id)
			}
			return nil, tunnel.CodeConflict, fmt.Errorf("port %d: %w", p, err)
		}
	}
	rs.regs[reg.key] = reg
	rs.idleSince = time.Time{}
	rs.notifyLocked()
	rs.s.logf("router: intercept %s registered by %s: headers %s on ports %v", reg.id, ownerName(reg.owner), match, ports)
	return reg, "", nil
}

// remove ends reg if it is still registered.
func (rs *routerState) remove(reg *registration, why string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.regs[reg.key] == reg {
		rs.removeLocked(reg, why)
	}
}

func (rs *routerState) removeLocked(reg *registration, why string) {
	delete(rs.regs, reg.key)
	for _, p := range reg.ports {
		rs.tables[p].Remove(reg.id)
	}
	close(reg.done)
	if len(rs.regs) == 0 {
		rs.idleSince = rs.now()
	}
	rs.notifyLocked()
	rs.s.logf("router: intercept %s of %s removed: %s", reg.id, ownerName(reg.owner), why)
}

func ownerName(o string) string {
	if o == "" {
		return "an unnamed owner"
	}
	return o
}

func (rs *routerState) ports() []int {
	out := make([]int, 0, len(rs.tables))
	for p := range rs.tables {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (rs *routerState) lookup(key string) *registration {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.regs[key]
}

// status returns the registrations, oldest first.
func (rs *routerState) status() RouterStatus {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := rs.now()
	st := RouterStatus{Changed: rs.changed, Retiring: rs.retiring}
	if len(rs.regs) == 0 {
		st.IdleFor = max(now.Sub(rs.idleSince), 0)
	}
	for _, reg := range rs.regs {
		info := tunnel.InterceptInfo{
			ID: reg.id, Owner: reg.owner, Started: reg.started, Age: max(now.Sub(reg.registered), 0),
			Ports: slices.Clone(reg.ports),
		}
		for _, h := range reg.match {
			info.Headers = append(info.Headers, h.String())
		}
		st.Intercepts = append(st.Intercepts, info)
	}
	slices.SortFunc(st.Intercepts, func(a, b tunnel.InterceptInfo) int {
		ai, _ := strconv.ParseUint(a.ID, 10, 64)
		bi, _ := strconv.ParseUint(b.ID, 10, 64)
		return int(ai) - int(bi)
	})
	return st
}

// RetireRouter decides, atomically with registrations, that the router gives its Service back:
// it returns true (and refuses every later registration) when no intercept is registered, false
// otherwise or outside router mode. The router's watch (RouterWatch) then restores the Service.
func (s *Server) RetireRouter() bool {
	rs := s.router.Load()
	if rs == nil {
		return false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.regs) > 0 {
		return false
	}
	if !rs.retiring {
		rs.retiring = true
		rs.notifyLocked()
		rs.s.logf("router: no intercept left; retiring")
	}
	return true
}

// RouterStatus reports the router's registrations and how long it has had none; ok is false
// unless Serve is running in router mode. A watchdog restores the Service once IdleFor exceeds
// its grace, waiting on Changed (or its remaining grace) in between.
func (s *Server) RouterStatus() (st RouterStatus, ok bool) {
	rs := s.router.Load()
	if rs == nil {
		return RouterStatus{}, false
	}
	return rs.status(), true
}

// dialSession is the Dialer of reg on port: it hands the connection to reg's oldest parked
// accept stream, waiting up to AcceptWait for one to park. It fails (and the router sends the
// request to the real pods) when none parks in time, the registration ends, or the session's
// local process cannot be reached.
func (rs *routerState) dialSession(ctx context.Context, reg *registration, port int) (net.Conn, error) {
	wait := rs.cfg.acceptWait()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		rs.mu.Lock()
		select {
		case <-reg.done:
			rs.mu.Unlock()
			return nil, errors.New("the intercept has ended")
		default:
		}
		if len(reg.parked) > 0 {
			a := reg.parked[0]
			reg.parked = reg.parked[1:]
			rs.mu.Unlock()
			h := &handoff{ctx: ctx, port: port, result: make(chan handoffResult, 1)}
			a.assign <- h
			res := <-h.result // answered within the dial's deadline
			if res.err == nil {
				return res.conn, nil
			}
			if res.refused || ctx.Err() != nil {
				return nil, res.err
			}
			continue // a stream that broke while parked: try the next
		}
		ch := reg.parkedCh
		rs.mu.Unlock()
		select {
		case <-ch:
		case <-reg.done:
		case <-timer.C:
			return nil, fmt.Errorf("%s's session parked no stream within %v (its tunnel may be down)", ownerName(reg.owner), wait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// park adds a to reg's pool; false if reg has ended.
func (rs *routerState) park(reg *registration, a *parkedStream) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	select {
	case <-reg.done:
		return false
	default:
	}
	reg.parked = append(reg.parked, a)
	close(reg.parkedCh)
	reg.parkedCh = make(chan struct{})
	return true
}

// unpark removes a from reg's pool; false if a dialer took it already (a handoff is then on its
// way on a.assign).
func (rs *routerState) unpark(reg *registration, a *parkedStream) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	i := slices.Index(reg.parked, a)
	if i < 0 {
		return false
	}
	reg.parked = slices.Delete(reg.parked, i, i+1)
	return true
}

// routerOp reports whether op is one of the ops a podshim in router mode serves: its token is shared by every
// session that intercepts the Service, so it offers nothing beyond intercepts (and the direct path
// to them).
func routerOp(op string) bool {
	switch op {
	case tunnel.OpHello, tunnel.OpMux, tunnel.OpDirect, tunnel.OpIntercept, tunnel.OpInterceptAccept, tunnel.OpInterceptList, tunnel.OpInterceptRetire:
		return true
	}
	return false
}

func (s *Server) routerFor(c net.Conn) *routerState {
	rs := s.router.Load()
	if rs == nil {
		s.reply(c, fail(tunnel.CodeBadRequest, "this podshim is not an intercept router"))
	}
	return rs
}

// serveIntercept holds a registration for as long as the stream lives and pings arrive.
func (s *Server) serveIntercept(ctx context.Context, c net.Conn, req *tunnel.Request) {
	rs := s.routerFor(c)
	if rs == nil {
		return
	}
	reg, code, err := rs.register(req)
	if err != nil {
		s.logf("router: refused an intercept for %s: %v", ownerName(req.Owner), err)
		s.reply(c, fail(code, err.Error()))
		return
	}
	var why string
	defer func() { rs.remove(reg, why) }()
	timeout := rs.cfg.sessionTimeout()
	ping := max(timeout/tunnel.InterceptPingsMissed, time.Millisecond)
	if !s.reply(c, &tunnel.Response{OK: true, Intercept: reg.key, PingMillis: max(ping.Milliseconds(), 1)}) {
		why = "the registration stream broke"
		return
	}
	// End the stream when the registration is replaced or Serve stops.
	go func() {
		select {
		case <-reg.done:
		case <-ctx.Done():
		}
		c.Close()
	}()
	for {
		_ = c.SetDeadline(time.Now().Add(timeout))
		var p tunnel.Request
		err := tunnel.ReadFrame(c, &p)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			why = fmt.Sprintf("no ping for %v (the session vanished)", timeout)
			return
		case ctx.Err() != nil:
			why = "the router is stopping"
			return
		case errors.Is(err, io.EOF):
			why = "its session closed the registration"
			return
		case err != nil:
			why = "the registration stream ended: " + err.Error()
			return
		case p.Op != tunnel.OpPing:
			s.reply(c, fail(tunnel.CodeBadRequest, fmt.Sprintf("unexpected op %q on a registration stream", p.Op)))
			why = "its session sent " + p.Op + " on the registration stream"
			return
		}
		if err := tunnel.WriteFrame(c, &tunnel.Response{OK: true}); err != nil {
			why = "the registration stream broke"
			return
		}
	}
}

// serveInterceptAccept parks c for req.Intercept's registration until a dialer hands it a
// connection, then carries that connection until the router closes it.
func (s *Server) serveInterceptAccept(ctx context.Context, c net.Conn, req *tunnel.Request) {
	rs := s.routerFor(c)
	if rs == nil {
		return
	}
	reg := rs.lookup(req.Intercept)
	if reg == nil {
		s.reply(c, fail(tunnel.CodeBadRequest, "no such intercept (its registration has ended)"))
		return
	}
	if !s.reply(c, &tunnel.Response{OK: true}) {
		return
	}
	a := &parkedStream{assign: make(chan *handoff, 1)}
	if !rs.park(reg, a) {
		return
	}
	// The client sends nothing while parked: any read result means the stream is unusable.
	readErr := watchParked(c)
	gone := func(why string) {
		if !rs.unpark(reg, a) {
			h := <-a.assign
			h.result <- handoffResult{err: errors.New(why)}
		}
	}
	var h *handoff
	select {
	case h = <-a.assign:
	case <-readErr:
		gone("the accept stream broke while parked")
		return
	case <-reg.done:
		gone("the intercept has ended")
		return
	case <-ctx.Done():
		gone("the router is stopping")
		return
	}
	// Stop the watcher; it must report our own deadline, or the stream broke meanwhile.
	_ = c.SetReadDeadline(time.Unix(1, 0))
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		h.result <- handoffResult{err: errors.New("the accept stream broke while parked")}
		return
	}
	// A live session answers at once (it connects to its local process and confirms); one that
	// does not within AcceptWait is frozen or gone, and the request goes to the real pods.
	deadline := time.Now().Add(rs.cfg.acceptWait())
	if d, ok := h.ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(h.ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	var ack tunnel.Response
	err := tunnel.WriteFrame(c, &tunnel.Response{OK: true, Port: h.port})
	if err == nil {
		err = tunnel.ReadFrame(c, &ack)
	}
	if !stop() {
		err = h.ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Not a broken stream to retry on another: the session does not answer.
		h.result <- handoffResult{refused: true, err: fmt.Errorf("%s's session did not take the connection within %v", ownerName(reg.owner), rs.cfg.acceptWait())}
		return
	}
	if err != nil {
		h.result <- handoffResult{err: fmt.Errorf("handing the connection to %s's session: %w", ownerName(reg.owner), err)}
		return
	}
	if !ack.OK {
		h.result <- handoffResult{refused: true, err: fmt.Errorf("%s's session cannot reach its local process: %s", ownerName(reg.owner), ack.Error)}
		return
	}
	_ = c.SetDeadline(time.Time{})
	hc := &handedConn{Conn: c, closed: make(chan struct{})}
	h.result <- handoffResult{conn: hc}
	select {
	case <-hc.closed:
	case <-ctx.Done():
	}
}

// handedConn is an accept stream handed to the router as an upstream connection; the stream's
// handler waits for its Close.
type handedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (h *handedConn) Close() error {
	err := h.Conn.Close()
	h.once.Do(func() { close(h.closed) })
	return err
}

func (h *handedConn) CloseWrite() error {
	if cw, ok := h.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("podshim: stream does not support half-close")
}

// serveInterceptList answers with the router's registrations.
func (s *Server) serveInterceptList(c net.Conn) {
	rs := s.routerFor(c)
	if rs == nil {
		return
	}
	s.reply(c, &tunnel.Response{OK: true, Intercepts: rs.status().Intercepts})
}

// serveInterceptRetire retires the router if no intercept is left (Response.OK) or says it is in
// use (CodeConflict); a session that ended its own intercept asks, so that the last one out
// gives the Service back at once instead of after the router's grace.
func (s *Server) serveInterceptRetire(c net.Conn) {
	if s.routerFor(c) == nil {
		return
	}
	if !s.RetireRouter() {
		s.reply(c, fail(tunnel.CodeConflict, "other intercepts are still registered"))
		return
	}
	s.reply(c, &tunnel.Response{OK: true})
}
