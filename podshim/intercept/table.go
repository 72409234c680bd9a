package intercept

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Dialer opens a connection to one upstream: an intercept's local process (the caller backs it
// with that session's tunnel) or the real pods (Router.Default). Each call must return a new,
// independent connection that carries bytes unchanged; ctx bounds the dial only, the connection
// must outlive it. A Dialer should fail when its target is gone (the router then sends the
// requests to Default) rather than return a connection that closes at once. Connections should support read deadlines
// (the router uses them to notice idle HTTP/1 upstreams that closed); where they do not, an idle
// upstream that closed is only noticed when a request fails on it.
type Dialer interface {
	DialContext(ctx context.Context) (net.Conn, error)
}

// DialerFunc adapts a function to the Dialer interface.
type DialerFunc func(ctx context.Context) (net.Conn, error)

// DialContext calls f(ctx).
func (f DialerFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }

// TCPDialer returns a Dialer that opens a TCP connection to addr (host:port), e.g. the headless
// shadow Service of the real pods. It does no retries and no load balancing beyond what the
// resolver returns.
func TCPDialer(addr string) Dialer {
	return DialerFunc(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
}

// Intercept is one developer's registration: requests that satisfy Match go to Dialer.
type Intercept struct {
	// ID identifies the intercept for Remove; unique within a Table (e.g. the session id).
	ID string
	// Owner names who holds it (user@host), for clash errors and status.
	Owner string
	// Started is when the session began, for clash errors and status.
	Started time.Time
	// Match selects the requests; empty means every connection (header-less intercept).
	Match Match
	// Dialer reaches the developer's local process.
	Dialer Dialer
}

// Table is the concurrent-safe registry of a Service's intercepts; its zero value is empty and
// ready to use. Changes take effect at once for every request that is routed afterwards, including
// the next request on a kept-alive connection or the next HTTP/2 stream.
//
// Choosing: the intercepts whose Match a request satisfies are tried in this order: more headers
// first (a more specific match wins over a less specific one), then earlier registration first.
// Two intercepts with identical header sets, or a header-less one next to any other, are refused
// by Add, so a request never has two equally specific candidates registered at the same time
// except for overlapping sets like {x-dev=a} and {x-team=b}, where the earlier one wins.
//
// It leaves out liveness: removing the intercept of a session that died is the caller's job.
type Table struct {
	mu      sync.RWMutex
	seq     uint64
	entries []*entry // in choosing order
}

// entry is a registered intercept with the router's state about it.
type entry struct {
	ic     Intercept
	seq    uint64
	ctx    context.Context // done when removed
	cancel context.CancelFunc
	down   atomic.Bool // last dial failed (for logging state changes only)
}

// Add registers ic. It refuses, with an error naming the fix: an empty ID or one already
// registered, a nil Dialer, an invalid header, a header set identical (in any order) to a
// registered one (naming its owner and start), a header-less intercept while any other exists,
// and any intercept while a header-less one exists.
func (t *Table) Add(ic Intercept) error {
	if ic.ID == "" {
		return errors.New("intercept has an empty ID: give each intercept a unique ID (e.g. the session id)")
	}
	if ic.Dialer == nil {
		return fmt.Errorf("intercept %q has no Dialer: give it the dialer of its session's tunnel", ic.ID)
	}
	if err := ic.Match.validate(); err != nil {
		return err
	}
	ic.Match = ic.Match.normalize()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.entries {
		if e.ic.ID == ic.ID {
			return fmt.Errorf("intercept %q is already registered (owner %s, started %s): remove it first or use another ID", ic.ID, owner(e.ic), started(e.ic))
		}
	}
	for _, e := range t.entries {
		switch {
		case len(e.ic.Match) == 0:
			return fmt.Errorf("%s intercepts every request of this service without headers (started %s), so no other intercept can share it: wait until that session ends, or ask its owner to use headers", owner(e.ic), started(e.ic))
		case len(ic.Match) == 0:
			return fmt.Errorf("an intercept without headers takes every request of the service, but %s already intercepts %s (started %s): intercept with headers (e.g. x-dev=yourname) or wait until that session ends", owner(e.ic), e.ic.Match, started(e.ic))
		case sameMatch(e.ic.Match, ic.Match):
			return fmt.Errorf("headers %s are already intercepted by %s (started %s): choose other headers, or wait until that session ends", ic.Match, owner(e.ic), started(e.ic))
		}
	}
	t.seq++
	e := &entry{ic: ic, seq: t.seq}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	t.entries = append(t.entries, e)
	sort.SliceStable(t.entries, func(i, j int) bool {
		a, b := t.entries[i], t.entries[j]
		if len(a.ic.Match) != len(b.ic.Match) {
			return len(a.ic.Match) > len(b.ic.Match)
		}
		return a.seq < b.seq
	})
	return nil
}

// Remove unregisters the intercept with this ID and reports whether it was registered. Requests
// routed afterwards no longer go to it, and the router closes the connections it holds to that
// intercept's upstream, ending requests and spliced streams (WebSocket, raw TCP) still in flight
// there.
func (t *Table) Remove(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, e := range t.entries {
		if e.ic.ID == id {
			t.entries = append(t.entries[:i:i], t.entries[i+1:]...)
			e.cancel()
			return true
		}
	}
	return false
}

// List returns the registered intercepts in choosing order, with normalized Matches.
func (t *Table) List() []Intercept {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Intercept, len(t.entries))
	for i, e := range t.entries {
		out[i] = e.ic
		out[i].Match = append(Match(nil), e.ic.Match...)
	}
	return out
}

// Choose returns the intercept that a request with these headers would go to, if any, by the
// order described on Table. Only r.Header and r.Host are looked at.
func (t *Table) Choose(r *http.Request) (Intercept, bool) {
	if e := t.choose(r.Header, r.Host); e != nil {
		return e.ic, true
	}
	return Intercept{}, false
}

func (t *Table) choose(hdr http.Header, host string) *entry {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, e := range t.entries {
		if e.ic.Match.matches(hdr, host) {
			return e
		}
	}
	return nil
}

// headerless returns the header-less intercept, if one is registered.
func (t *Table) headerless() *entry {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, e := range t.entries {
		if len(e.ic.Match) == 0 {
			return e
		}
	}
	return nil
}

func sameMatch(a, b Match) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func owner(ic Intercept) string {
	if ic.Owner == "" {
		return "intercept " + ic.ID
	}
	return ic.Owner
}

func started(ic Intercept) string {
	if ic.Started.IsZero() {
		return "at an unknown time"
	}
	return ic.Started.Format(time.RFC3339)
}
