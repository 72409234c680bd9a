package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Reverse forwarding ([OpExpose] and [OpAccept]) carries connections made inside the
// cluster to the laptop, although only the laptop can open streams:
//
//   - An expose stream asks the server to listen on [Request.Ports] on the pod's
//     addresses. After the OK response nothing more is sent either way; the ports stay
//     exposed until the client closes the stream (or the server stops). Exposing an
//     already exposed port again is allowed; a listener closes when the last expose
//     stream naming it closes.
//   - An accept stream gets an OK response at once and is then parked by the server.
//     When an inbound connection reaches an exposed port, the server hands it to the
//     oldest parked accept stream: it sends a second response with OK, [Response.Port]
//     and [Response.Peer], and from then on the stream carries that connection's bytes,
//     with half-close propagated. An inbound connection that finds no parked stream
//     waits up to [AcceptWait] for one and is then reset.
//   - A client that cannot reach its local destination closes the accept stream
//     without sending a byte; the server then resets the inbound connection, so the
//     in-cluster client sees a refused connection rather than a hang. (So a local
//     server that closes a connection without ever writing to it also looks like a
//     reset to the in-cluster client.)
//
// The constants below bound the protocol.
const (
	// MaxExposePorts is the largest number of distinct ports one [OpExpose] request
	// may name.
	MaxExposePorts = 64
	// AcceptWait is how long an inbound connection to an exposed port waits in the
	// server for a parked accept stream before it is reset.
	AcceptWait = 10 * time.Second
)

// Expose asks the server to listen on ports (1 to 65535, at most [MaxExposePorts]
// distinct ones) on all the pod's addresses. ctx bounds only the request; the ports
// stay exposed until the returned Closer is closed or the stream breaks. The Closer
// also has a method Done() <-chan struct{}, closed once the stream has ended for
// either reason. Failures reported by the server (a port that is out of range, busy,
// or privileged) are *RemoteError values.
func (c *Client) Expose(ctx context.Context, ports []int) (io.Closer, error) {
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpExpose, Ports: ports})
	if err != nil {
		return nil, err
	}
	e := &exposeStream{conn: conn, done: make(chan struct{})}
	go e.watch()
	return e, nil
}

// exposeStream is the client end of an expose stream.
type exposeStream struct {
	conn net.Conn
	done chan struct{}
	once sync.Once
}

// watch reads the stream until it ends; the server sends nothing after the response,
// so any read result means the stream is gone.
func (e *exposeStream) watch() {
	_, _ = io.Copy(io.Discard, e.conn)
	e.conn.Close()
	close(e.done)
}

// Done returns a channel closed once the stream has ended.
func (e *exposeStream) Done() <-chan struct{} { return e.done }

// Close closes the stream, which unexposes its ports.
func (e *exposeStream) Close() error {
	var err error
	e.once.Do(func() { err = e.conn.Close() })
	return err
}

// Accept parks a stream in the server until an inbound connection reaches an exposed
// port, and returns that connection as conn, with the pod port it arrived on and the
// in-cluster peer's address ("ip:port", also conn.RemoteAddr when it parses). It
// blocks until then; cancelling ctx closes the stream and returns ctx's error.
//
// conn supports CloseWrite when the underlying stream does. To refuse the connection
// (nothing to forward it to), close conn without writing to it; the server resets
// the in-cluster side.
func (c *Client) Accept(ctx context.Context) (conn net.Conn, port int, peer string, err error) {
	stream, _, err := c.roundTrip(ctx, &Request{Op: OpAccept})
	if err != nil {
		return nil, 0, "", err
	}
	stop := context.AfterFunc(ctx, func() { stream.Close() })
	var resp Response
	err = ReadFrame(stream, &resp)
	if !stop() {
		stream.Close()
		return nil, 0, "", fmt.Errorf("tunnel: %s: %w", OpAccept, ctx.Err())
	}
	if err != nil {
		stream.Close()
		return nil, 0, "", fmt.Errorf("tunnel: %s: %w", OpAccept, err)
	}
	if !resp.OK {
		stream.Close()
		return nil, 0, "", responseError(&resp)
	}
	if resp.Port < 1 || resp.Port > 65535 {
		stream.Close()
		return nil, 0, "", fmt.Errorf("tunnel: %s: server named invalid port %d", OpAccept, resp.Port)
	}
	var raddr net.Addr = &Addr{Net: "tcp", HostPort: resp.Peer}
	if ap, err := tcpAddrOf(resp.Peer); err == nil {
		raddr = ap
	}
	return &streamConn{Conn: stream, raddr: raddr}, resp.Port, resp.Peer, nil
}

// ValidatePorts checks ports for an [OpExpose] request and returns them without
// duplicates, in their first-seen order.
func ValidatePorts(ports []int) ([]int, error) {
	if len(ports) == 0 {
		return nil, errors.New("no ports")
	}
	seen := make(map[int]bool, len(ports))
	out := make([]int, 0, len(ports))
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range 1-65535", p)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) > MaxExposePorts {
		return nil, fmt.Errorf("%d ports, at most %d may be exposed", len(out), MaxExposePorts)
	}
	return out, nil
}
