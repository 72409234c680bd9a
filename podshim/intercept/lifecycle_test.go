package intercept_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kubectl-tp/kubectl-tp/podshim/intercept"
)

// TestRemove: once an intercept is removed, its requests go to the real pods at once: the next
// request on the same kept-alive HTTP/1 connection, the next stream on the same h2c connection;
// its upgraded connections end.
func TestRemove(t *testing.T) {
	w := newWorld(t, httpAddr)
	c := dialClient(t, w.addr)
	c.get("/", "X-Dev: alice")
	if _, body := c.read("GET"); body != "alice" {
		t.Fatalf("before: %q", body)
	}
	cc := h2client(t, w.addr)
	if _, body := h2get(t, cc, http.Header{"X-Dev": {"alice"}}); body != "alice" {
		t.Fatalf("h2 before: %q", body)
	}
	up := dialClient(t, w.addr)
	up.get("/upgrade", "X-Dev: alice", "Connection: Upgrade", "Upgrade: echo")
	if resp, err := http.ReadResponse(up.br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}

	if !w.tab.Remove("alice") {
		t.Fatal("Remove: not registered")
	}
	if w.tab.Remove("alice") {
		t.Fatal("second Remove: still registered")
	}
	c.get("/", "X-Dev: alice")
	if _, body := c.read("GET"); body != "default" {
		t.Fatalf("same connection after Remove: %q", body)
	}
	if _, body := h2get(t, cc, http.Header{"X-Dev": {"alice"}}); body != "default" {
		t.Fatalf("same h2 connection after Remove: %q", body)
	}
	up.waitClosed("upgraded connection after Remove")
	// bob is unaffected.
	c.get("/", "X-Dev: bob")
	if _, body := c.read("GET"); body != "bob" {
		t.Fatalf("bob: %q", body)
	}
}

// TestInterceptUnreachable: while an intercept's dialer fails, its requests go to the real pods,
// and the change is logged and reported once, not per request; when it recovers, that too.
func TestInterceptUnreachable(t *testing.T) {
	var mu sync.Mutex
	var reports []string
	f := &failing{}
	f.down.Store(true)
	w := newWorld(t, httpAddr, func(rt *intercept.Router) {
		rt.Report = func(ic intercept.Intercept, err error) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, ic.ID+":"+map[bool]string{true: "down", false: "up"}[err != nil])
		}
	})
	f.next = w.alice.dialer(w.alice.httpAddr)
	w.tab.Remove("alice")
	add(t, w.tab, "alice", "alice@laptop", f, "x-dev=alice")

	c := dialClient(t, w.addr)
	cc := h2client(t, w.addr)
	for i := 0; i < 3; i++ {
		c.get("/", "X-Dev: alice")
		if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "default" {
			t.Fatalf("while down: %d %q", resp.StatusCode, body)
		}
		if _, body := h2get(t, cc, http.Header{"X-Dev": {"alice"}}); body != "default" {
			t.Fatalf("h2 while down: %q", body)
		}
	}
	f.down.Store(false)
	c.get("/", "X-Dev: alice")
	if _, body := c.read("GET"); body != "alice" {
		t.Fatalf("after recovery: %q", body)
	}
	if _, body := h2get(t, cc, http.Header{"X-Dev": {"alice"}}); body != "alice" {
		t.Fatalf("h2 after recovery: %q", body)
	}
	mu.Lock()
	got := strings.Join(reports, ",")
	mu.Unlock()
	if got != "alice:down,alice:up" {
		t.Errorf("reports %q, want alice:down,alice:up", got)
	}
	logs := w.logs.Lines()
	if len(logs) != 2 || !strings.Contains(logs[0], "unreachable") || !strings.Contains(logs[0], "laptop gone") || !strings.Contains(logs[1], "reachable again") {
		t.Errorf("logs %q, want one unreachable and one reachable-again line", logs)
	}
}

// TestDefaultUnreachable: without the real pods, HTTP/1 gets 502 and the connection closes, an
// h2 stream gets 502, a raw connection is closed.
func TestDefaultUnreachable(t *testing.T) {
	f := &failing{}
	f.down.Store(true)
	w := newWorld(t, httpAddr, func(rt *intercept.Router) { rt.Default = f })
	c := dialClient(t, w.addr)
	c.get("/")
	if resp, _ := c.read("GET"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("HTTP/1: %d, want 502", resp.StatusCode)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("HTTP/1 after 502: %v, want EOF", err)
	}
	cc := h2client(t, w.addr)
	if resp, _ := h2get(t, cc, nil); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("h2: %d, want 502", resp.StatusCode)
	}
	if _, body := h2get(t, cc, http.Header{"X-Dev": {"bob"}}); body != "bob" {
		t.Fatalf("h2 intercept while default down: %q", body)
	}
	raw := dialClient(t, w.addr)
	raw.write("\x00\x01")
	if b, err := io.ReadAll(raw.br); err != nil || len(b) != 0 {
		t.Fatalf("raw: %q, %v, want close", b, err)
	}
	if logs := w.logs.Lines(); len(logs) != 1 || !strings.Contains(logs[0], "real pods are unreachable") {
		t.Errorf("logs %q, want one line", logs)
	}
}
