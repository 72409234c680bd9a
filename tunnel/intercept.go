package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Personal intercepts ([OpIntercept], [OpInterceptAccept], [OpInterceptList]) are spoken with a
// router: a podshim started in router mode in front of a Service, shared by every session that
// intercepts that Service (each reaches it through its own tunnel to the router pod). The
// router sends the requests that carry a registration's headers to that registration's laptop;
// the others go to the real pods.
//
//   - A registration stream asks the router to intercept [Request.Ports] (target ports of the
//     Service, each one the router serves) for requests carrying every header of
//     [Request.Headers] ("NAME=VALUE"; none means every connection), naming
//     [Request.Owner] and [Request.Started] for clash errors and status. The response is OK
//     with [Response.Intercept], the registration's key (a secret: accept streams present it),
//     and [Response.PingMillis]; or a failure with a one-line [Response.Error]: CodeConflict
//     when the headers are already intercepted (the message names the owner and start),
//     CodeBadRequest for bad input. After the OK the client sends an [OpPing] request at least
//     every PingMillis and the router answers each with an OK response. The registration
//     ends at once when the stream closes or resets (the session ended, the carrier broke), and
//     when no ping arrived for [InterceptPingsMissed] times PingMillis (the laptop vanished
//     without closing). A registration request whose [Request.Intercept] names a live
//     registration replaces it (a client re-registering after its stream broke, before the
//     router noticed); the old key stops working.
//   - An intercept accept stream names a registration's key in [Request.Intercept]. It gets
//     an OK response at once (or a failure: unknown key) and is parked. When a request
//     matching the registration reaches one of its ports, the router sends a second response
//     with OK and [Response.Port], the target port it arrived on. The client then connects to
//     its local process and answers with one [Response] frame: OK, after which the stream
//     carries the connection's bytes with half-close; or a failure (e.g. CodeRefused, nothing
//     listens locally), after which the stream ends and the router sends the request to the
//     real pods. Parked streams end when their registration does.
//   - An intercept list stream gets [Response.Intercepts], the router's registrations (never
//     their keys), and ends.
const (
	// InterceptPingsMissed is how many ping intervals ([Response.PingMillis]) a registration
	// survives without a ping.
	InterceptPingsMissed = 3
	// MaxInterceptHeaders bounds the headers of one registration.
	MaxInterceptHeaders = 16
)

// Operations and codes of personal intercepts (see above).
const (
	// OpIntercept registers an intercept; the stream stays open for the registration's lifetime.
	OpIntercept = "intercept"
	// OpInterceptAccept parks a stream for connections matched by a registration.
	OpInterceptAccept = "intercept-accept"
	// OpInterceptList asks for the router's registrations.
	OpInterceptList = "intercept-list"
	// OpInterceptRetire asks the router to give its Service back now if no intercept is left
	// (an OK response), else it answers CodeConflict.
	OpInterceptRetire = "intercept-retire"
	// CodeConflict means the requested intercept clashes with another one.
	CodeConflict = "conflict"
	// CodeRetiring refuses a registration because the router is giving its Service back (no
	// intercept was left): the client starts a new router.
	CodeRetiring = "retiring"
)

// InterceptInfo describes one registration, as an [OpInterceptList] reports it.
type InterceptInfo struct {
	// ID is the registration's public name on the router (not its key).
	ID string `json:"id"`
	// Owner is who registered it, as the client said (user@host).
	Owner string `json:"owner,omitempty"`
	// Started is when the owner's session began, by the owner's clock.
	Started time.Time `json:"started,omitzero"`
	// Age is how long the registration has existed, by the router's clock.
	Age time.Duration `json:"age"`
	// Ports are the Service target ports it takes.
	Ports []int `json:"ports"`
	// Headers are the header equalities, "Name=value" in canonical form; empty means every
	// connection.
	Headers []string `json:"headers,omitempty"`
}

// InterceptSpec is what a registration asks for (see [Client.Intercept]).
type InterceptSpec struct {
	// Headers are "NAME=VALUE" equalities all of which a request must carry; empty means
	// every connection to the ports.
	Headers []string
	// Owner names who intercepts (user@host), shown to others in clash errors and status.
	Owner string
	// Started is when the session began.
	Started time.Time
	// Ports are the Service target ports to intercept; at least one, each served by the router.
	Ports []int
	// Replace is the key of the caller's own earlier registration that this one replaces
	// (after its stream broke); empty for a first registration.
	Replace string
}

// InterceptRegistration is the client end of a registration stream: it pings the router
// and ends when the stream does. See [Client.Intercept].
type InterceptRegistration struct {
	// Key is the registration's secret key, for [Client.AcceptIntercept] and
	// [InterceptSpec.Replace].
	Key string
	// Ping is the interval of the pings the registration sends.
	Ping time.Duration

	conn net.Conn
	done chan struct{}
	once sync.Once
	err  error // why the stream ended; set before done closes
}

// Intercept registers an intercept with the router (the protocol is described at
// [InterceptPingsMissed]). ctx bounds only the request; the
// registration lasts until it is closed or its stream breaks (see Done). A refusal by the router
// is a *RemoteError whose Msg is the router's one-line explanation (Code CodeConflict for a
// clash, naming the owner of the registration it clashes with and its start).
func (c *Client) Intercept(ctx context.Context, spec *InterceptSpec) (*InterceptRegistration, error) {
	conn, resp, err := c.roundTrip(ctx, &Request{
		Op: OpIntercept, Headers: spec.Headers, Owner: spec.Owner, Started: spec.Started,
		Ports: spec.Ports, Intercept: spec.Replace,
	})
	if err != nil {
		return nil, err
	}
	if resp.Intercept == "" || resp.PingMillis <= 0 {
		conn.Close()
		return nil, fmt.Errorf("tunnel: %s: the router sent no key or ping interval", OpIntercept)
	}
	r := &InterceptRegistration{
		Key: resp.Intercept, Ping: time.Duration(resp.PingMillis) * time.Millisecond,
		conn: conn, done: make(chan struct{}),
	}
	go r.pinger()
	return r, nil
}

// pinger pings every r.Ping, while a reader takes the answers: the registration ends as soon as
// the stream does, or when no answer came for InterceptPingsMissed pings.
func (r *InterceptRegistration) pinger() {
	wait := InterceptPingsMissed * r.Ping
	var lastAnswer atomic.Int64
	lastAnswer.Store(time.Now().UnixNano())
	go func() {
		for {
			var resp Response
			err := ReadFrame(r.conn, &resp)
			if err == nil && !resp.OK {
				err = responseError(&resp)
			}
			if err != nil {
				r.end(fmt.Errorf("tunnel: intercept registration: %w", err))
				return
			}
			lastAnswer.Store(time.Now().UnixNano())
		}
	}()
	t := time.NewTicker(r.Ping)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, lastAnswer.Load())) > wait {
			r.end(fmt.Errorf("tunnel: intercept registration: the router did not answer pings for %v", wait))
			return
		}
		_ = r.conn.SetWriteDeadline(time.Now().Add(wait))
		if err := WriteFrame(r.conn, &Request{Op: OpPing}); err != nil {
			r.end(fmt.Errorf("tunnel: intercept registration: %w", err))
			return
		}
	}
}

func (r *InterceptRegistration) end(err error) {
	r.once.Do(func() {
		r.err = err
		r.conn.Close()
		close(r.done)
	})
}

// Done returns a channel closed once the registration has ended (closed, or its stream broke).
func (r *InterceptRegistration) Done() <-chan struct{} { return r.done }

// Err returns why the registration ended, or nil while it lasts.
func (r *InterceptRegistration) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Close ends the registration: the router removes it at once.
func (r *InterceptRegistration) Close() error {
	r.end(errors.New("tunnel: intercept registration closed"))
	return nil
}

// InterceptHandoff is a connection the router handed to a parked intercept accept stream. The
// receiver must call exactly one of Confirm and Refuse.
type InterceptHandoff struct {
	// Port is the Service target port the connection arrived on.
	Port int

	stream net.Conn
}

// Confirm tells the router the local destination is connected and returns the stream, which
// from then on carries the connection (CloseWrite supported when the stream supports it).
func (h *InterceptHandoff) Confirm() (net.Conn, error) {
	_ = h.stream.SetWriteDeadline(time.Now().Add(DefaultExchangeTimeout))
	if err := WriteFrame(h.stream, &Response{OK: true}); err != nil {
		h.stream.Close()
		return nil, fmt.Errorf("tunnel: %s: %w", OpInterceptAccept, err)
	}
	_ = h.stream.SetWriteDeadline(time.Time{})
	return &streamConn{Conn: h.stream, raddr: h.stream.RemoteAddr()}, nil
}

// Refuse tells the router the local destination cannot be reached (code is one of the Code
// constants, msg a one-line reason) and closes the stream; the router sends the connection's
// requests to the real pods instead.
func (h *InterceptHandoff) Refuse(code, msg string) {
	_ = h.stream.SetWriteDeadline(time.Now().Add(DefaultExchangeTimeout))
	_ = WriteFrame(h.stream, &Response{Code: code, Error: msg})
	h.stream.Close()
}

// AcceptIntercept parks a stream in the router for connections matched by the registration
// with this key, and returns the first one handed to it. It blocks until then; cancelling ctx
// closes the stream and returns ctx's error; the registration ending ends the stream (an
// error). An unknown key is a *RemoteError.
func (c *Client) AcceptIntercept(ctx context.Context, key string) (*InterceptHandoff, error) {
	stream, _, err := c.roundTrip(ctx, &Request{Op: OpInterceptAccept, Intercept: key})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { stream.Close() })
	var resp Response
	err = ReadFrame(stream, &resp)
	if !stop() {
		stream.Close()
		return nil, fmt.Errorf("tunnel: %s: %w", OpInterceptAccept, ctx.Err())
	}
	switch {
	case errors.Is(err, io.EOF):
		stream.Close()
		return nil, fmt.Errorf("tunnel: %s: the router ended the stream (registration gone?)", OpInterceptAccept)
	case err != nil:
		stream.Close()
		return nil, fmt.Errorf("tunnel: %s: %w", OpInterceptAccept, err)
	case !resp.OK:
		stream.Close()
		return nil, responseError(&resp)
	case resp.Port < 1 || resp.Port > 65535:
		stream.Close()
		return nil, fmt.Errorf("tunnel: %s: router named invalid port %d", OpInterceptAccept, resp.Port)
	}
	return &InterceptHandoff{Port: resp.Port, stream: stream}, nil
}

// Intercepts lists the router's registrations.
func (c *Client) Intercepts(ctx context.Context) ([]InterceptInfo, error) {
	conn, resp, err := c.roundTrip(ctx, &Request{Op: OpInterceptList})
	if err != nil {
		return nil, err
	}
	conn.Close()
	return resp.Intercepts, nil
}

// RetireRouter asks the router to give its Service back now; retired is false when other
// intercepts are still registered.
func (c *Client) RetireRouter(ctx context.Context) (retired bool, err error) {
	conn, _, err := c.roundTrip(ctx, &Request{Op: OpInterceptRetire})
	if conn != nil {
		conn.Close()
	}
	var re *RemoteError
	if errors.As(err, &re) && re.Code == CodeConflict {
		return false, nil
	}
	return err == nil, err
}
