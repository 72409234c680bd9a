package capture

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
)

// SyntheticPrefix is where [Pool] takes addresses from by default: 198.19.0.0/16, the upper half
// of the benchmarking range (RFC 2544), which no LAN or VPN routes and which Clash-style
// fake-IP proxies (198.18.0.0/16) leave alone.
var SyntheticPrefix = netip.MustParsePrefix("198.19.0.0/16")

// ErrPoolExhausted is returned by [Pool.Addr] when every address of the prefix is in use.
var ErrPoolExhausted = errors.New("capture: no synthetic address left")

// Pool hands out one synthetic IPv4 address per cluster name and maps it back. Names are
// compared without case and with a trailing dot. Addresses are never reused within a session.
// The zero value uses [SyntheticPrefix]; it is safe for concurrent use.
type Pool struct {
	// Prefix is the range addresses come from (zero: SyntheticPrefix). IPv4 only.
	Prefix netip.Prefix

	mu     sync.Mutex
	next   netip.Addr
	byName map[string]netip.Addr
	byAddr map[netip.Addr]string
}

func (p *Pool) prefix() netip.Prefix {
	if p.Prefix.IsValid() {
		return p.Prefix.Masked()
	}
	return SyntheticPrefix
}

// Contains reports whether a is in the pool's range, handed out or not.
func (p *Pool) Contains(a netip.Addr) bool { return p.prefix().Contains(a.Unmap()) }

// Addr returns the address of name (a fully qualified cluster name), allocating one the first
// time. The network and broadcast-like first and last addresses are never handed out.
func (p *Pool) Addr(name string) (netip.Addr, error) {
	name = canonical(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.byName[name]; ok {
		return a, nil
	}
	pfx := p.prefix()
	if !p.next.IsValid() {
		p.next = pfx.Addr().Next()
		p.byName = map[string]netip.Addr{}
		p.byAddr = map[netip.Addr]string{}
	}
	a := p.next
	if !pfx.Contains(a.Next()) { // keep the last address of the range free
		return netip.Addr{}, ErrPoolExhausted
	}
	p.next = a.Next()
	p.byName[name] = a
	p.byAddr[a] = name
	return a, nil
}

// Name returns the name a was handed out for, and false when a was never handed out.
func (p *Pool) Name(a netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.byAddr[a.Unmap()]
	return n, ok
}

func canonical(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}
