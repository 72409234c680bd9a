package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// watchdogObjects lists the swap watchdog's objects left in ns ("kind/name" each).
func watchdogObjects(t *testing.T, ns string) []string {
	t.Helper()
	out := kubectl(t, "get", "serviceaccounts,roles,rolebindings,pods", "-n", ns,
		"-l", "app.kubernetes.io/managed-by=kubectl-tp-watchdog", "-o", "name")
	return strings.Fields(out)
}

// noWatchdogLeft waits until the garbage collector has removed every object of the watchdog.
func noWatchdogLeft(t *testing.T, ns string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the swap watchdog's objects to be removed", func() error {
		if left := watchdogObjects(t, ns); len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
}

// TestSwapWatchdogRestores kills a swapping session with SIGKILL (a laptop that died) and runs no
// kubectl-tp command afterwards: the in-cluster watchdog restores the Deployment (replicas and
// annotations) once the proxy pod has ended by itself, within 60 s of the session going silent,
// and then every object of the watchdog is garbage-collected. Its Role names only what it needs.
func TestSwapWatchdogRestores(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	swapApp(t, ns, "api")
	cmd, stderr := startSwap(t, ns, localApp(""), "--idle-timeout", "10s")
	if strings.Contains(stderr.String(), "no swap watchdog") {
		t.Fatalf("the admin user got no watchdog:\n%s", stderr.String())
	}
	objs := watchdogObjects(t, ns)
	if len(objs) != 4 {
		t.Fatalf("want the watchdog's serviceaccount, role, rolebinding and pod, got %v", objs)
	}
	name := strings.TrimPrefix(objs[0], "serviceaccount/")
	rules := kubectl(t, "get", "role", name, "-n", ns, "-o", `jsonpath={range .rules[*]}{.resources[0]}:{.verbs}:{.resourceNames[0]}{"\n"}{end}`)
	for _, want := range []string{`deployments:["get","update"]:api`, `pods:["get","delete"]:tp-`, `serviceaccounts:["delete"]:` + name} {
		if !strings.Contains(rules, want) {
			t.Errorf("role %s lacks the rule %q (every rule limited by resourceNames):\n%s", name, want, rules)
		}
	}
	if got := replicas(t, ns, "api"); !strings.HasPrefix(got, "0 ") {
		t.Fatalf("the Deployment is not swapped: %q", got)
	}
	// status shows the session's watchdog, Pending at first, then Running.
	waitFor(t, 60*time.Second, "status to show the watchdog running", func() error {
		if st := tp(t, "status", "-n", ns); st.Code != 0 || !strings.Contains(st.Stdout, "WATCHDOG") || !strings.Contains(st.Stdout, "Running") {
			return fmt.Errorf("%s", st)
		}
		return nil
	})
	killed := time.Now()
	signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	waitFor(t, 90*time.Second, "the watchdog to restore deployment/api", func() error {
		if got := replicas(t, ns, "api"); got != "2 " {
			return fmt.Errorf("replicas and session: %q", got)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("deployment/api restored by the watchdog %.1fs after the session was killed (--idle-timeout 10s)", took.Seconds())
	if took > 60*time.Second {
		t.Errorf("restored %.0fs after the session went silent; the goal is 60 s", took.Seconds())
	}
	if ann := kubectl(t, "get", "deployment", "api", "-n", ns, "-o", "jsonpath={.metadata.annotations}"); strings.Contains(ann, "kubectl-tp.io/swap") {
		t.Errorf("swap annotations left after the restore: %s", ann)
	}
	noWatchdogLeft(t, ns, 60*time.Second)
	noPodsLeft(t, ns, 60*time.Second)
	// The watchdog cannot reach the dead laptop's copy of the Deployment's volumes (secrets): the
	// next kubectl-tp command there removes it.
	session := strings.TrimSuffix(strings.TrimPrefix(name, "tp-"), "-watchdog")
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "kubectl-tp-"+session+"-*"))
	if len(stale) != 1 {
		t.Fatalf("want the killed session's volume copy, found %v", stale)
	}
	if c := tp(t, "cleanup", "-n", ns); c.Code != 0 {
		t.Fatalf("cleanup: %s", c)
	}
	if _, err := os.Stat(stale[0]); !os.IsNotExist(err) {
		t.Errorf("the killed session's volume copy %s is still there (err %v)", stale[0], err)
	}
}

// TestSwapResumedAfterRestore stops a swapping session (SIGSTOP: a laptop that went to sleep) until
// its watchdog has restored the Deployment, then lets it go on (SIGCONT): the session must not take
// the traffic back. It says the Deployment was restored, ends with a non-zero exit code, and leaves
// the Deployment restored, with no proxy pod and no watchdog behind.
func TestSwapResumedAfterRestore(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	client := swapApp(t, ns, "api")
	// Other local ports than TestSwapWatchdogRestores, which runs at the same time.
	cmd, stderr := startSwap(t, ns, localApp("-http=127.0.0.1:38180 -health=127.0.0.1:39100"),
		"--idle-timeout", "10s", "--expose", "38180:38080", "--expose", "39100:39000")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	signalTree(t, cmd.Process.Pid, syscall.SIGSTOP)
	asleep := time.Now()
	waitFor(t, 90*time.Second, "the watchdog to restore deployment/api", func() error {
		if got := replicas(t, ns, "api"); got != "2 " {
			return fmt.Errorf("replicas and session: %q", got)
		}
		return nil
	})
	restored := time.Since(asleep)
	signalTree(t, cmd.Process.Pid, syscall.SIGCONT)
	var err error
	select {
	case err = <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the resumed session did not end:\n%s", stderr.String())
	}
	if err == nil {
		t.Errorf("the resumed session exited 0; want non-zero after losing its swap:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "deployment/api was restored meanwhile") {
		t.Errorf("the session did not say its swap was restored:\n%s", stderr.String())
	}
	if got := replicas(t, ns, "api"); got != "2 " {
		t.Errorf("after the resumed session ended: replicas and session = %q, want 2 and no annotation", got)
	}
	noPodsLeft(t, ns, 60*time.Second)
	noWatchdogLeft(t, ns, 60*time.Second)
	waitFor(t, 60*time.Second, "the Service to answer green", func() error {
		if got := inCluster(t, client, "http://api/color"); got != "green" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	t.Logf("restored %.1fs after the session went silent (--idle-timeout 10s); the resumed session ended: %v", restored.Seconds(), err)
}
