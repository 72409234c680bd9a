package e2e

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// directPort is the proxy pod's direct-path port, as the README documents it.
const directPort = 4749

// rejectDirect makes this machine refuse its own TCP packets to port directPort of dst (a pod IP
// or CIDR), established connections included, until the test ends: a firewall or NetworkPolicy
// between the laptop and the pod network.
func rejectDirect(t *testing.T, dst string) {
	t.Helper()
	rule := []string{"OUTPUT", "-d", dst, "-p", "tcp", "--dport", strconv.Itoa(directPort), "-m", "comment", "--comment", "kubectl-tp e2e " + t.Name(), "-j", "REJECT", "--reject-with", "tcp-reset"}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %s: %v: %s", strings.Join(rule, " "), err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
			t.Errorf("iptables -D: %v: %s", err, out)
		}
	})
}

// wantGreenSilently lets the session's child make its request and wants "green" back, with no
// warning or error said about what (a choice the session made by itself).
func wantGreenSilently(t *testing.T, s *trSession, what string) {
	t.Helper()
	s.release(t)
	r := s.wait(t)
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "green" {
		t.Fatalf("a request through the session: %s", r)
	}
	if strings.Contains(r.Stderr, "warning") || strings.Contains(r.Stderr, "error") {
		t.Errorf("%s must be silent:\n%s", what, r.Stderr)
	}
}

// TestDirectPath: where the pod network is reachable (this cluster's), the tunnel goes straight
// to the proxy pod over TLS, and the start-up line says so; --direct=false, or a path that is
// blocked, uses the API server's port-forward without a visible error; a direct path that breaks
// during the session gives way to the port-forward with one line, and new connections work again.
func TestDirectPath(t *testing.T) {
	tests := []struct {
		name    string
		flags   []string
		block   bool // reject the pod network's direct port from the start
		wantVia string
	}{
		{"reachable: direct", nil, false, "tunnel: direct to "},
		{"--direct=false", []string{"--direct=false"}, false, "tunnel: API server port-forward"},
		{"blocked: port-forward", nil, true, "tunnel: API server port-forward"},
	}
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	// The pod network, as the /16 around a pod's IP (the next proxy pod's IP is not known yet).
	webIP, err := netip.ParseAddr(strings.TrimSpace(kubectl(t, "get", "pods", "-n", ns, "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}")))
	if err != nil {
		t.Fatal(err)
	}
	podNet := netip.PrefixFrom(webIP, 16).Masked().String()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.block {
				rejectDirect(t, podNet)
			}
			s := startTrSession(t, ns, tt.flags, `curl -s --max-time 10 http://web:8080/color`)
			if !strings.Contains(s.Mode, tt.wantVia) {
				t.Fatalf("start-up line %q, want %q", s.Mode, tt.wantVia)
			}
			if tt.wantVia == "tunnel: direct to " && !strings.Contains(s.Mode, fmt.Sprintf("direct to %s:%d (TLS)", s.PodIP, directPort)) {
				t.Errorf("the direct path is not the proxy pod's IP %s: %q", s.PodIP, s.Mode)
			}
			wantGreenSilently(t, s, "the path choice")
		})
	}
	t.Run("breaks during the session", func(t *testing.T) {
		c := startRequestingChild(t, ns)
		pods := tpPods(t, ns)
		if len(pods) != 1 {
			t.Fatalf("want one proxy pod, got %v", pods)
		}
		pod, _, _ := strings.Cut(pods[0], "=")
		podIP := strings.TrimSpace(kubectl(t, "get", "pod", "-n", ns, pod, "-o", "jsonpath={.status.podIP}"))
		broken := time.Now()
		rejectDirect(t, podIP)
		waitFor(t, 60*time.Second, "the session to leave the broken direct path", func() error {
			if !strings.Contains(c.stderr.String(), "direct path to "+podIP) {
				return fmt.Errorf("stderr so far: %q", c.stderr.String())
			}
			return nil
		})
		var back time.Time
		waitFor(t, 60*time.Second, "an answer through the port-forward", func() error {
			var ok bool
			if back, ok = c.okStartedAfter(broken); !ok {
				return fmt.Errorf("stderr so far: %q", c.stderr.String())
			}
			return nil
		})
		t.Logf("new connections worked again %.2fs after the direct path was cut; %d failed requests", back.Sub(broken).Seconds(), strings.Count(c.stdout.String(), "fail "))
		c.stop()
		if err := <-c.exited; err != nil {
			t.Fatalf("the session did not end cleanly: %v\n%s", err, c.stderr.String())
		}
	})
}
