package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/miekg/dns"
)

// errStreamClosed is reported to queries outstanding on a DNS stream that broke.
var errStreamClosed = errors.New("tunnel: dns stream closed")

// dnsStream is one shared OpDNS stream with ID-multiplexed queries.
type dnsStream struct {
	conn net.Conn
	wmu  sync.Mutex // serialises writes

	mu      sync.Mutex
	pending map[uint16]chan *dns.Msg
	next    uint16
	err     error         // set once, before done is closed
	done    chan struct{} // closed when the stream broke
}

// WriteDNSMsg writes one DNS message in TCP framing (2-byte big-endian length).
func WriteDNSMsg(w io.Writer, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return fmt.Errorf("tunnel: packing dns message: %w", err)
	}
	return writeDNSRaw(w, b)
}

func writeDNSRaw(w io.Writer, b []byte) error {
	if len(b) > dns.MaxMsgSize {
		return errors.New("tunnel: dns message too large")
	}
	buf := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(buf, uint16(len(b)))
	copy(buf[2:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("tunnel: writing dns message: %w", err)
	}
	return nil
}

// ReadDNSMsg reads one DNS message in TCP framing. An error wrapping
// *DNSUnpackError means the framing was intact but the message malformed; the
// stream may still be used.
func ReadDNSMsg(r io.Reader) (*dns.Msg, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("tunnel: reading dns length: %w", err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("tunnel: reading dns message: %w", err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf); err != nil {
		return nil, &DNSUnpackError{Raw: buf, Err: err}
	}
	return m, nil
}

// DNSUnpackError reports a correctly framed but unparsable DNS message.
type DNSUnpackError struct {
	// Raw is the message as received.
	Raw []byte
	// Err is the parse error.
	Err error
}

// Error implements the error interface.
func (e *DNSUnpackError) Error() string { return "tunnel: unpacking dns message: " + e.Err.Error() }

// Unwrap returns the parse error.
func (e *DNSUnpackError) Unwrap() error { return e.Err }

func (s *dnsStream) readLoop() {
	var err error
	for {
		var m *dns.Msg
		m, err = ReadDNSMsg(s.conn)
		if err != nil {
			var ue *DNSUnpackError
			if errors.As(err, &ue) {
				// An answer miekg/dns cannot read (it packs some truncated records it then refuses):
				// its caller gets SERVFAIL now rather than a time-out.
				if len(ue.Raw) < 2 {
					continue
				}
				m = new(dns.Msg)
				m.Id = binary.BigEndian.Uint16(ue.Raw)
				m.Response, m.Rcode = true, dns.RcodeServerFailure
			} else {
				break
			}
		}
		s.mu.Lock()
		ch, ok := s.pending[m.Id]
		delete(s.pending, m.Id)
		s.mu.Unlock()
		if ok {
			ch <- m // buffered, never blocks
		}
	}
	s.fail(err)
}

// fail marks the stream broken and closes it; the first error wins.
func (s *dnsStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = err
	close(s.done)
	s.conn.Close()
}

// register reserves an unused wire ID for a query.
func (s *dnsStream) register() (uint16, chan *dns.Msg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, nil, s.err
	}
	if len(s.pending) >= 1<<16 {
		return 0, nil, errors.New("tunnel: too many outstanding dns queries")
	}
	for {
		s.next++
		if _, busy := s.pending[s.next]; !busy {
			break
		}
	}
	ch := make(chan *dns.Msg, 1)
	s.pending[s.next] = ch
	return s.next, ch, nil
}

func (s *dnsStream) unregister(id uint16) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// dnsStream returns the shared DNS stream, opening it if there is none or the
// previous one broke.
func (c *Client) dnsStream(ctx context.Context) (*dnsStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.dns; s != nil {
		select {
		case <-s.done:
		default:
			return s, nil
		}
	}
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpDNS})
	if err != nil {
		return nil, err
	}
	s := &dnsStream{conn: conn, pending: make(map[uint16]chan *dns.Msg), done: make(chan struct{})}
	go s.readLoop()
	c.dns = s
	return s, nil
}

// Exchange sends the DNS query m through the pod's resolver and returns the answer,
// with the caller's message ID. Queries share one lazily opened DNS stream and may
// run concurrently; the stream is reopened if it broke. If ctx has no deadline,
// [DefaultExchangeTimeout] applies. m is not modified.
func (c *Client) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultExchangeTimeout)
		defer cancel()
	}
	// One retry covers a shared stream that broke while idle (for example because
	// the pod restarted); a fresh stream is not retried.
	for attempt := 0; ; attempt++ {
		s, err := c.dnsStream(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := s.exchange(ctx, m)
		if err == nil || attempt > 0 || ctx.Err() != nil || !errors.Is(err, errStreamClosed) {
			return resp, err
		}
	}
}

func (s *dnsStream) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	id, ch, err := s.register()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStreamClosed, err)
	}
	q := m.Copy()
	q.Id = id
	b, err := q.Pack()
	if err != nil {
		s.unregister(id)
		return nil, fmt.Errorf("tunnel: packing dns query: %w", err)
	}
	s.wmu.Lock()
	err = writeDNSRaw(s.conn, b)
	s.wmu.Unlock()
	if err != nil {
		s.unregister(id)
		s.fail(err)
		return nil, fmt.Errorf("%w: %w", errStreamClosed, err)
	}
	select {
	case resp := <-ch:
		resp.Id = m.Id
		return resp, nil
	case <-s.done:
		s.unregister(id)
		return nil, fmt.Errorf("%w: %w", errStreamClosed, s.err)
	case <-ctx.Done():
		s.unregister(id)
		return nil, fmt.Errorf("tunnel: dns exchange: %w", ctx.Err())
	}
}
