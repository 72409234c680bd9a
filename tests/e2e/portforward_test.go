package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// websocketOnlyProxy starts a TLS-terminating reverse proxy in front of the API server that
// refuses SPDY upgrades and passes everything else (websocket upgrades included), as an ingress
// or corporate proxy that knows websockets only does. It authenticates upstream with the user's
// credentials; the returned kubeconfig points at it and carries none. refused counts the SPDY
// upgrades it turned away, websockets the websocket upgrades it passed.
func websocketOnlyProxy(t *testing.T, ns string) (kubeconfig string, refused, websockets *atomic.Int32) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", userKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := http.NewRequest(http.MethodGet, cfg.Host, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused, websockets = new(atomic.Int32), new(atomic.Int32)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream.URL)
			r.Out.Host = upstream.URL.Host
		},
		Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: false},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch up := strings.ToLower(r.Header.Get("Upgrade")); {
		case strings.HasPrefix(up, "spdy"):
			refused.Add(1)
			http.Error(w, "this proxy passes websockets only", http.StatusBadRequest)
			return
		case up == "websocket":
			websockets.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	kubeconfig = userFile(t, "wsonly-"+randomSuffix()+".kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %s, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: %s}}]
current-context: c
`, srv.URL, ns))
	return kubeconfig, refused, websockets
}

// TestPortForwardProtocols: the tunnel through the API server is SPDY where it can be (it costs
// less per byte than the websocket), and falls back to the websocket, without a visible error,
// where only websockets pass; the start-up line says which one is in use.
func TestPortForwardProtocols(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	wsKubeconfig, refused, websockets := websocketOnlyProxy(t, ns)
	tests := []struct {
		name     string
		flags    []string
		wantVia  string
		viaProxy bool
	}{
		{"straight to the API server: SPDY", nil, "tunnel: API server port-forward (SPDY)", false},
		{"websockets only: websocket", []string{"--kubeconfig", wsKubeconfig}, "tunnel: API server port-forward (websocket)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refused.Store(0)
			websockets.Store(0)
			s := startTrSession(t, ns, append([]string{"--direct=false"}, tt.flags...), `curl -s --max-time 10 http://web:8080/color`)
			if !strings.Contains(s.Mode, tt.wantVia) {
				t.Fatalf("start-up line %q, want %q", s.Mode, tt.wantVia)
			}
			wantGreenSilently(t, s, "the protocol choice")
			if tt.viaProxy && (refused.Load() == 0 || websockets.Load() == 0) {
				t.Errorf("the proxy refused %d SPDY upgrades and passed %d websockets; want both > 0 (did the session go through it?)", refused.Load(), websockets.Load())
			}
		})
	}
}
