package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptClient returns a Client whose one stream is served by script (the fake router's side).
func scriptClient(t *testing.T, script func(c net.Conn)) *Client {
	t.Helper()
	return &Client{Token: "tok", Open: func(context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			script(b)
		}()
		t.Cleanup(func() { a.Close() })
		return a, nil
	}}
}

func TestInterceptRegistration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		answer  Response
		then    func(c net.Conn) // after the answer
		wantErr string
		ended   string // the registration's end error
	}{
		{name: "clash", answer: Response{Code: CodeConflict, Error: "headers X-Dev=a are already intercepted by alice"}, wantErr: "conflict: headers X-Dev=a are already intercepted by alice"},
		{name: "no key", answer: Response{OK: true, PingMillis: 10}, wantErr: "no key"},
		{name: "router closes", answer: Response{OK: true, Intercept: "k", PingMillis: 60_000}, then: func(c net.Conn) {}, ended: "EOF"},
		{name: "router answers pings then fails one", answer: Response{OK: true, Intercept: "k", PingMillis: 1}, then: func(c net.Conn) {
			for range 3 {
				var p Request
				if ReadFrame(c, &p) != nil || p.Op != OpPing {
					return
				}
				WriteFrame(c, &Response{OK: true})
			}
			WriteFrame(c, &Response{Code: CodeBadRequest, Error: "go away"})
			io.Copy(io.Discard, c)
		}, ended: "go away"},
		{name: "router goes silent", answer: Response{OK: true, Intercept: "k", PingMillis: 1}, then: func(c net.Conn) {
			io.Copy(io.Discard, c)
		}, ended: "did not answer pings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan Request, 1)
			c := scriptClient(t, func(c net.Conn) {
				var req Request
				if ReadFrame(c, &req) != nil {
					return
				}
				got <- req
				WriteFrame(c, &tc.answer)
				if tc.then != nil {
					tc.then(c)
				}
			})
			started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			reg, err := c.Intercept(ctx, &InterceptSpec{Headers: []string{"x-dev=a"}, Owner: "alice", Started: started, Ports: []int{8080}, Replace: "old"})
			req := <-got
			if req.Op != OpIntercept || req.Token != "tok" || req.Owner != "alice" || !req.Started.Equal(started) ||
				len(req.Headers) != 1 || len(req.Ports) != 1 || req.Intercept != "old" {
				t.Errorf("request = %+v", req)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Intercept = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-reg.Done():
			case <-ctx.Done():
				t.Fatal("the registration did not end")
			}
			if err := reg.Err(); err == nil || !strings.Contains(err.Error(), tc.ended) {
				t.Errorf("Err = %v, want %q", err, tc.ended)
			}
		})
	}
}

func TestAcceptIntercept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		second  *Response // nil: the router ends the stream
		refuse  bool
		wantErr string
	}{
		{name: "confirmed", second: &Response{OK: true, Port: 8080}},
		{name: "refused", second: &Response{OK: true, Port: 8080}, refuse: true},
		{name: "bad port", second: &Response{OK: true, Port: 0}, wantErr: "invalid port"},
		{name: "registration gone", wantErr: "registration gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ack := make(chan Response, 1)
			c := scriptClient(t, func(c net.Conn) {
				var req Request
				if ReadFrame(c, &req) != nil || req.Op != OpInterceptAccept || req.Intercept != "key" {
					WriteFrame(c, &Response{Code: CodeBadRequest, Error: "bad request"})
					return
				}
				WriteFrame(c, &Response{OK: true})
				if tc.second == nil {
					return
				}
				WriteFrame(c, tc.second)
				var a Response
				if ReadFrame(c, &a) != nil {
					close(ack)
					return
				}
				ack <- a
				if a.OK {
					io.WriteString(c, "hello")
				}
			})
			h, err := c.AcceptIntercept(ctx, "key")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("AcceptIntercept = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || h.Port != 8080 {
				t.Fatalf("AcceptIntercept = %+v, %v", h, err)
			}
			if tc.refuse {
				h.Refuse(CodeRefused, "nothing listens")
				if a := <-ack; a.OK || a.Code != CodeRefused || a.Error != "nothing listens" {
					t.Errorf("ack = %+v, want the refusal", a)
				}
				return
			}
			conn, err := h.Confirm()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if a := <-ack; !a.OK {
				t.Errorf("ack = %+v, want OK", a)
			}
			b := make([]byte, 5)
			if _, err := io.ReadFull(conn, b); err != nil || string(b) != "hello" {
				t.Errorf("stream carried %q, %v", b, err)
			}
		})
	}
	t.Run("cancelled while parked", func(t *testing.T) {
		c := scriptClient(t, func(c net.Conn) {
			var req Request
			ReadFrame(c, &req)
			WriteFrame(c, &Response{OK: true})
			io.Copy(io.Discard, c)
		})
		cctx, ccancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { _, err := c.AcceptIntercept(cctx, "key"); errc <- err }()
		ccancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("AcceptIntercept = %v, want context.Canceled", err)
		}
	})
}
