package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// interceptClient starts pod ns/client (the test app), from which requestsIn sends requests.
func interceptClient(t *testing.T, ns string) {
	t.Helper()
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: app
    image: %s
    imagePullPolicy: IfNotPresent
    args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
`, testappImage))
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pod/client", "--timeout=120s")
}

// requestsIn sends, from pod ns/client, one request per spec ("NAME=VALUE" or "-" for none) over
// one connection (HTTP/1.1 kept alive, or HTTP/2 in cleartext with h2) and returns the answers,
// comma-separated, or the error.
func requestsIn(ns string, h2 bool, url string, specs ...string) string {
	args := []string{"exec", "-n", ns, "client", "--", "/testapp", "requests"}
	if h2 {
		args = append(args, "-h2")
	}
	out, err := kubectlErr(append(append(args, url), specs...)...)
	if err != nil {
		return "error: " + strings.TrimSpace(out)
	}
	return strings.Join(strings.Fields(out), ",")
}

// startIntercept starts `kubectl tp run --intercept ... -- testapp` serving color on local port
// and waits for its start-up line.
func startIntercept(t *testing.T, ns, color string, port int, flags ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd, stderr := launchIntercept(t, ns, color, port, flags...)
	waitStarted(t, stderr)
	return cmd, stderr
}

// waitStarted waits for an intercept session's start-up line.
func waitStarted(t *testing.T, stderr *syncBuffer) {
	t.Helper()
	waitFor(t, 90*time.Second, "the intercept to start", func() error {
		if !strings.Contains(stderr.String(), "kubectl-tp: intercept:") {
			return fmt.Errorf("stderr: %q", stderr.String())
		}
		return nil
	})
}

// launchIntercept starts `kubectl tp run --intercept ... -- testapp` without waiting.
func launchIntercept(t *testing.T, ns, color string, port int, flags ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	args := append(append([]string{"run", "-n", ns}, flags...), "--", "testapp",
		fmt.Sprintf("-http=127.0.0.1:%d", port), "-https=", "-echo=", "-health=", "-color="+color)
	cmd := tpCmd(ctx, args...)
	stderr := new(syncBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	return cmd, stderr
}

// serviceState is the part of Service ns/name that an intercept changes and must give back.
func serviceState(t *testing.T, ns, name string) string {
	t.Helper()
	var svc struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "service", "-n", ns, name, "-o", "json")), &svc); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(svc)
	return string(b)
}

// TestInterceptTwoDevelopers: alice and bob intercept Service web with their own headers. From a
// pod in the cluster, requests with x-dev=alice reach alice's local process, x-dev=bob bob's, and
// requests without it the real pods — per request on one kept-alive HTTP/1.1 connection, and per
// stream on one HTTP/2 (h2c, as gRPC) connection. A third session with alice's header is refused
// naming her. kill -9 of alice's session sends her requests back to the real pods (the time is
// logged) while bob's intercept keeps working; when bob ends, the Service is exactly what it was
// and the router and shadow Service are gone. Alice reaches the router over the direct path (this
// cluster's pod network is reachable), bob with --direct=false through the API server.
func TestInterceptTwoDevelopers(t *testing.T) {
	// The router pod must be admitted under Pod Security "restricted".
	ns := namespace(t, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
	webApp(t, ns, "web", "real")
	interceptClient(t, ns)
	before := serviceState(t, ns, "web")
	url := "http://web:8080/color"

	// Both start at the same moment: one creates the router, the other joins it.
	alice, aliceErr := launchIntercept(t, ns, "alice", 18401, "--intercept", "web:8080", "--header", "x-dev=alice", "--expose", "18401:8080")
	bob, bobErr := launchIntercept(t, ns, "bob", 18402, "--intercept", "web:http", "--header", "X-Dev=bob", "--expose", "18402:8080", "--direct=false")
	waitStarted(t, aliceErr)
	waitStarted(t, bobErr)
	routerIP := strings.TrimSpace(kubectl(t, "get", "pods", "-n", ns, "-l", "kubectl-tp.io/router=web", "-o", "jsonpath={.items[0].status.podIP}"))
	for _, c := range []struct {
		who    string
		stderr *syncBuffer
		want   string
	}{
		{"alice", aliceErr, fmt.Sprintf("; to the router: direct to %s:%d (TLS)", routerIP, directPort)},
		{"bob", bobErr, "; to the router: API server port-forward (SPDY)"},
	} {
		if !strings.Contains(c.stderr.String(), c.want) {
			t.Errorf("%s's intercept line does not say %q:\n%s", c.who, c.want, c.stderr.String())
		}
	}
	waitFor(t, 60*time.Second, "both intercepts to answer", func() error {
		if got := requestsIn(ns, false, url, "x-dev=alice", "-", "x-dev=bob"); got != "alice,real,bob" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	for _, c := range []struct {
		name  string
		h2    bool
		specs []string
		want  string
	}{
		{"HTTP/1.1 kept alive, mixed", false, []string{"x-dev=bob", "x-dev=alice", "-", "x-dev=carol", "x-dev=alice"}, "bob,alice,real,real,alice"},
		{"h2c streams, mixed", true, []string{"x-dev=alice", "-", "x-dev=bob", "x-dev=alice"}, "alice,real,bob,alice"},
	} {
		if got := requestsIn(ns, c.h2, url, c.specs...); got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}

	clash := tp(t, "run", "-n", ns, "--intercept", "web", "--header", "x-dev=alice", "--", "true")
	if clash.Code == 0 || !strings.Contains(clash.Stderr, "X-Dev=alice are already intercepted by tp-e2e@") {
		t.Errorf("a second session with alice's header was not refused naming her: %s", clash)
	}

	killed := time.Now()
	signalTree(t, alice.Process.Pid, syscall.SIGKILL)
	_ = alice.Wait()
	waitFor(t, 60*time.Second, "alice's requests to go back to the real pods", func() error {
		if got := requestsIn(ns, false, url, "x-dev=alice"); got != "real" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	t.Logf("after kill -9, alice's requests reached the real pods again after %.1f s (goal: 10 s)", time.Since(killed).Seconds())
	if got := requestsIn(ns, false, url, "x-dev=bob", "-"); got != "bob,real" {
		t.Errorf("bob's intercept after alice's crash: %s", got)
	}

	_ = bob.Process.Signal(syscall.SIGTERM)
	if err := bob.Wait(); err != nil {
		t.Logf("bob's session: %v\n%s", err, bobErr)
	}
	if !strings.Contains(bobErr.String(), "service/web restored") {
		t.Errorf("the last session did not restore the Service:\n%s", bobErr)
	}
	if after := serviceState(t, ns, "web"); after != before {
		t.Errorf("service/web differs after the intercepts:\nbefore %s\nafter  %s", before, after)
	}
	waitFor(t, 30*time.Second, "every request to reach the real pods after both ended", func() error {
		if got := requestsIn(ns, false, url, "x-dev=bob", "x-dev=alice", "-"); got != "real,real,real" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	waitFor(t, 60*time.Second, "the router and shadow Service to go", func() error {
		out, _ := kubectlErr("get", "pods,services,serviceaccounts,roles,rolebindings", "-n", ns, "-l", "kubectl-tp.io/router", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
}

// TestInterceptAllTraffic: an intercept without --header takes every request and every
// connection of the port (raw TCP too), while the real pods keep running; when it ends the
// Service is restored. A new intercept started the moment the first ended (its router still on
// its way out) gets a router of its own.
func TestInterceptAllTraffic(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "real")
	interceptClient(t, ns)
	before := serviceState(t, ns, "web")
	cmd, stderr := startIntercept(t, ns, "mine", 18403, "--intercept", "web:8080", "--expose", "18403:8080")
	waitFor(t, 60*time.Second, "the intercept to answer", func() error {
		if got := requestsIn(ns, false, "http://web:8080/color", "-", "x-dev=alice"); got != "mine,mine" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	if got := requestsIn(ns, true, "http://web:8080/color", "-"); got != "mine" {
		t.Errorf("h2c: %s", got)
	}
	if n := kubectl(t, "get", "deployment", "-n", ns, "web", "-o", "jsonpath={.status.readyReplicas}"); n != "1" {
		t.Errorf("the real pods stopped: ready %q", n)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if after := serviceState(t, ns, "web"); after != before {
		t.Errorf("service/web differs after the intercept:\nbefore %s\nafter  %s\n%s", before, after, stderr)
	}
	// At once again: the retired router's pod and objects are still being collected.
	cmd, stderr = startIntercept(t, ns, "again", 18403, "--intercept", "web:8080", "--expose", "18403:8080")
	waitFor(t, 60*time.Second, "the second intercept to answer", func() error {
		if got := requestsIn(ns, false, "http://web:8080/color", "-"); got != "again" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if after := serviceState(t, ns, "web"); after != before {
		t.Errorf("service/web differs after the second intercept:\nbefore %s\nafter  %s\n%s", before, after, stderr)
	}
	waitFor(t, 60*time.Second, "the router and shadow Service to go", func() error {
		out, _ := kubectlErr("get", "pods,services,serviceaccounts,roles,rolebindings", "-n", ns, "-l", "kubectl-tp.io/router", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
}

// TestInterceptBadInput: each mistake is one clear line, a non-zero exit, and nothing left.
func TestInterceptBadInput(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "real")
	apply(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{port: 80}]
`)
	before := serviceState(t, ns, "web")
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no such Service", []string{"--intercept", "nope"}, "service/nope not found in namespace"},
		{"Service without selector", []string{"--intercept", "manual"}, "service/manual has no selector"},
		{"port it does not have", []string{"--intercept", "web:1234"}, "service/web has no port 1234; its TCP ports: 8080 (http), 8443 (https), 9000 (echo)"},
		{"malformed header", []string{"--intercept", "web", "--header", "x-dev"}, `header "x-dev" has no '='`},
		{"header without intercept", []string{"--header", "x-dev=a"}, "--header needs --intercept"},
		{"with a swap", []string{"--intercept", "web", "--swap-deployment", "web"}, "use one of them"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tp(t, append(append([]string{"run", "-n", ns}, c.args...), "--", "true")...)
			if r.Code == 0 || !strings.Contains(r.Stderr, c.stderr) {
				t.Fatalf("want a non-zero exit and %q\n%s", c.stderr, r)
			}
			if lines := strings.Split(strings.TrimSpace(r.Stderr), "\n"); !strings.HasPrefix(lines[len(lines)-1], "kubectl tp: ") {
				t.Errorf("the error is not the last line: %s", r.Stderr)
			}
		})
	}
	noPodsLeft(t, ns, 30*time.Second)
	if after := serviceState(t, ns, "web"); after != before {
		t.Errorf("service/web changed: %s", after)
	}
	if out, _ := kubectlErr("get", "pods,services,serviceaccounts", "-n", ns, "-l", "kubectl-tp.io/router", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind: %s", out)
	}
}

// TestInterceptSessionsDie: with no command run by anyone, intercepts of dead sessions end. A
// session whose laptop goes silent (SIGSTOP: its connections stay open, nothing more is heard)
// loses its requests to the real pods (the time is logged; the router drops a registration 9 s
// after its last ping); once every session is dead (kill -9), the router gives the Service its
// own selector back and removes itself, its shadow Service and its RBAC objects.
func TestInterceptSessionsDie(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	webApp(t, ns, "web", "real")
	interceptClient(t, ns)
	before := serviceState(t, ns, "web")
	url := "http://web:8080/color"
	cmd, _ := startIntercept(t, ns, "carol", 18404, "--intercept", "web", "--header", "x-dev=carol", "--expose", "18404:8080")
	waitFor(t, 60*time.Second, "the intercept to answer", func() error {
		if got := requestsIn(ns, false, url, "x-dev=carol", "-"); got != "carol,real" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	silent := time.Now()
	signalTree(t, cmd.Process.Pid, syscall.SIGSTOP)
	waitFor(t, 60*time.Second, "the silent session's requests to go to the real pods", func() error {
		if got := requestsIn(ns, false, url, "x-dev=carol"); got != "real" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
	t.Logf("a silent session's requests reached the real pods again %.1f s after it went silent (goal: 10 s)", time.Since(silent).Seconds())
	signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	died := time.Now()
	waitFor(t, 90*time.Second, "the router to restore service/web", func() error {
		if after := serviceState(t, ns, "web"); after != before {
			return fmt.Errorf("service/web is %s", after)
		}
		return nil
	})
	t.Logf("service/web restored by its router %.1f s after the last session died", time.Since(died).Seconds())
	waitFor(t, 60*time.Second, "the router and shadow Service to go", func() error {
		out, _ := kubectlErr("get", "pods,services,serviceaccounts,roles,rolebindings", "-n", ns, "-l", "kubectl-tp.io/router", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
	waitFor(t, 30*time.Second, "every request to reach the real pods after the restore", func() error {
		if got := requestsIn(ns, false, url, "x-dev=carol", "-"); got != "real,real" {
			return fmt.Errorf("got %s", got)
		}
		return nil
	})
}
