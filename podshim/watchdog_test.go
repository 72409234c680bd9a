package podshim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI serves one Deployment, the proxy pods and the watchdog's ServiceAccount, and records
// the writes.
type fakeAPI struct {
	mu       sync.Mutex
	dep      map[string]any
	pods     map[string]string // name → phase ("" with deleting: being deleted)
	deleting map[string]bool
	puts     []map[string]any
	saGone   bool
	// podsDeleted are the pods the watchdog deleted.
	podsDeleted []string
	conflict    int // answer this many PUTs with 409
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/apis/apps/v1/namespaces/ns/deployments/web" && r.Method == http.MethodGet:
		_ = json.NewEncoder(w).Encode(f.dep)
	case r.URL.Path == "/apis/apps/v1/namespaces/ns/deployments/web" && r.Method == http.MethodPut:
		var d map[string]any
		_ = json.NewDecoder(r.Body).Decode(&d)
		if f.conflict > 0 {
			f.conflict--
			http.Error(w, "conflict", http.StatusConflict)
			return
		}
		f.puts = append(f.puts, d)
		f.dep = d
	case strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/ns/pods/") && r.Method == http.MethodDelete:
		name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/ns/pods/")
		f.podsDeleted = append(f.podsDeleted, name)
		http.Error(w, "not found", http.StatusNotFound)
	case strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/ns/pods/"):
		name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/ns/pods/")
		phase, ok := f.pods[name]
		if !ok {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		meta := map[string]any{"name": name}
		if f.deleting[name] {
			meta["deletionTimestamp"] = "2026-12-03T00:00:00Z"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": meta, "status": map[string]any{"phase": phase}})
	case r.URL.Path == "/api/v1/namespaces/ns/serviceaccounts/tp-abc-watchdog" && r.Method == http.MethodDelete:
		f.saGone = true
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusForbidden)
	}
}

func swappedDeployment(session, pod string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"name": "web", "resourceVersion": "7", "annotations": map[string]any{
			annSwapSession: session, annSwapPod: pod, annSwapReplicas: "3", annSwapOwner: "me@laptop", annSwapStarted: "2026-12-03T00:00:00Z", "keep": "me",
		}},
		"spec": map[string]any{"replicas": 0, "template": map[string]any{}},
	}
}

func runWatchdog(t *testing.T, f *fakeAPI, budget time.Duration) error {
	t.Helper()
	srv := httptest.NewServer(f)
	defer srv.Close()
	w := &Watchdog{API: srv.URL, Client: srv.Client(), Token: "tok", Namespace: "ns", Deployment: "web", Session: "abc",
		ServiceAccount: "tp-abc-watchdog", Grace: 50 * time.Millisecond, Interval: 10 * time.Millisecond, Logf: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	return w.Run(ctx)
}

func TestWatchdog(t *testing.T) {
	cases := []struct {
		name     string
		api      *fakeAPI
		restored bool // the Deployment is restored (3 replicas, no swap record, other annotations kept)
		retired  bool // the watchdog deleted its ServiceAccount
	}{
		{"proxy pod gone: restore", &fakeAPI{dep: swappedDeployment("abc", "tp-abc")}, true, true},
		{"proxy pod ended (idle): restore", &fakeAPI{dep: swappedDeployment("abc", "tp-abc"), pods: map[string]string{"tp-abc": "Succeeded"}}, true, true},
		{"proxy pod being deleted: restore", &fakeAPI{dep: swappedDeployment("abc", "tp-abc"), pods: map[string]string{"tp-abc": "Running"}, deleting: map[string]bool{"tp-abc": true}}, true, true},
		{"a conflicting write is read again, then restored", &fakeAPI{dep: swappedDeployment("abc", "tp-abc"), conflict: 2}, true, true},
		{"swap held by another session: leave it", &fakeAPI{dep: swappedDeployment("other", "tp-other")}, false, true},
		{"proxy pod runs: never restore", &fakeAPI{dep: swappedDeployment("abc", "tp-abc-1"), pods: map[string]string{"tp-abc-1": "Running"}}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := runWatchdog(t, tc.api, 2*time.Second)
			f := tc.api
			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.retired != f.saGone {
				t.Errorf("ServiceAccount deleted: %v, want %v (Run: %v)", f.saGone, tc.retired, err)
			}
			if !tc.restored {
				if len(f.puts) != 0 {
					t.Fatalf("the Deployment was written: %v", f.puts)
				}
				return
			}
			if len(f.puts) != 1 {
				t.Fatalf("want one restoring write, got %d", len(f.puts))
			}
			if len(f.podsDeleted) != 1 || f.podsDeleted[0] != "tp-abc" {
				t.Errorf("deleted pods %v, want the ended proxy pod tp-abc", f.podsDeleted)
			}
			d := f.puts[0]
			if got := d["spec"].(map[string]any)["replicas"]; got != float64(3) {
				t.Errorf("replicas %v, want 3", got)
			}
			meta := d["metadata"].(map[string]any)
			if meta["resourceVersion"] != "7" {
				t.Errorf("the write carries resourceVersion %v, want the one read (7)", meta["resourceVersion"])
			}
			ann := meta["annotations"].(map[string]any)
			for _, k := range []string{annSwapSession, annSwapPod, annSwapReplicas, annSwapOwner, annSwapStarted} {
				if _, ok := ann[k]; ok {
					t.Errorf("annotation %s left after the restore", k)
				}
			}
			if ann["keep"] != "me" {
				t.Errorf("other annotations must stay: %v", ann)
			}
		})
	}
}

// TestWatchdogWaitsForHealing: a proxy pod that is replaced within the grace period (the session
// heals it and moves the record) is no reason to restore.
func TestWatchdogWaitsForHealing(t *testing.T) {
	f := &fakeAPI{dep: swappedDeployment("abc", "tp-abc")}
	srv := httptest.NewServer(f)
	defer srv.Close()
	w := &Watchdog{API: srv.URL, Client: srv.Client(), Token: "tok", Namespace: "ns", Deployment: "web", Session: "abc",
		ServiceAccount: "tp-abc-watchdog", Grace: time.Hour, Interval: 10 * time.Millisecond, Logf: t.Logf}
	var gone time.Time
	for round := range 3 {
		if done, err := w.check(context.Background(), &gone, w.Grace); done || err != nil {
			t.Fatalf("round %d: done %v, err %v", round, done, err)
		}
	}
	if gone.IsZero() {
		t.Fatal("the missing pod was not noticed")
	}
	f.mu.Lock()
	f.dep = swappedDeployment("abc", "tp-abc-1")
	f.pods = map[string]string{"tp-abc-1": "Running"}
	f.mu.Unlock()
	if done, err := w.check(context.Background(), &gone, w.Grace); done || err != nil || !gone.IsZero() {
		t.Fatalf("after healing: done %v, err %v, gone since %v", done, err, gone)
	}
	if len(f.puts) != 0 {
		t.Fatalf("restored under a live session: %v", f.puts)
	}
}
