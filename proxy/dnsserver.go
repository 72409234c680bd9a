package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/miekg/dns"
)

// exchangeTimeout bounds one forwarded query.
const exchangeTimeout = 5 * time.Second

// Exchanger answers DNS queries.
type Exchanger interface {
	// Exchange sends query m and returns the answer. It must not modify m and
	// should honour ctx's deadline.
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// DNS is a DNS server that forwards every query through Exchanger and answers
// SERVFAIL when that fails. UDP answers are truncated to the client's EDNS0 buffer
// size (512 bytes without EDNS0) with the TC bit set. The zero value needs
// Exchanger set.
type DNS struct {
	// Exchanger resolves the queries.
	Exchanger Exchanger
	// Logf logs diagnostics; nil means no logging.
	Logf logger.Logf

	mu     sync.Mutex
	closed bool
	stop   map[*context.CancelFunc]struct{} // one per running Serve, removed when it returns
}

// Serve answers queries on udp and tcp (either may be nil, not both) until ctx is
// done or Close is called, then returns nil. It returns an error if a server fails.
// It closes udp and tcp.
func (d *DNS) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	if udp == nil && tcp == nil {
		return errors.New("proxy: dns: no UDP or TCP socket")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		closeAll(udp, tcp)
		return nil
	}
	if d.stop == nil {
		d.stop = map[*context.CancelFunc]struct{}{}
	}
	key := &cancel
	d.stop[key] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.stop, key)
		d.mu.Unlock()
	}()

	type running struct {
		srv     *dns.Server
		started chan struct{}
		done    chan error
	}
	var servers []*running
	start := func(srv *dns.Server) {
		r := &running{srv: srv, started: make(chan struct{}), done: make(chan error, 1)}
		srv.Handler = dns.HandlerFunc(d.serveDNS)
		srv.NotifyStartedFunc = func() { close(r.started) }
		servers = append(servers, r)
		go func() { r.done <- srv.ActivateAndServe() }()
	}
	if udp != nil {
		start(&dns.Server{PacketConn: udp})
	}
	if tcp != nil {
		start(&dns.Server{Listener: tcp})
	}
	failed := make(chan error, len(servers))
	for _, r := range servers {
		go func() {
			select {
			case err := <-r.done:
				r.done <- err // keep it for the shutdown below
				failed <- err
			case <-ctx.Done():
			}
		}()
	}
	var result error
	select {
	case <-ctx.Done():
	case err := <-failed:
		result = fmt.Errorf("proxy: dns: %w", err)
	}
	cancel()
	for _, r := range servers {
		select {
		case <-r.started:
			_ = r.srv.Shutdown()
		case err := <-r.done:
			r.done <- err
		}
	}
	for _, r := range servers {
		<-r.done
	}
	closeAll(udp, tcp)
	return result
}

func closeAll(udp net.PacketConn, tcp net.Listener) {
	if udp != nil {
		udp.Close()
	}
	if tcp != nil {
		tcp.Close()
	}
}

// Close stops every Serve call.
func (d *DNS) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for c := range d.stop {
		(*c)()
	}
	return nil
}

func (d *DNS) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
	defer cancel()
	resp, err := d.Exchanger.Exchange(ctx, r)
	if err != nil {
		logf(d.Logf, "dns: %v: %v", r.Question, err)
		resp = new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
	}
	resp.Id = r.Id
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		logf(d.Logf, "dns: writing answer: %v", err)
	}
}
