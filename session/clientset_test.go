package session

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Every full clientset (and so the fake one of unit tests) is a Clientset.
var _ Clientset = kubernetes.Interface(nil)

func TestNewClientsetCallsEachGroup(t *testing.T) {
	var (
		mu     sync.Mutex
		paths  []string
		agents []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		// An empty object decodes into any of the list types asked for below.
		_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{}})
	}))
	defer srv.Close()
	cs, err := NewClientset(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	list := metav1.ListOptions{}
	cases := []struct {
		name string
		call func() error
		path string
	}{
		{"core/v1", func() error { _, err := cs.CoreV1().Pods("ns").List(ctx, list); return err }, "/api/v1/namespaces/ns/pods"},
		{"apps/v1", func() error { _, err := cs.AppsV1().Deployments("ns").List(ctx, list); return err }, "/apis/apps/v1/namespaces/ns/deployments"},
		{"autoscaling/v2", func() error {
			_, err := cs.AutoscalingV2().HorizontalPodAutoscalers("ns").List(ctx, list)
			return err
		}, "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers"},
		{"rbac/v1", func() error { _, err := cs.RbacV1().Roles("ns").List(ctx, list); return err }, "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles"},
		{"discovery/v1", func() error { _, err := cs.DiscoveryV1().EndpointSlices("ns").List(ctx, list); return err }, "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != i+1 || paths[i] != tc.path {
				t.Fatalf("requests %v, want the last to be %s", paths, tc.path)
			}
			if !strings.Contains(agents[i], "/") {
				t.Errorf("User-Agent %q: want client-go's default", agents[i])
			}
		})
	}
	if got := cs.AuthorizationV1().RESTClient().Get().AbsPath("/").URL().String(); !strings.HasPrefix(got, srv.URL) {
		t.Errorf("authorization client points at %s, want %s", got, srv.URL)
	}
}

func TestNewClientsetConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  rest.Config
		want string
	}{
		{"QPS without burst", rest.Config{Host: "https://127.0.0.1:1", QPS: 5}, "burst"},
		{"bad TLS file", rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{CAFile: "/nonexistent/ca.crt"}}, "ca.crt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClientset(&tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}
