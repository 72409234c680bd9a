package forward

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
)

// fakeStream is an in-memory httpstream.Stream: the test plays the kubelet on the other end.
type fakeStream struct {
	net.Conn
	reset chan struct{}
}

func (s *fakeStream) Close() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
func (s *fakeStream) Reset() error                 { return s.Conn.Close() }
func (s *fakeStream) Headers() http.Header         { return http.Header{} }
func (s *fakeStream) Identifier() uint32           { return 1 }
func (s *fakeStream) SetIdleTimeout(time.Duration) {}

var _ httpstream.Stream = (*fakeStream)(nil)

type fakeConn struct{ closed chan bool }

func (c *fakeConn) CreateStream(http.Header) (httpstream.Stream, error) {
	return nil, errors.New("unused")
}
func (c *fakeConn) Close() error                       { return nil }
func (c *fakeConn) CloseChan() <-chan bool             { return c.closed }
func (c *fakeConn) SetIdleTimeout(time.Duration)       {}
func (c *fakeConn) RemoveStreams(...httpstream.Stream) {}

// tcpPair returns two ends of a loopback TCP connection (they support CloseWrite).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func newTestConn(t *testing.T) (c *streamConn, kubeletData, kubeletErr net.Conn) {
	dataLocal, dataRemote := tcpPair(t)
	errLocal, errRemote := tcpPair(t)
	c = &streamConn{conn: &fakeConn{closed: make(chan bool)}, data: &fakeStream{Conn: dataLocal}, errStream: &fakeStream{Conn: errLocal}, local: addr("l"), remote: addr("r")}
	c.start()
	t.Cleanup(func() { c.Close() })
	return c, dataRemote, errRemote
}

func TestStreamConn(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, c *streamConn, data, errs net.Conn)
	}{
		{"bytes both ways and half-close", func(t *testing.T, c *streamConn, data, errs net.Conn) {
			errs.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(data)
			if string(got) != "ping" {
				t.Fatalf("kubelet got %q", got)
			}
			_, _ = data.Write([]byte("pong"))
			data.Close()
			back, err := io.ReadAll(c)
			if err != nil || string(back) != "pong" {
				t.Fatalf("read %q, %v", back, err)
			}
		}},
		{"a passed read deadline ends a waiting read and resets the stream", func(t *testing.T, c *streamConn, data, errs net.Conn) {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			buf := make([]byte, 4)
			if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read err = %v, want deadline exceeded", err)
			}
			// The kubelet's end sees the reset (EOF or an error), not a live stream.
			_ = data.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := data.Read(buf); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the stream was not reset after the deadline")
			}
		}},
		{"a cleared deadline does not fire", func(t *testing.T, c *streamConn, data, errs net.Conn) {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_ = c.SetReadDeadline(time.Time{})
			time.Sleep(50 * time.Millisecond)
			_, _ = data.Write([]byte("late"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
				t.Fatalf("read after a cleared deadline: %q %v", buf, err)
			}
		}},
		{"kubelet error is returned by Read", func(t *testing.T, c *streamConn, data, errs net.Conn) {
			_, _ = errs.Write([]byte("error forwarding port 4747: connection refused"))
			errs.Close()
			_, err := io.ReadAll(c)
			if err == nil || !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("err = %v, want the kubelet's message", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, data, errs := newTestConn(t)
			tc.run(t, c, data, errs)
		})
	}
}
