package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// swapApp deploys Deployment+Service `name` (2 replicas, ports 38080 http and 39000 health) and an
// in-cluster client pod; it returns the local port of a port-forward to the client, whose /fetch
// makes requests from inside the cluster.
func swapApp(t *testing.T, ns, name string) int {
	t.Helper()
	return swapAppArgs(t, ns, name)
}

// swapAppArgs is swapApp with extra arguments for the app's containers.
func swapAppArgs(t *testing.T, ns, name string, extra ...string) int {
	t.Helper()
	args := yamlArgs(`"-http=:38080", "-health=:39000", "-https=", "-echo="`, extra)
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: ConfigMap
metadata: {name: %[1]s-config}
data: {MODE: swapped-test}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: [%[3]s]
        env: [{name: COLOR, value: green}]
        envFrom: [{configMapRef: {name: %[1]s-config}}]
        ports: [{name: http, containerPort: 38080}, {name: health, containerPort: 39000}]
        volumeMounts: [{name: config, mountPath: /etc/app}]
        readinessProbe: {httpGet: {path: /healthz, port: 39000}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
      volumes: [{name: config, configMap: {name: %[1]s-config}}]
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 80, targetPort: 38080}, {name: health, port: 39000}]
`, name, testappImage, args))
	kubectl(t, "rollout", "status", "-n", ns, "deployment/"+name, "--timeout=120s")
	client := clientPod(t, ns, name+"-client")
	// A rolled-out Deployment is not yet a programmed Service: wait until kube-proxy routes it.
	waitFor(t, 30*time.Second, "Service "+name+" to answer in the cluster", func() error {
		if got := inCluster(t, client, "http://"+name+"/color"); got != "green" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	return client
}

// startSwap runs `kubectl tp run -n ns --swap-deployment api FLAGS -- sh -c "exec APP"` and waits
// until the swap has taken the Deployment's traffic (its "scaled to 0" line). The session's
// stderr is returned for the test to read while it runs.
func startSwap(t *testing.T, ns, app string, flags ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	args := append(append([]string{"run", "-n", ns, "--swap-deployment", "api"}, flags...), "--", "sh", "-c", "exec "+app)
	cmd := tpCmd(ctx, args...)
	stderr := new(syncBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the swap to take the Deployment's traffic", func() error {
		if !strings.Contains(stderr.String(), "scaled to 0") {
			return fmt.Errorf("stderr: %q", stderr.String())
		}
		return nil
	})
	return cmd, stderr
}

// yamlArgs appends extra, quoted, to base, the items of a YAML flow sequence.
func yamlArgs(base string, extra []string) string {
	for _, a := range extra {
		base += fmt.Sprintf(", %q", a)
	}
	return base
}

// clientPod starts the test app as pod ns/name, an in-cluster HTTP client, and returns the local
// port of a port-forward to it: GET /fetch?url=U there fetches U from inside the cluster.
func clientPod(t *testing.T, ns, name string, extra ...string) int {
	t.Helper()
	args := yamlArgs(`"-http=:8080", "-https=", "-echo=", "-health=:8081"`, extra)
	apply(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: app
    image: %s
    imagePullPolicy: IfNotPresent
    args: [%s]
    readinessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1}
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
`, name, testappImage, args))
	kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	return portForward(t, ns, "pod/"+name, 8080)
}

// inCluster fetches url from inside the cluster (through the client pod) and returns the body, or
// the error text.
func inCluster(t *testing.T, clientPort int, url string) string {
	t.Helper()
	code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/fetch?url=%s", clientPort, url))
	if code != 200 {
		return fmt.Sprintf("HTTP %d: %s", code, strings.TrimSpace(body))
	}
	return strings.TrimSpace(body)
}

func replicas(t *testing.T, ns, name string) string {
	t.Helper()
	return kubectl(t, "get", "deployment", name, "-n", ns, "-o", `jsonpath={.spec.replicas} {.metadata.annotations.kubectl-tp\.io/swap-session}`)
}

// localApp is the command line of the "local version" of the service: the test app answering blue.
func localApp(extra string) string {
	return filepath.Join(workDir, "testapp") + ` -http=127.0.0.1:38080 -health=127.0.0.1:39000 -https= -echo= -color=blue ` + extra
}

// TestSwapDeployment swaps a Deployment for a local process: in-cluster clients reach the local
// process through the Service name and through the pod IP on both ports, the child sees the
// Deployment's env and volumes, and after exit the Deployment is back as it was.
func TestSwapDeployment(t *testing.T) {
	ns := namespace(t)
	client := swapApp(t, ns, "api")
	if got := inCluster(t, client, "http://api/color"); got != "green" {
		t.Fatalf("before the swap: %q", got)
	}
	ready := filepath.Join(workDir, "swap-ready-"+randomSuffix())
	script := `echo "MODE=$MODE CONFIG=$(cat "$TP_ROOT/etc/app/MODE")" > ` + ready + `.tmp; mv ` + ready + `.tmp ` + ready + `; exec ` + localApp("")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--swap-deployment", "api", "--", "sh", "-c", script)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the local app to start", func() error { _, err := os.Stat(ready); return err })
	defer os.Remove(ready)
	// First in-cluster request served locally.
	waitFor(t, 60*time.Second, "the Service to answer blue", func() error {
		if got := inCluster(t, client, "http://api/color"); got != "blue" {
			out, _ := kubectlErr("get", "pods,endpointslices", "-n", ns, "-o", "wide")
			return fmt.Errorf("got %q\n%s\n%s", got, out, stderr.String())
		}
		return nil
	})
	t.Logf("first in-cluster request served locally %.2fs after the command started", time.Since(start).Seconds())
	// The replaced pods may still be terminating, and the test app exits at once on SIGTERM: until
	// kube-proxy drops them, a Service request can be sent to a pod IP that no longer exists and hang
	// (cluster behaviour, not the tunnel's). The checks below are about the swapped state, so they
	// start once those pods (the ones with a ReplicaSet's pod-template-hash) are gone.
	waitFor(t, 60*time.Second, "the replaced pods to be gone", func() error {
		out, err := kubectlErr("get", "pods", "-n", ns, "-l", "pod-template-hash", "-o", "jsonpath={.items[*].metadata.name}")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if names := strings.TrimSpace(out); names != "" {
			return fmt.Errorf("still terminating: %s", names)
		}
		return nil
	})
	// Gone from the API is not yet gone from kube-proxy's rules, which a loaded node applies a
	// moment later: until then a request to the Service can still be sent to a vanished pod IP
	// and hang. The Service answering from the proxy pod again marks the end of that.
	waitFor(t, 60*time.Second, "kube-proxy to route the Service to the proxy pod only", func() error {
		for range 3 {
			if got := inCluster(t, client, "http://api/color"); got != "blue" {
				return fmt.Errorf("got %q", got)
			}
		}
		return nil
	})
	env, _ := os.ReadFile(ready)
	if strings.TrimSpace(string(env)) != "MODE=swapped-test CONFIG=swapped-test" {
		t.Errorf("child did not see the Deployment's env and volumes: %q", env)
	}
	if got := replicas(t, ns, "api"); !strings.HasPrefix(got, "0 ") || len(got) < 4 {
		t.Errorf("during the swap: replicas and session = %q, want 0 and a session id", got)
	}
	podIP := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/managed-by=kubectl-tp", "-o", "jsonpath={.items[0].status.podIP}")
	cases := []struct{ name, url, want string }{
		{"service name, port 80 → 38080", "http://api/color", "blue"},
		{"service FQDN, second port", "http://api." + ns + ".svc.cluster.local:39000/healthz", "ok"},
		{"pod IP, first port", "http://" + podIP + ":38080/color", "blue"},
		{"pod IP, second port", "http://" + podIP + ":39000/healthz", "ok"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := inCluster(t, client, tc.url); got != tc.want {
				slices, _ := kubectlErr("get", "endpointslices,pods", "-n", ns, "-o", "wide")
				t.Fatalf("GET %s from the cluster = %q, want %q\n%s\n%s", tc.url, got, tc.want, slices, stderr.String())
			}
		})
	}
	stopAt := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if got := replicas(t, ns, "api"); got != "2 " {
		t.Fatalf("after exit: replicas and session = %q, want 2 and no annotation\n%s", got, stderr.String())
	}
	t.Logf("Deployment restored %.2fs after SIGTERM", time.Since(stopAt).Seconds())
	noPodsLeft(t, ns, 20*time.Second)
	noWatchdogLeft(t, ns, 60*time.Second)
	kubectl(t, "rollout", "status", "-n", ns, "deployment/api", "--timeout=120s")
	waitFor(t, 30*time.Second, "the Service to answer green again", func() error {
		if got := inCluster(t, client, "http://api/color"); got != "green" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

// TestSwapCrashThenCleanup kills the plugin with SIGKILL during a swap: podshim stops by itself and
// `kubectl tp cleanup` restores the Deployment; a second swap while one is live is refused.
func TestSwapCrashThenCleanup(t *testing.T) {
	ns := namespace(t)
	swapApp(t, ns, "api")
	cmd, _ := startSwap(t, ns, localApp(""))
	// A second session on the same Deployment is refused while the first lives.
	r := tp(t, "run", "-n", ns, "--swap-deployment", "api", "--", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "already swapped by a live session") {
		t.Errorf("second swap: want a clear refusal naming the live session\n%s", r)
	}
	// status lists the live session and the Deployment it holds.
	if st := tp(t, "status", "-n", ns, "-o", "json"); st.Code != 0 || !strings.Contains(st.Stdout, `"swappedDeployment": "api"`) {
		t.Errorf("status: %s", st)
	}
	pods := tpPods(t, ns)
	if len(pods) != 1 {
		t.Fatalf("want one proxy pod, got %v", pods)
	}
	session := strings.TrimPrefix(strings.SplitN(pods[0], "=", 2)[0], "tp-")
	// Without its watchdog (TestSwapWatchdogRestores covers that), the dead session's swap waits for
	// cleanup.
	kubectl(t, "delete", "serviceaccount", "-n", ns, "tp-"+session+"-watchdog")
	noWatchdogLeft(t, ns, 60*time.Second)
	signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	// The killed session could not remove its copy of the Deployment's volumes (secrets).
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "kubectl-tp-"+session+"-*"))
	if len(stale) != 1 {
		t.Fatalf("want the killed session's volume copy in %s, found %v", os.TempDir(), stale)
	}
	if got := replicas(t, ns, "api"); !strings.HasPrefix(got, "0 ") {
		t.Fatalf("right after the crash the Deployment should still be swapped, got %q", got)
	}
	waitFor(t, 60*time.Second, "the orphaned proxy pod to end by itself", func() error {
		for _, p := range tpPods(t, ns) {
			if !strings.HasSuffix(p, "=Succeeded") {
				return fmt.Errorf("pods: %v", tpPods(t, ns))
			}
		}
		return nil
	})
	c := tp(t, "cleanup", "-n", ns)
	if c.Code != 0 || !strings.Contains(c.Stdout, "deployment/api in "+ns+": restored to 2 replicas") {
		t.Fatalf("cleanup: %s", c)
	}
	if got := replicas(t, ns, "api"); got != "2 " {
		t.Fatalf("after cleanup: %q", got)
	}
	if _, err := os.Stat(stale[0]); !os.IsNotExist(err) {
		t.Errorf("cleanup left the dead session's volume copy %s (err %v)\n%s", stale[0], err, c)
	}
	noPodsLeft(t, ns, 20*time.Second)
}

// TestSwapSignals interrupts swap sessions at random moments of start-up, run and shut-down: every
// time the Deployment ends up with its replicas and without swap annotations, and no pod is left.
func TestSwapSignals(t *testing.T) {
	ns := namespace(t)
	swapApp(t, ns, "api")
	rounds := signalRounds(t, 30)
	sigs := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	for i := range rounds {
		sig := sigs[i%len(sigs)]
		delay := time.Duration(rand.IntN(3000)) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--swap-deployment", "api", "--", "sleep", "1")
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Signal(sig)
		_ = cmd.Wait()
		cancel()
		if got := replicas(t, ns, "api"); got != "2 " {
			t.Fatalf("round %d (%s after %s): replicas and session = %q, want \"2 \"", i, sig, delay, got)
		}
		t.Logf("round %d: %s after %s → exit %d, restored", i, sig, delay, cmd.ProcessState.ExitCode())
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestExposeRestrictedPort80 exposes port 80 from a proxy pod in a namespace that enforces Pod
// Security "restricted", and checks that a connection while nothing listens locally leaves the
// session up.
func TestExposeRestrictedPort80(t *testing.T) {
	ns := namespace(t, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
	client := swapApp(t, ns, "api")
	ready := filepath.Join(workDir, "expose-ready-"+randomSuffix())
	script := `touch ` + ready + `; exec ` + localApp("")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--expose", "38080:80", "--expose", "38099:8099", "--", "sh", "-c", script)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the session's stderr:\n%s", stderr.String())
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); <-exited }()
	waitFor(t, 60*time.Second, "the local app", func() error { _, err := os.Stat(ready); return err })
	defer os.Remove(ready)
	podIP := kubectl(t, "get", "pods", "-n", ns, "-l", "app.kubernetes.io/managed-by=kubectl-tp", "-o", "jsonpath={.items[0].status.podIP}")
	waitFor(t, 20*time.Second, "port 80 of the proxy pod", func() error {
		if got := inCluster(t, client, "http://"+podIP+":80/color"); got != "blue" {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
	// Nothing listens on local port 38099: the in-cluster client gets an error, the session lives.
	if got := inCluster(t, client, "http://"+podIP+":8099/color"); !strings.HasPrefix(got, "HTTP 502") {
		t.Errorf("port with no local listener: got %q, want a failed fetch", got)
	}
	if got := inCluster(t, client, "http://"+podIP+":80/color"); got != "blue" {
		t.Errorf("after a refused inbound connection the session should still serve: %q\n%s", got, stderr.String())
	}
	select {
	case <-exited:
		t.Fatalf("the session ended after a refused inbound connection: %s", stderr.String())
	default:
	}
}
