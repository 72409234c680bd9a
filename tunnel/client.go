package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/version"
)

// DefaultExchangeTimeout bounds [Client.Exchange] when its context has no deadline.
const DefaultExchangeTimeout = 5 * time.Second

// Client is the laptop side of the tunnel protocol. Its zero value is not usable:
// Open must be set. A Client is safe for concurrent use; do not copy it after first use.
type Client struct {
	// Open returns a fresh byte stream to podshim. It is called once per DialContext,
	// Hello and Heartbeat, and whenever Exchange needs a new DNS stream.
	Open func(ctx context.Context) (net.Conn, error)
	// Token is the per-session secret sent with every request.
	Token string
	// Version is sent with every request; empty means internal/version.Version.
	Version string

	mu  sync.Mutex // guards dns
	dns *dnsStream
}

// HelloInfo is what the server reports in response to a hello.
type HelloInfo struct {
	// Version is podshim's build version.
	Version string
	// Hostname is the pod's host name.
	Hostname string
	// Nameservers are the nameservers from the pod's resolv.conf.
	Nameservers []string
	// Search is the search list from the pod's resolv.conf.
	Search []string
	// Ndots is the ndots option from the pod's resolv.conf.
	Ndots int
}

// Addr is the net.Addr of a tunnelled destination given by host name.
type Addr struct {
	// Net is the network, "tcp".
	Net string
	// HostPort is the destination as requested, "host:port".
	HostPort string
}

// Network implements net.Addr.
func (a *Addr) Network() string { return a.Net }

// String implements net.Addr.
func (a *Addr) String() string { return a.HostPort }

var _ net.Addr = (*Addr)(nil)

func (c *Client) version() string {
	if c.Version != "" {
		return c.Version
	}
	return version.Version
}

// roundTrip opens a stream, sends req and reads the response. On success it returns
// the open stream with no deadline set; on failure the stream is closed.
// ctx bounds only the open and the request/response exchange.
//
// A stream whose carrier turns out to be dead before any response arrived (see [Mux]) is tried
// once more on a fresh stream: a carrier that broke while idle is only noticed this way.
func (c *Client) roundTrip(ctx context.Context, req *Request) (net.Conn, *Response, error) {
	conn, resp, carrierFailed, err := c.roundTripOnce(ctx, req)
	if carrierFailed && ctx.Err() == nil {
		conn, resp, _, err = c.roundTripOnce(ctx, req)
	}
	return conn, resp, err
}

// carrierFailer is a stream that can tell whether the carrier it travels on has failed.
type carrierFailer interface{ CarrierFailed() bool }

func (c *Client) roundTripOnce(ctx context.Context, req *Request) (_ net.Conn, _ *Response, carrierFailed bool, _ error) {
	if c.Open == nil {
		return nil, nil, false, errors.New("tunnel: Client.Open is nil")
	}
	req.Token = c.Token
	req.Version = c.version()
	conn, err := c.Open(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("tunnel: opening stream for %s: %w", req.Op, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Unblock the handshake if ctx is cancelled; deadlines are cleared afterwards.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	resp, err := func() (*Response, error) {
		if err := WriteFrame(conn, req); err != nil {
			return nil, err
		}
		var resp Response
		if err := ReadFrame(conn, &resp); err != nil {
			return nil, err
		}
		return &resp, nil
	}()
	if !stop() || err != nil {
		conn.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, false, fmt.Errorf("tunnel: %s: %w", req.Op, ctxErr)
		}
		cf, ok := conn.(carrierFailer)
		return nil, nil, ok && cf.CarrierFailed(), fmt.Errorf("tunnel: %s: %w", req.Op, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if !resp.OK {
		conn.Close()
		return nil, resp, false, responseError(resp)
	}
	return conn, resp, false, nil
}

// DialContext connects to addr ("host:port") from inside the pod; host names are
// resolved by the pod. Only TCP is supported ("tcp", "tcp4" and "tcp6" are all sent
// as "tcp"). ctx bounds connection establishment only. Failures reported by the
// server are *RemoteError values.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &RemoteError{Code: CodeBadRequest, Msg: "unsupported network " + network}
	}
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpDial, Network: "tcp", Addr: addr})
	if err != nil {
		return nil, err
	}
	var raddr net.Addr = &Addr{Net: "tcp", HostPort: addr}
	if ap, err := tcpAddrOf(addr); err == nil {
		raddr = ap
	}
	return &streamConn{Conn: conn, raddr: raddr}, nil
}

func tcpAddrOf(addr string) (*net.TCPAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, errors.New("not an IP")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, err
	}
	return &net.TCPAddr{IP: ip, Port: int(p)}, nil
}

// streamConn is a dialled stream with the destination as its RemoteAddr. It forwards
// half-close to the underlying stream when that supports it.
type streamConn struct {
	net.Conn
	raddr net.Addr
}

func (s *streamConn) RemoteAddr() net.Addr { return s.raddr }

// ReadFrom lets io.Copy use the underlying stream's own way of copying (see muxStream.ReadFrom).
func (s *streamConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := s.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{s.Conn}, r)
}

// CloseWrite shuts down the writing side if the underlying stream supports it.
func (s *streamConn) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("tunnel: stream does not support half-close")
}

// CloseRead shuts down the reading side if the underlying stream supports it;
// otherwise it does nothing.
func (s *streamConn) CloseRead() error {
	if cr, ok := s.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return nil
}

// Hello asks the server for its version and resolver configuration.
func (c *Client) Hello(ctx context.Context) (*HelloInfo, error) {
	conn, resp, err := c.roundTrip(ctx, &Request{Op: OpHello})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return helloInfo(resp), nil
}

func helloInfo(r *Response) *HelloInfo {
	return &HelloInfo{Version: r.Version, Hostname: r.Hostname, Nameservers: r.Nameservers, Search: r.Search, Ndots: r.Ndots}
}

// Heartbeat opens a hello stream and sends a ping every interval, waiting for each
// answer, until ctx is done (it then returns ctx.Err()) or the stream fails (it
// returns that error). A ping unanswered within max(2*interval, 5s) is a failure.
// Reconnecting is up to the caller.
func (c *Client) Heartbeat(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("tunnel: heartbeat interval must be positive")
	}
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpHello})
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	wait := max(2*interval, 5*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		_ = conn.SetDeadline(time.Now().Add(wait))
		err := WriteFrame(conn, &Request{Op: OpPing})
		var resp Response
		if err == nil {
			err = ReadFrame(conn, &resp)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("tunnel: heartbeat: %w", err)
		}
		if !resp.OK {
			return fmt.Errorf("tunnel: heartbeat: %w", responseError(&resp))
		}
	}
}
