package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tests/latency"
)

// kubeconfigVia writes a copy of the user's kubeconfig whose server is the given proxy address.
func kubeconfigVia(t *testing.T, addr string) string {
	t.Helper()
	b, err := os.ReadFile(userKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := regexp.MustCompile(`server: https://[^\s]+`).ReplaceAllString(string(b), "server: https://"+addr)
	return userFile(t, "via-"+randomSuffix()+".kubeconfig", cfg)
}

// TestRunReconnects cuts every connection between the plugin and the API server in the middle of a
// session: the session must survive, and new connections must work again within seconds.
func TestRunReconnects(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	lp := &latency.Proxy{Target: "127.0.0.1:6443"}
	if err := lp.Start(); err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	kcfg := kubeconfigVia(t, lp.Addr())
	marker := filepath.Join(workDir, "first-done-"+randomSuffix())
	resume := filepath.Join(workDir, "resume-"+randomSuffix())
	// The child: one request, then wait for the test to cut the path, then retry until it works
	// (10 s at most) and print how long that took.
	script := `curl -sf http://web:8080/color; touch ` + marker + `
while [ ! -e ` + resume + ` ]; do sleep 0.05; done
start=$(date +%s%N)
for i in $(seq 1 100); do
  if out=$(curl -sf --max-time 2 http://web:8080/color); then
    echo "$out after $(( ($(date +%s%N) - start) / 1000000 ))ms"; exit 0
  fi
  sleep 0.1
done
exit 9`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// --direct=false: this test is about the path through the API server, which it cuts.
	cmd := tpCmd(ctx, "run", "-n", ns, "--kubeconfig", kcfg, "--quiet", "--direct=false", "--", "sh", "-c", script)
	done := make(chan result, 1)
	go func() { done <- run(cmd) }()
	waitFor(t, 60*time.Second, "the first request", func() error {
		_, err := os.Stat(marker)
		return err
	})
	lp.Cut()
	if err := os.WriteFile(resume, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.Code != 0 {
		t.Fatalf("session did not recover after the API server connection was cut: %s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 2 || lines[0] != "green" || !strings.HasPrefix(lines[1], "green after ") {
		t.Fatalf("unexpected output: %s", r)
	}
	t.Logf("new connection worked again %s the cut", strings.TrimPrefix(lines[1], "green "))
	os.Remove(marker)
	os.Remove(resume)
}
