package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestFrames(t *testing.T) {
	big := strings.Repeat("x", MaxFrameSize)
	tests := []struct {
		name    string
		raw     func() []byte
		wantErr error // nil: must decode to want
		want    Request
	}{
		{
			name: "round trip",
			raw: func() []byte {
				var b bytes.Buffer
				if err := WriteFrame(&b, &Request{Op: OpDial, Token: "t", Network: "tcp", Addr: "svc.ns:80"}); err != nil {
					t.Fatal(err)
				}
				return b.Bytes()
			},
			want: Request{Op: OpDial, Token: "t", Network: "tcp", Addr: "svc.ns:80"},
		},
		{
			name: "oversized length",
			raw: func() []byte {
				b := make([]byte, 4)
				binary.BigEndian.PutUint32(b, MaxFrameSize+1)
				return b
			},
			wantErr: ErrFrameTooLarge,
		},
		{
			name:    "truncated payload",
			raw:     func() []byte { return []byte{0, 0, 0, 10, '{'} },
			wantErr: errAny,
		},
		{
			name:    "not json",
			raw:     func() []byte { return []byte{0, 0, 0, 3, 'a', 'b', 'c'} },
			wantErr: errAny,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Request
			err := ReadFrame(bytes.NewReader(tt.raw()), &got)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ReadFrame: %v", err)
			case tt.wantErr == nil && !reflect.DeepEqual(got, tt.want):
				t.Fatalf("ReadFrame = %+v, want %+v", got, tt.want)
			case tt.wantErr == errAny && err == nil:
				t.Fatal("ReadFrame succeeded, want an error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("ReadFrame error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("write oversized", func(t *testing.T) {
		var b bytes.Buffer
		if err := WriteFrame(&b, &Request{Addr: big}); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("WriteFrame = %v, want ErrFrameTooLarge", err)
		}
		if b.Len() != 0 {
			t.Fatalf("WriteFrame wrote %d bytes of an oversized frame", b.Len())
		}
	})
}

var errAny = errors.New("any error")

// pipeClient returns a Client whose streams are net.Pipes answered with resp, and
// a channel receiving each request the fake server got.
func pipeClient(t *testing.T, resp Response) (*Client, <-chan Request) {
	got := make(chan Request, 1)
	return &Client{
		Token: "tok",
		Open: func(ctx context.Context) (net.Conn, error) {
			c, s := net.Pipe()
			go func() {
				defer s.Close()
				var req Request
				if err := ReadFrame(s, &req); err != nil {
					return
				}
				got <- req
				WriteFrame(s, &resp)
			}()
			return c, nil
		},
	}, got
}

func TestClientDialContext(t *testing.T) {
	tests := []struct {
		name     string
		network  string
		addr     string
		resp     Response
		wantCode string
		wantAddr string
	}{
		{"host name", "tcp", "svc.ns:80", Response{OK: true}, "", "svc.ns:80"},
		{"ip", "tcp4", "127.0.0.1:8080", Response{OK: true}, "", "127.0.0.1:8080"},
		{"refused", "tcp", "svc.ns:80", Response{Code: CodeRefused, Error: "connection refused"}, CodeRefused, ""},
		{"missing code", "tcp", "svc.ns:80", Response{}, CodeError, ""},
		{"udp unsupported", "udp", "svc.ns:53", Response{OK: true}, CodeBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, got := pipeClient(t, tt.resp)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := c.DialContext(ctx, tt.network, tt.addr)
			if tt.wantCode != "" {
				var de *RemoteError
				if !errors.As(err, &de) || de.Code != tt.wantCode {
					t.Fatalf("DialContext error = %v, want code %q", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if conn.RemoteAddr().String() != tt.wantAddr {
				t.Errorf("RemoteAddr = %v, want %s", conn.RemoteAddr(), tt.wantAddr)
			}
			req := <-got
			if req.Op != OpDial || req.Token != "tok" || req.Network != "tcp" || req.Addr != tt.addr || req.Version == "" {
				t.Errorf("server got %+v", req)
			}
		})
	}
}

func TestClientDialContextCancelled(t *testing.T) {
	c := &Client{Open: func(ctx context.Context) (net.Conn, error) {
		cl, _ := net.Pipe() // nobody answers
		return cl, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.DialContext(ctx, "tcp", "svc.ns:80")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("DialContext = %v, want context.Canceled", err)
	}
}

// TestExchangeUnparsableAnswer: an answer the laptop cannot parse becomes SERVFAIL for its query
// at once, not a time-out.
func TestExchangeUnparsableAnswer(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		var req Request
		if ReadFrame(server, &req) != nil || WriteFrame(server, &Response{OK: true}) != nil {
			return
		}
		q, err := ReadDNSMsg(server)
		if err != nil {
			return
		}
		// The query's ID, and a question whose name is a compression pointer to itself.
		bad := []byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01}
		_, _ = server.Write(append([]byte{0, byte(len(bad))}, bad...))
		_, _ = io.Copy(io.Discard, server)
	}()
	c := &Client{Open: func(context.Context) (net.Conn, error) { return client, nil }, Token: "t"}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	m, err := c.Exchange(ctx, new(dns.Msg).SetQuestion("web.", dns.TypeA))
	if err != nil {
		t.Fatalf("Exchange: %v (want a SERVFAIL answer at once)", err)
	}
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("answer %v, want SERVFAIL", m)
	}
}
