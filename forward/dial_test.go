package forward

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	spdystream "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/httpstream"
)

// fakeDialer answers a Dial with conn or err after delay (forever when delay is negative) and
// counts its dials.
type fakeDialer struct {
	conn    httpstream.Connection
	err     error
	delay   time.Duration
	dials   atomic.Int32
	release chan struct{} // closed at the test's end, to end a dial that never answers
}

func (d *fakeDialer) Dial(...string) (httpstream.Connection, string, error) {
	d.dials.Add(1)
	if d.delay < 0 {
		<-d.release
		return nil, "", errors.New("released")
	}
	time.Sleep(d.delay)
	return d.conn, "", d.err
}

// TestDialFirst: SPDY is used when it works; any failure of it but an answer of the API server's
// own hands over to the websocket; the error names what failed.
func TestDialFirst(t *testing.T) {
	okConn := &fakeConn{closed: make(chan bool)}
	upgrade := &httpstream.UpgradeFailureError{Cause: errors.New("unable to upgrade connection: 400 Bad Request")}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no portforward"))
	tests := []struct {
		name      string
		spdy, ws  *fakeDialer
		want      Protocol
		wantErr   []string // substrings of the error; nil: no error
		wantWSRan bool
	}{
		{"SPDY works", &fakeDialer{conn: okConn}, &fakeDialer{conn: okConn}, SPDY, nil, false},
		{"SPDY upgrade refused: websocket", &fakeDialer{err: upgrade}, &fakeDialer{conn: okConn}, Websocket, nil, true},
		{"SPDY unanswered: websocket", &fakeDialer{delay: -1}, &fakeDialer{conn: okConn}, Websocket, nil, true},
		{"the API server forbids: no second try", &fakeDialer{err: forbidden}, &fakeDialer{conn: okConn}, "", []string{"forbidden"}, false},
		{"both fail differently: both named", &fakeDialer{err: upgrade}, &fakeDialer{err: errors.New("websocket: bad handshake")}, "", []string{"400 Bad Request", "websocket: websocket: bad handshake"}, true},
		{"both fail alike: named once", &fakeDialer{err: errors.New("connection refused")}, &fakeDialer{err: errors.New("connection refused")}, "", []string{"connection refused"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spdy.release = make(chan struct{})
			defer close(tt.spdy.release)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, p, err := dialFirst(ctx, []try{{SPDY, tt.spdy}, {Websocket, tt.ws}}, 200*time.Millisecond)
			if got := tt.ws.dials.Load() > 0; got != tt.wantWSRan {
				t.Errorf("websocket tried: %v, want %v", got, tt.wantWSRan)
			}
			if tt.wantErr == nil {
				if err != nil || conn == nil || p != tt.want {
					t.Fatalf("dialFirst = %v, %q, %v; want a connection over %s", conn, p, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("dialFirst = %q, want an error", p)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if n := strings.Count(err.Error(), "connection refused"); n > 1 {
				t.Errorf("error %q repeats itself", err)
			}
		})
	}
}

// upgradeServer is an API server stand-in for the port-forward upgrade: it records the upgrade
// each request asks for, accepts a websocket (with the tunnelling subprotocol), and accepts SPDY
// only when spdy is set (otherwise it answers 400, as a proxy that passes only websockets does).
func upgradeServer(t *testing.T, spdy bool) (cfg *rest.Config, tried func() []string) {
	var mu sync.Mutex
	var got []string
	var held []io.Closer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := r.Header.Get("Upgrade")
		mu.Lock()
		got = append(got, up)
		mu.Unlock()
		switch {
		case strings.EqualFold(up, "websocket"):
			u := websocket.Upgrader{Subprotocols: []string{"SPDY/3.1+" + portforward.PortForwardProtocolV1Name}}
			c, err := u.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		case spdy && strings.EqualFold(up, "SPDY/3.1"):
			w.Header().Set(httpstream.HeaderProtocolVersion, portforward.PortForwardProtocolV1Name)
			c := spdystream.NewResponseUpgrader().UpgradeResponse(w, r, func(httpstream.Stream, <-chan struct{}) error { return nil })
			if c != nil {
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		default:
			http.Error(w, "upgrade to "+up+" is not allowed here", http.StatusBadRequest)
		}
	}))
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		srv.Close()
	})
	return &rest.Config{Host: srv.URL}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := slices.Clone(got)
		got = nil
		return out
	}
}

// TestDialProtocols, through a real HTTP server: SPDY is chosen where it is allowed; where only a
// websocket is, the websocket is used, and the Forwarder's later dials try it first (no second
// wait for a refused SPDY upgrade).
func TestDialProtocols(t *testing.T) {
	tests := []struct {
		name       string
		spdy       bool
		want       Protocol
		wantTried  []string // the upgrades the first dial asks for
		wantTried2 []string // and the second
	}{
		{"SPDY allowed", true, SPDY, []string{"SPDY/3.1"}, []string{"SPDY/3.1"}},
		{"websocket only", false, Websocket, []string{"SPDY/3.1", "websocket"}, []string{"websocket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, tried := upgradeServer(t, tt.spdy)
			f := &Forwarder{Config: cfg, Namespace: "ns", Pod: "p", Port: 1, DialTimeout: 10 * time.Second}
			for i, want := range [][]string{tt.wantTried, tt.wantTried2} {
				conn, err := f.dial(context.Background())
				if err != nil {
					t.Fatalf("dial %d: %v", i+1, err)
				}
				conn.Close()
				if got := tried(); !slices.Equal(got, want) {
					t.Errorf("dial %d asked for %q, want %q", i+1, got, want)
				}
				if f.Protocol() != tt.want {
					t.Errorf("dial %d: Protocol() = %q, want %q", i+1, f.Protocol(), tt.want)
				}
			}
		})
	}
}
