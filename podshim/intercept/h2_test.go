package intercept_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2client opens one h2c connection (prior knowledge) to addr.
func h2client(t *testing.T, addr string) *http2.ClientConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(guard))
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func h2get(t *testing.T, cc *http2.ClientConn, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://svc/a%2Fb/./c?q=1&r=%20&q", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("X-Request-Uri"); resp.StatusCode == 200 && got != "/a%2Fb/./c?q=1&r=%20&q" {
		t.Errorf("upstream saw :path %q", got)
	}
	return resp, string(b)
}

// TestH2PerStream: on one h2c connection, concurrent streams go where their own headers say;
// each destination is dialed once; a request without User-Agent arrives without one.
func TestH2PerStream(t *testing.T) {
	w := newWorld(t, httpAddr)
	cc := h2client(t, w.addr)
	cases := []struct {
		header http.Header
		want   string
	}{
		{http.Header{"X-Dev": {"alice"}}, "alice"},
		{http.Header{"X-Dev": {"bob"}, "User-Agent": {"test"}}, "bob"},
		{http.Header{}, "default"},
		{http.Header{"X-Dev": {"carol"}}, "default"},
	}
	for round := 0; round < 2; round++ {
		var wg sync.WaitGroup
		for _, tc := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := tc.header.Clone()
				if _, ok := h["User-Agent"]; !ok {
					h["User-Agent"] = nil // tell the test client to send none
				}
				resp, body := h2get(t, cc, h)
				if resp.StatusCode != 200 || body != tc.want {
					t.Errorf("%v: got %d %q, want %q", tc.header, resp.StatusCode, body, tc.want)
				}
				wantUA := tc.header.Get("User-Agent") != ""
				if got := resp.Header.Get("X-Saw-User-Agent"); got != map[bool]string{true: "true", false: "false"}[wantUA] {
					t.Errorf("%v: upstream saw User-Agent: %s", tc.header, got)
				}
				if resp.ProtoMajor != 2 {
					t.Errorf("response over HTTP/%d", resp.ProtoMajor)
				}
			}()
		}
		wg.Wait()
	}
	for _, u := range []*upstream{w.alice, w.bob, w.def} {
		if n := u.dials.Load(); n != 1 {
			t.Errorf("%s dialed %d times, want 1", u.name, n)
		}
	}
}

// TestH2StreamingTrailers: a gRPC-like bidirectional stream: messages go up and come back one by
// one while the stream is open, and the trailers (where gRPC keeps its status) arrive.
func TestH2StreamingTrailers(t *testing.T) {
	w := newWorld(t, httpAddr)
	cc := h2client(t, w.addr)
	for _, who := range []string{"alice", "default"} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", "http://svc/duplex", pr)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		if who != "default" {
			req.Header.Set("X-Dev", who)
		}
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body := bufio.NewReader(resp.Body)
		for _, msg := range []string{"one", "two", "three"} {
			io.WriteString(pw, msg+"\n")
			line, err := body.ReadString('\n')
			if err != nil || line != who+":"+msg+"\n" {
				t.Fatalf("%s: echo of %q: %q, %v", who, msg, line, err)
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(body); err != nil || len(rest) != 0 {
			t.Fatalf("%s: after end: %q, %v", who, rest, err)
		}
		if got := resp.Trailer["Grpc-Status"]; len(got) != 1 || got[0] != "0" {
			t.Errorf("%s: trailer Grpc-Status = %q, want 0 (trailers %v)", who, got, resp.Trailer)
		}
		if got := resp.Trailer.Get("Grpc-Message"); got != "done by "+who {
			t.Errorf("%s: trailer Grpc-Message = %q", who, got)
		}
		resp.Body.Close()
	}
}

// TestH2StreamingResponse: the first piece of a streamed h2 response arrives while the upstream
// still waits.
func TestH2StreamingResponse(t *testing.T) {
	w := newWorld(t, httpAddr)
	cc := h2client(t, w.addr)
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://svc/stream", nil)
	req.Header.Set("X-Dev", "bob")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first from bob\n" {
		t.Fatalf("first piece: %q, %v", line, err)
	}
	close(w.bob.release)
	if rest, err := io.ReadAll(br); err != nil || !strings.HasPrefix(string(rest), "rest from bob") {
		t.Fatalf("rest: %q, %v", rest, err)
	}
}
