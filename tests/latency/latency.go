// Package latency is a TCP proxy for tests and benchmarks that adds a fixed delay to every chunk of
// data in each direction (simulating round-trip time where the kernel has no netem), optionally
// caps the bytes in flight per direction at a TCP window (so a long link has the bandwidth-delay
// limit a real TCP connection has: at most Window bytes per round trip), can cut all of its
// connections at once (simulating a dropped network path) and refuse new ones for a while (a
// network that is gone).
//
// It leaves out bandwidth shaping, congestion control, jitter and packet loss. It listens on
// 127.0.0.1 only.
package latency

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections accepted on Addr to Target. The zero Delay forwards at once.
type Proxy struct {
	// Target is the host:port connections are forwarded to.
	Target string
	// Delay is added to each direction, so the added round-trip time is 2×Delay.
	Delay time.Duration
	// Window, when positive, is the most bytes one direction may have unacknowledged: a chunk holds
	// its bytes from the moment it is read until a round trip (2×Delay) later, when a real sender
	// would have its acknowledgement. Zero means no limit (the proxy buffers whatever arrives).
	Window int
	// Dial, when set, opens the connection to the server for a client instead of dialling
	// Target (for example to the address a client was redirected from).
	Dial func(client net.Conn) (net.Conn, error)

	ln    net.Listener
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on a random loopback port and serves until Close.
func (p *Proxy) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.ln = ln
	p.conns = map[net.Conn]struct{}{}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.handle(c) }()
		}
	}()
	return nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) handle(client net.Conn) {
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		client.Close()
		return
	}
	var server net.Conn
	var err error
	if p.Dial != nil {
		server, err = p.Dial(client)
	} else {
		server, err = net.Dial("tcp", p.Target)
	}
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		p.track(client, false)
		p.track(server, false)
		client.Close()
		server.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done
}

// pipe copies src to dst, delivering each chunk Delay after it was read, in order.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	if p.Delay == 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	type chunk struct {
		b  []byte
		at time.Time
	}
	w := newWindow(p.Window)
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			n := w.acquire(64 << 10)
			buf := make([]byte, n)
			m, err := src.Read(buf)
			w.release(n - m)
			if m > 0 {
				q <- chunk{buf[:m], time.Now().Add(p.Delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			return
		}
		// The acknowledgement of this chunk reaches the sender one more Delay later.
		time.AfterFunc(time.Until(c.at.Add(p.Delay)), func() { w.release(len(c.b)) })
	}
}

// window counts the bytes a direction may still send; a nil *window never blocks.
type window struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int
}

func newWindow(size int) *window {
	if size <= 0 {
		return nil
	}
	w := &window{free: size}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// acquire waits until some bytes are free and takes up to max of them.
func (w *window) acquire(max int) int {
	if w == nil {
		return max
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.free == 0 {
		w.cond.Wait()
	}
	n := min(max, w.free)
	w.free -= n
	return n
}

func (w *window) release(n int) {
	if w == nil || n == 0 {
		return
	}
	w.mu.Lock()
	w.free += n
	w.mu.Unlock()
	w.cond.Broadcast()
}

// Cut closes every open connection (new ones are still accepted).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// SetDown takes the path away (true: every connection is cut and new ones are closed at once, as
// when the network is gone) or brings it back (false).
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// Close stops accepting, cuts every connection and waits for the handlers.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}
