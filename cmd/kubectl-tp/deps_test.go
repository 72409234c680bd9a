package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksOnlyTheClientsItCalls keeps the plugin's binary free of client-go's full clientset: the
// typed clients of the ~50 API groups it never calls made the binary 8 MB bigger (see
// session.Clientset).
func TestLinksOnlyTheClientsItCalls(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"k8s.io/client-go/kubernetes/scheme":                 true,
		"k8s.io/client-go/kubernetes/typed/core/v1":          true,
		"k8s.io/client-go/kubernetes/typed/apps/v1":          true,
		"k8s.io/client-go/kubernetes/typed/authorization/v1": true,
		"k8s.io/client-go/kubernetes/typed/autoscaling/v2":   true,
		"k8s.io/client-go/kubernetes/typed/rbac/v1":          true,
		"k8s.io/client-go/kubernetes/typed/discovery/v1":     true,
	}
	seen := 0
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, "k8s.io/client-go/kubernetes") {
			continue
		}
		seen++
		if !allowed[p] {
			t.Errorf("kubectl-tp links %s; build clients with session.NewClientset and add the group to session.Clientset", p)
		}
	}
	if seen < 2 {
		t.Fatalf("go list found %d client-go clientset packages, want the typed clients in use:\n%s", seen, out)
	}
}
