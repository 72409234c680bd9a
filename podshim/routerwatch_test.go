package podshim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tunnel"
)

// fakeServiceAPI serves one intercepted Service and the router's ServiceAccount, and records the
// writes.
type fakeServiceAPI struct {
	mu     sync.Mutex
	svc    map[string]any
	puts   int
	saGone bool
	order  []string
}

func (f *fakeServiceAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/api/v1/namespaces/ns/services/web" && r.Method == http.MethodGet:
		_ = json.NewEncoder(w).Encode(f.svc)
	case r.URL.Path == "/api/v1/namespaces/ns/services/web" && r.Method == http.MethodPut:
		var s map[string]any
		_ = json.NewDecoder(r.Body).Decode(&s)
		f.svc, f.puts = s, f.puts+1
		f.order = append(f.order, "restore")
	case r.URL.Path == "/api/v1/namespaces/ns/serviceaccounts/tp-router-web" && r.Method == http.MethodDelete:
		f.saGone = true
		f.order = append(f.order, "retire")
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusForbidden)
	}
}

// TestRouterWatch checks when the router restores its Service and retires: not while an
// intercept is registered, not before Grace (StartGrace before the first registration), then
// the Service's own selector back and the intercept annotations gone (the others kept), and only
// then its ServiceAccount deleted.
func TestRouterWatch(t *testing.T) {
	intercepted := func(extra map[string]any) map[string]any {
		ann := map[string]any{annInterceptSelector: `{"app":"web"}`, annInterceptRouter: "tp-router-web"}
		for k, v := range extra {
			ann[k] = v
		}
		return map[string]any{
			"metadata": map[string]any{"name": "web", "resourceVersion": "9", "annotations": ann},
			"spec":     map[string]any{"selector": map[string]any{labelRouter: "web"}, "ports": []any{}},
		}
	}
	one := []tunnel.InterceptInfo{{ID: "a"}}
	cases := []struct {
		name string
		// statuses are what Status returns, one per round; the last repeats.
		statuses  []RouterStatus
		svc       map[string]any
		retired   bool
		wantAnn   map[string]any
		unchanged bool
		// refuse makes Retire say no (a registration came first); wantSel is the selector after
		// the restore (default: the Service's own).
		refuse  bool
		wantSel map[string]any
	}{
		{name: "retire asked by the last session", statuses: []RouterStatus{{Retiring: true}},
			svc: intercepted(nil), retired: true},
		{name: "a registration came before the retirement", statuses: []RouterStatus{{Intercepts: one}, {IdleFor: time.Minute}},
			svc: intercepted(nil), refuse: true, unchanged: true},
		{name: "selector edited meanwhile", statuses: []RouterStatus{{Retiring: true}},
			svc: func() map[string]any {
				s := intercepted(nil)
				s["spec"].(map[string]any)["selector"] = map[string]any{"app": "web-v2", labelRouter: "web"}
				return s
			}(), retired: true, wantSel: map[string]any{"app": "web-v2", labelRouter: "web"}},
		{name: "idle past grace after an intercept", statuses: []RouterStatus{{Intercepts: one}, {IdleFor: time.Minute}},
			svc: intercepted(map[string]any{"keep": "me"}), retired: true, wantAnn: map[string]any{"keep": "me"}},
		{name: "idle past grace, no other annotation", statuses: []RouterStatus{{Intercepts: one}, {IdleFor: time.Minute}},
			svc: intercepted(nil), retired: true},
		{name: "no intercept yet, within the start grace", statuses: []RouterStatus{{IdleFor: time.Minute}},
			svc: intercepted(nil), unchanged: true},
		{name: "still intercepted", statuses: []RouterStatus{{Intercepts: one}},
			svc: intercepted(nil), unchanged: true},
		{name: "idle, but not for grace", statuses: []RouterStatus{{Intercepts: one}, {IdleFor: 5 * time.Second}},
			svc: intercepted(nil), unchanged: true},
		{name: "Service restored by someone else", statuses: []RouterStatus{{Intercepts: one}, {IdleFor: time.Minute}},
			svc: map[string]any{"metadata": map[string]any{"name": "web"}, "spec": map[string]any{"selector": map[string]any{"app": "web"}}}, retired: true, unchanged: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeServiceAPI{svc: c.svc}
			srv := httptest.NewServer(f)
			defer srv.Close()
			var mu sync.Mutex
			round := 0
			many := make(chan struct{}) // closed at round 50
			w := &RouterWatch{API: srv.URL, Client: srv.Client(), Token: "tok", Namespace: "ns", Service: "web",
				ServiceAccount: "tp-router-web", Grace: 10 * time.Second, StartGrace: 2 * time.Minute,
				Retire: func() bool { return !c.refuse },
				Drain:  time.Millisecond,
				Status: func() (RouterStatus, bool) {
					mu.Lock()
					defer mu.Unlock()
					st := c.statuses[min(round, len(c.statuses)-1)]
					round++
					if round == 50 {
						close(many)
					}
					ch := make(chan struct{})
					close(ch) // the next round at once
					st.Changed = ch
					return st, true
				}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			if !c.retired {
				// Let it run many rounds; it must not act (ending by itself means it did).
				select {
				case <-many:
					cancel()
					<-done
				case <-done:
				}
			} else if err := <-done; err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.saGone != c.retired {
				t.Errorf("retired = %v, want %v", f.saGone, c.retired)
			}
			if c.unchanged {
				if f.puts != 0 {
					t.Errorf("the Service was written: %v", f.svc)
				}
				return
			}
			if len(f.order) != 2 || f.order[0] != "restore" {
				t.Errorf("order %v, want the restore before the retirement", f.order)
			}
			meta := f.svc["metadata"].(map[string]any)
			sel := f.svc["spec"].(map[string]any)["selector"].(map[string]any)
			want := c.wantSel
			if want == nil {
				want = map[string]any{"app": "web"}
			}
			if len(sel) != len(want) {
				t.Errorf("selector %v, want %v", sel, want)
			}
			for k, v := range want {
				if sel[k] != v {
					t.Errorf("selector %v, want %v", sel, want)
				}
			}
			ann, has := meta["annotations"].(map[string]any)
			if c.wantAnn == nil && has {
				t.Errorf("annotations %v left", ann)
			}
			for k, v := range c.wantAnn {
				if ann[k] != v {
					t.Errorf("annotation %s = %v, want %v", k, ann[k], v)
				}
			}
			if _, ok := ann[annInterceptSelector]; ok {
				t.Error("the intercept annotation is still there")
			}
		})
	}
}
