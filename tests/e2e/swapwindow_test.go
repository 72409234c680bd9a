package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// probeStats is what the prober pod (testapp -probe) serves at GET /probe.
type probeStats struct {
	OK     int            `json:"ok"`
	Bodies map[string]int `json:"bodies"`
	Failed []string       `json:"failed"`
}

// readProbe reads (and with reset, restarts) the prober's counts through its port-forward.
func readProbe(t *testing.T, port int, reset bool) probeStats {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/probe", port)
	if reset {
		u += "?reset=1"
	}
	code, body := httpGet(t, u)
	var st probeStats
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("GET /probe: HTTP %d %q", code, body)
	}
	return st
}

// waitProbe waits until the prober has counted at least n answers of body since the last read.
func waitProbe(t *testing.T, port int, body string, n int, what string) probeStats {
	t.Helper()
	var total probeStats
	total.Bodies = map[string]int{}
	waitFor(t, 2*time.Minute, what, func() error {
		st := readProbe(t, port, true)
		total.OK += st.OK
		total.Failed = append(total.Failed, st.Failed...)
		for k, v := range st.Bodies {
			total.Bodies[k] += v
		}
		if total.Bodies[body] < n {
			return fmt.Errorf("answers so far: %v, %d failed", total.Bodies, len(total.Failed))
		}
		return nil
	})
	return total
}

// TestSwapWindow measures the swap's switch from an in-cluster client that requests the Service
// every 50 ms, each request on a new connection, through the whole swap: start, run, and end on
// SIGTERM. With an app that keeps serving 2 s after SIGTERM, no request may fail; with one that
// exits at once, the failures are counted (the design cannot avoid them: kube-proxy still sends a
// few requests to pods that are gone) and kubectl-tp must have warned at start.
func TestSwapWindow(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
		// zeroFailures is the goal: true for the draining app.
		zeroFailures bool
	}{
		{"draining app", []string{"-drain=2s"}, true},
		{"abrupt app", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := namespace(t)
			swapAppArgs(t, ns, "api", tt.extra...)
			prober := clientPod(t, ns, "prober", "-probe=http://api/color")
			waitProbe(t, prober, "green", 20, "the prober to reach the Deployment")
			readProbe(t, prober, true)

			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			cmd := tpCmd(ctx, "run", "-n", ns, "--swap-deployment", "api", "--", "sh", "-c", "exec "+localApp(""))
			stderr := new(syncBuffer)
			cmd.Stderr = stderr
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the session's stderr:\n%s", stderr.String())
				}
			})
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			during := waitProbe(t, prober, "blue", 40, "in-cluster requests to reach the local app")
			// The Deployment's own pods must be gone, so that the window covers their whole stop.
			waitFor(t, 60*time.Second, "the replaced pods to be gone", func() error {
				out, err := kubectlErr("get", "pods", "-n", ns, "-l", "pod-template-hash", "-o", "jsonpath={.items[*].metadata.name}")
				if err != nil || strings.TrimSpace(out) != "" {
					return fmt.Errorf("still there: %q %v", out, err)
				}
				return nil
			})
			stopAt := time.Now()
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			werr := cmd.Wait()
			stopTook := time.Since(stopAt)
			if werr != nil {
				t.Errorf("the session did not end cleanly: %v\n%s", werr, stderr.String())
			}
			after := waitProbe(t, prober, "green", 40, "in-cluster requests to reach the Deployment again")
			all := probeStats{OK: during.OK + after.OK, Bodies: map[string]int{}, Failed: append(during.Failed, after.Failed...)}
			for _, st := range []probeStats{during, after} {
				for k, v := range st.Bodies {
					all.Bodies[k] += v
				}
			}
			for body := range all.Bodies {
				if body != "green" && body != "blue" {
					t.Errorf("an answer that is neither the Deployment's nor the local app's: %q", body)
				}
			}
			if !strings.Contains(stderr.String(), "have no preStop hook") {
				t.Errorf("no warning about the Deployment's missing preStop hook:\n%s", stderr.String())
			}
			if !strings.Contains(stderr.String(), "serves again") {
				t.Errorf("the session did not hand the Deployment back before stopping the command:\n%s", stderr.String())
			}
			t.Logf("%s: %d answers (%v), %d failed; the session took %.1fs to end after SIGTERM", tt.name, all.OK, all.Bodies, len(all.Failed), stopTook.Seconds())
			for _, f := range all.Failed {
				t.Logf("  failed: %s", f)
			}
			if tt.zeroFailures && len(all.Failed) > 0 {
				t.Errorf("%d requests failed during the swap of a draining app; want 0\n%s", len(all.Failed), stderr.String())
			}
		})
	}
}
