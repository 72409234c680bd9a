// Package tunnel defines the wire protocol spoken between kubectl-tp on the laptop and
// podshim in the cluster, and implements its client side.
//
// Every proxied connection travels over its own byte stream: a stream multiplexed on one
// carrier (see [Mux]), itself one Kubernetes port-forward stream. A stream starts with one
// request frame from the client (a 4-byte big-endian length followed by JSON, at most
// [MaxFrameSize] bytes) and one response frame from the server; what follows depends on the
// operation:
//
//   - [OpHello]: the server reports its version and resolver configuration, then the
//     stream becomes a heartbeat channel carrying [OpPing] frames and their responses.
//   - [OpDial]: the server dials a TCP address; after a successful response the stream
//     carries the raw bytes of that connection, with half-close propagated.
//   - [OpDNS]: the stream carries DNS messages in TCP framing (2-byte length prefix);
//     several queries may be outstanding and answers may arrive in any order.
//   - [OpEnv]: the response carries the server's process environment.
//   - [OpFiles]: after the response the stream carries a tar of the requested directories.
//   - [OpExpose]: the server listens on pod ports while the stream stays open.
//   - [OpAccept]: the stream waits in the server until an inbound connection reaches an
//     exposed port, then a second response names the port and the stream carries it.
//   - [OpIntercept], [OpInterceptAccept], [OpInterceptList]: personal intercepts, spoken with
//     a podshim in router mode: a registration stream that lives as long as the intercept,
//     accept streams bound to a registration, and a listing (see [Client.Intercept]).
//   - [OpMux]: the stream becomes a carrier of many streams (yamux, laptop as client), each of
//     which starts with its own request frame as above; see [Mux].
//
// The package holds the frame helpers, the [Request] and [Response] types, the error
// codes and [Client]. It leaves out the server (package podshim), the transport that
// opens streams (the caller supplies [Client.Open]), reconnection policy, and version
// compatibility decisions (the caller compares [HelloInfo.Version]). It imports
// nothing from k8s.io.
package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxFrameSize is the largest JSON payload a frame may carry, in bytes.
const MaxFrameSize = 64 << 10

// ErrFrameTooLarge is returned by [ReadFrame] and [WriteFrame] for a frame whose
// payload exceeds [MaxFrameSize].
var ErrFrameTooLarge = errors.New("tunnel: frame larger than 64 KiB")

// Operations carried in [Request.Op].
const (
	// OpHello asks for the server's identity and opens a heartbeat channel.
	OpHello = "hello"
	// OpPing is a heartbeat sent on a hello stream after the hello exchange.
	OpPing = "ping"
	// OpDial asks the server to open a TCP connection to [Request.Addr].
	OpDial = "dial"
	// OpDNS turns the stream into a channel of DNS queries and answers.
	OpDNS = "dns"
	// OpEnv asks for podshim's own process environment (what the kubelet computed) in [Response.Env].
	OpEnv = "env"
	// OpFiles asks for the contents of the directories in [Request.Paths]; after the response the
	// stream carries them as a tar archive (see package volumes).
	OpFiles = "files"
	// OpExpose asks the server to listen on [Request.Ports] on the pod's addresses; the stream stays
	// open as long as the ports should stay exposed.
	OpExpose = "expose"
	// OpAccept parks the stream until an inbound connection reaches an exposed port; the server
	// then sends a response naming [Response.Port] and the stream carries that connection.
	OpAccept = "accept"
	// OpMux turns the stream into a yamux carrier of further streams (see [Mux]).
	OpMux = "mux"
	// OpDirect registers the client's certificate for the direct path (see [Client.Direct]) and
	// returns the server's certificate and direct port.
	OpDirect = "direct"
)

// Error codes carried in [Response.Code]. The empty string means success.
const (
	// CodeRefused means the destination actively refused the connection.
	CodeRefused = "refused"
	// CodeUnreachable means there was no route to the destination network or host.
	CodeUnreachable = "unreachable"
	// CodeNXDomain means the destination host name does not exist.
	CodeNXDomain = "nxdomain"
	// CodeTimeout means the operation timed out in the pod.
	CodeTimeout = "timeout"
	// CodeAuth means the request's token was wrong.
	CodeAuth = "auth"
	// CodeBadRequest means the request was malformed or unsupported.
	CodeBadRequest = "bad-request"
	// CodeError is any other failure.
	CodeError = "error"
)

// Request is the first frame of every stream, sent by the client, and also the
// frame type of heartbeat pings.
type Request struct {
	// Op is one of the Op constants (OpPing only on a hello stream after its response).
	Op string `json:"op"`
	// Token is the per-session secret shared by client and server.
	Token string `json:"token,omitempty"`
	// Version is the client's build version, for diagnostics.
	Version string `json:"version,omitempty"`
	// Network is the network to dial for OpDial; only "tcp" is supported.
	Network string `json:"network,omitempty"`
	// Addr is the "host:port" to dial for OpDial.
	Addr string `json:"addr,omitempty"`
	// Paths are the directories to send for OpFiles (the volume mount paths).
	Paths []string `json:"paths,omitempty"`
	// MaxBytes bounds the bytes of one path sent for OpFiles; 0 means the server's default.
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// Ports are the pod ports to listen on for OpExpose.
	Ports []int `json:"ports,omitempty"`
	// Cert is the client's DER certificate for OpDirect.
	Cert []byte `json:"cert,omitempty"`
	// Headers are the "NAME=VALUE" header equalities of an OpIntercept registration.
	Headers []string `json:"headers,omitempty"`
	// Owner names who registers an OpIntercept (user@host), for clash errors and status.
	Owner string `json:"owner,omitempty"`
	// Started is when the registering session began (OpIntercept).
	Started time.Time `json:"started,omitzero"`
	// Intercept is a registration's key: the one an OpInterceptAccept stream serves, or the
	// registration an OpIntercept replaces.
	Intercept string `json:"intercept,omitempty"`
}

// Response is the server's answer to a [Request].
type Response struct {
	// OK reports success.
	OK bool `json:"ok"`
	// Code classifies a failure; empty on success.
	Code string `json:"code,omitempty"`
	// Error is a human-readable failure description.
	Error string `json:"error,omitempty"`
	// Version is the server's build version (OpHello).
	Version string `json:"version,omitempty"`
	// Hostname is the pod's host name (OpHello).
	Hostname string `json:"hostname,omitempty"`
	// Nameservers are the pod's resolv.conf nameservers (OpHello).
	Nameservers []string `json:"nameservers,omitempty"`
	// Search is the pod's resolv.conf search list (OpHello).
	Search []string `json:"search,omitempty"`
	// Ndots is the pod's resolv.conf ndots option (OpHello).
	Ndots int `json:"ndots,omitempty"`
	// Env is podshim's process environment, "KEY=value" (OpEnv).
	Env []string `json:"env,omitempty"`
	// Port is the exposed pod port an accepted connection arrived on (OpAccept), or the direct
	// path's port (OpDirect).
	Port int `json:"port,omitempty"`
	// Cert is the server's DER certificate on the direct path (OpDirect).
	Cert []byte `json:"cert,omitempty"`
	// Peer is the address of the in-cluster client of an accepted connection (OpAccept).
	Peer string `json:"peer,omitempty"`
	// Intercept is the new registration's secret key (OpIntercept).
	Intercept string `json:"intercept,omitempty"`
	// PingMillis is the interval, in milliseconds, at which the client must ping a
	// registration stream (OpIntercept).
	PingMillis int64 `json:"pingMillis,omitempty"`
	// Intercepts are the router's registrations (OpInterceptList).
	Intercepts []InterceptInfo `json:"intercepts,omitempty"`
}

// WriteFrame encodes v as JSON and writes it to w as one length-prefixed frame.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("tunnel: encoding frame: %w", err)
	}
	if len(b) > MaxFrameSize {
		return ErrFrameTooLarge
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("tunnel: writing frame: %w", err)
	}
	return nil
}

// ReadFrame reads one length-prefixed frame from r and decodes its JSON into v.
// It reads exactly the frame's bytes, so r may carry other data afterwards.
// A frame larger than [MaxFrameSize] yields [ErrFrameTooLarge] without reading
// its payload.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("tunnel: reading frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return ErrFrameTooLarge
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("tunnel: reading frame payload: %w", err)
	}
	if err := json.Unmarshal(buf, v); err != nil {
		return fmt.Errorf("tunnel: decoding frame: %w", err)
	}
	return nil
}

// RemoteError is the error of every [Client] request that podshim answered with a failure: a
// dial ([Client.DialContext]), the environment, files, hello and expose requests. Transport
// failures (the tunnel itself broken) are other errors.
type RemoteError struct {
	// Code is one of the Code constants, e.g. CodeRefused.
	Code string
	// Msg is the server's description of the failure.
	Msg string
}

// Error implements the error interface.
func (e *RemoteError) Error() string {
	if e.Msg == "" {
		return "tunnel: " + e.Code
	}
	return fmt.Sprintf("tunnel: %s: %s", e.Code, e.Msg)
}

// responseError converts a failed Response into a *RemoteError.
func responseError(r *Response) error {
	code := r.Code
	if code == "" {
		code = CodeError
	}
	return &RemoteError{Code: code, Msg: r.Error}
}
