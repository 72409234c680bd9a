package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tests/latency"
)

// requestingChild is a session whose child requests http://web:8080/color all the time, each on
// a new connection, printing every outcome with the times the request started and ended, until
// stop is called.
type requestingChild struct {
	stdout, stderr *syncBuffer
	exited         chan error
	stopFile       string
}

func startRequestingChild(t *testing.T, ns string, flags ...string) *requestingChild {
	t.Helper()
	c := &requestingChild{stdout: new(syncBuffer), stderr: new(syncBuffer), exited: make(chan error, 1),
		stopFile: filepath.Join(workDir, "requesting-stop-"+randomSuffix())}
	script := `while [ ! -e ` + c.stopFile + ` ]; do
  s=$(date +%s%N)
  if out=$(curl -sf --max-time 2 http://web:8080/color); then echo "ok $s $(date +%s%N) $out"; else echo "fail $s"; fi
  sleep 0.05
done`
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	args := append(append([]string{"run", "-n", ns, "--quiet"}, flags...), "--", "sh", "-c", script)
	cmd := tpCmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = c.stdout, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- cmd.Wait() }()
	t.Cleanup(func() { c.stop(); os.Remove(c.stopFile) })
	waitFor(t, 60*time.Second, "the child's first answer", func() error {
		if _, ok := c.okStartedAfter(time.Time{}); !ok {
			return fmt.Errorf("stdout %q, stderr %q", c.stdout.String(), c.stderr.String())
		}
		return nil
	})
	return c
}

// okStartedAfter returns when the first request started after `after` got its answer: a new
// connection made once the old pod was gone can only have been served by its replacement.
func (c *requestingChild) okStartedAfter(after time.Time) (time.Time, bool) {
	for _, m := range regexp.MustCompile(`(?m)^ok (\d+) (\d+) green$`).FindAllStringSubmatch(c.stdout.String(), -1) {
		start, _ := strconv.ParseInt(m[1], 10, 64)
		end, _ := strconv.ParseInt(m[2], 10, 64)
		if time.Unix(0, start).After(after) {
			return time.Unix(0, end), true
		}
	}
	return time.Time{}, false
}

// stop makes the child's loop end.
func (c *requestingChild) stop() { _ = os.WriteFile(c.stopFile, nil, 0o644) }

// TestRunHealsLostProxyPod loses the proxy pod under a running session in the ways a shared
// cluster does (a colleague's `kubectl delete pod`; an eviction through the Eviction API, as a node
// drain or preemption does): the session says so once, starts a replacement, and the child's new
// connections work again, the child still running (goal: within 10 s of the loss; the time is
// logged, not asserted). The logs stay quiet: a few lines for the incident, not one per retry.
func TestRunHealsLostProxyPod(t *testing.T) {
	tests := []struct {
		name string
		lose func(t *testing.T, ns, pod string)
	}{
		{"deleted", func(t *testing.T, ns, pod string) { kubectl(t, "delete", "pod", "-n", ns, pod, "--wait=false") }},
		{"evicted", func(t *testing.T, ns, pod string) {
			eviction := fmt.Sprintf(`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":%q,"namespace":%q}}`, pod, ns)
			if out, err := kubectlIn(eviction, "create", "--raw", "/api/v1/namespaces/"+ns+"/pods/"+pod+"/eviction", "-f", "-"); err != nil {
				t.Fatalf("evicting %s: %v: %s", pod, err, out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := namespace(t)
			webApp(t, ns, "web", "green")
			c := startRequestingChild(t, ns)
			pods := tpPods(t, ns)
			if len(pods) != 1 {
				t.Fatalf("want one proxy pod, got %v", pods)
			}
			pod, _, _ := strings.Cut(pods[0], "=")
			lost := time.Now()
			tt.lose(t, ns, pod)
			waitFor(t, 60*time.Second, "pod "+pod+" to be gone", func() error {
				if out, err := kubectlErr("get", "pod", "-n", ns, pod); err == nil {
					return fmt.Errorf("still there: %s", out)
				}
				return nil
			})
			gone := time.Now()
			var back time.Time
			waitFor(t, 60*time.Second, "an answer through the replacement pod", func() error {
				var ok bool
				if back, ok = c.okStartedAfter(gone); !ok {
					return fmt.Errorf("stderr so far: %q", c.stderr.String())
				}
				return nil
			})
			waitFor(t, 30*time.Second, "the session to report the replacement", func() error {
				if !strings.Contains(c.stderr.String(), "serves the session") {
					return fmt.Errorf("stderr so far: %q", c.stderr.String())
				}
				return nil
			})
			t.Logf("%s: new connections worked again %.2fs after the loss (%.2fs after the pod was gone; goal 10 s); %d failed requests",
				tt.name, back.Sub(lost).Seconds(), back.Sub(gone).Seconds(), strings.Count(c.stdout.String(), "fail "))
			c.stop()
			if err := <-c.exited; err != nil {
				t.Fatalf("the session did not end cleanly after healing: %v\n%s", err, c.stderr.String())
			}
			log := c.stderr.String()
			for _, want := range []string{"proxy pod " + pod + " ", "starting " + pod + "-1", "new proxy pod " + pod + "-1 serves the session"} {
				if !strings.Contains(log, want) {
					t.Errorf("stderr lacks %q:\n%s", want, log)
				}
			}
			if n := strings.Count(log, "kubectl-tp: "); n > 8 {
				t.Errorf("%d log lines for one lost pod, want a few (one per state change):\n%s", n, log)
			}
			noPodsLeft(t, ns, 30*time.Second)
		})
	}
}

// TestRunEndsWhenPodCannotBeReplaced deletes the session's namespace: no replacement proxy pod can
// be created, so the session says why, stops the child and exits non-zero instead of spinning.
func TestRunEndsWhenPodCannotBeReplaced(t *testing.T) {
	ns := namespace(t)
	marker := filepath.Join(workDir, "doomed-"+randomSuffix())
	defer os.Remove(marker)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--", "sh", "-c", "touch "+marker+"; exec sleep 300")
	done := make(chan result, 1)
	go func() { done <- run(cmd) }()
	waitFor(t, 60*time.Second, "the child to start", func() error {
		_, err := os.Stat(marker)
		return err
	})
	deleted := time.Now()
	kubectl(t, "delete", "namespace", ns, "--wait=false")
	var r result
	select {
	case r = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("the session went on for 90 s after its namespace was deleted")
	}
	t.Logf("the session ended %.1fs after its namespace was deleted", time.Since(deleted).Seconds())
	if r.Code == 0 {
		t.Fatalf("a session whose proxy pod cannot be replaced exited 0: %s", r)
	}
	if !strings.Contains(r.Stderr, "no replacement can be created") || !strings.Contains(r.Stderr, "ending the session") {
		t.Errorf("stderr does not say why the session ended:\n%s", r.Stderr)
	}
	if n := strings.Count(r.Stderr, "kubectl-tp: "); n > 8 {
		t.Errorf("%d log lines, want a few:\n%s", n, r.Stderr)
	}
}

// TestRunSurvivesLongOutage takes the API server away for longer than --idle-timeout: podshim,
// hearing nothing, ends, and when the path is back the session finds its pod ended, starts a
// replacement and the child's new connections work again.
func TestRunSurvivesLongOutage(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	lp := &latency.Proxy{Target: "127.0.0.1:6443"}
	if err := lp.Start(); err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	kcfg := kubeconfigVia(t, lp.Addr())
	// --direct=false: the outage is of the API server, which the direct path would not cross.
	c := startRequestingChild(t, ns, "--kubeconfig", kcfg, "--idle-timeout", "10s", "--direct=false")
	pods := tpPods(t, ns)
	if len(pods) != 1 {
		t.Fatalf("want one proxy pod, got %v", pods)
	}
	pod, _, _ := strings.Cut(pods[0], "=")
	lp.SetDown(true)
	// The outage lasts until podshim, hearing nothing for --idle-timeout, has ended.
	waitFor(t, 90*time.Second, "pod "+pod+" to end by itself during the outage", func() error {
		if phase := kubectl(t, "get", "pod", "-n", ns, pod, "-o", "jsonpath={.status.phase}"); phase != "Succeeded" {
			return fmt.Errorf("phase %s", phase)
		}
		return nil
	})
	up := time.Now()
	lp.SetDown(false)
	var back time.Time
	waitFor(t, 90*time.Second, "an answer after the path came back", func() error {
		var ok bool
		if back, ok = c.okStartedAfter(up); !ok {
			return fmt.Errorf("stderr so far: %q", c.stderr.String())
		}
		return nil
	})
	t.Logf("new connections worked again %.2fs after the API server was back", back.Sub(up).Seconds())
	c.stop()
	if err := <-c.exited; err != nil {
		t.Fatalf("the session did not end cleanly: %v\n%s", err, c.stderr.String())
	}
	log := c.stderr.String()
	for _, want := range []string{"tunnel lost", "proxy pod " + pod + " ended", "new proxy pod " + pod + "-1 serves the session"} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, "kubectl-tp: "); n > 8 {
		t.Errorf("%d log lines for one outage, want a few:\n%s", n, log)
	}
}
