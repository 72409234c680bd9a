package e2e

// README claims checked on the real cluster (issue #13: every claim has a test that would catch
// it being false): SIGINT and SIGHUP reach the child and its death by signal N is exit code
// 128+N; a terminal's window-size changes reach the child; resourceFieldRef and Service-link
// variables come with --from; --start-timeout gives a clear error and leaves no pod; the next
// swap restores a swap left by a dead session.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestRunForwardsEachSignal checks README's "SIGINT, SIGTERM and SIGHUP are passed to the child"
// and "128+N when signal N ended it": each signal sent to kubectl-tp while the child runs kills
// a child that keeps the default action, kubectl-tp exits 128+N, and the pod is gone.
// (TestRunForwardsSignals covers SIGTERM caught by a trap.)
func TestRunForwardsEachSignal(t *testing.T) {
	ns := namespace(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			marker := filepath.Join(workDir, "signal-ready-"+randomSuffix())
			defer os.Remove(marker)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			// The default action, whatever the child inherited; the marker says it is set.
			cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--", "python3", "-c", fmt.Sprintf(
				"import signal, time\nsignal.signal(%d, signal.SIG_DFL)\nopen(%q, 'w').close()\ntime.sleep(600)\n", int(sig), marker))
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 60*time.Second, "the child to start", func() error {
				if cmd.ProcessState != nil {
					return fmt.Errorf("kubectl tp ended: %s", stderr.String())
				}
				_, err := os.Stat(marker)
				return err
			})
			_ = cmd.Process.Signal(sig)
			_ = cmd.Wait()
			if code, want := cmd.ProcessState.ExitCode(), 128+int(sig); code != want {
				t.Fatalf("exit code %d after %s, want %d\nstderr: %s", code, sig, want, stderr.String())
			}
		})
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunPTYResize runs the plugin in a terminal and resizes that terminal while the child runs:
// the child, in its own pseudo-terminal, must get SIGWINCH and see the new size, as full-screen
// programs (editors, debuggers, `top`) need. (TestRunPTY covers the size at start.)
func TestRunPTYResize(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child := `
import fcntl, os, signal, struct, sys, termios
def size():
    r, c = struct.unpack("hhhh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
    return "%d %d" % (r, c)
# os.write, not print: a handler that prints while the main thread is inside buffered I/O
# fails with "reentrant call".
signal.signal(signal.SIGWINCH, lambda *a: os.write(1, ("WINCH " + size() + "\r\n").encode()))
print("READY " + size(), flush=True)
sys.stdin.readline()
print("BYE", flush=True)
`
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--", "python3", "-c", child)
	ptmx := startInPTY(t, cmd)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(ptmx)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	var seen []string
	expect := func(want string) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the terminal closed without %q; saw %q", want, seen)
				}
				seen = append(seen, l)
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in the terminal; saw %q", want, seen)
			}
		}
	}
	expect("READY 33 101")
	// The kernel signals the terminal's foreground process group (kubectl-tp) of the change.
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	expect("WINCH 50 120")
	if _, err := io.WriteString(ptmx, "q\r"); err != nil {
		t.Fatal(err)
	}
	expect("BYE")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kubectl tp run in a terminal: %v; saw %q", err, seen)
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunFromResourceFieldRefAndServiceLinks checks README's --from: "the kubelet therefore
// resolves … `resourceFieldRef` and the Service-link variables exactly as for the real pod",
// "keeps the container's resource requests so `resourceFieldRef` values match", and the copy of
// downwardAPI volumes. The workload reads its CPU request and memory limit through env
// (without and with containerName, the form of the Kubernetes documentation) and through a
// downwardAPI volume (where containerName is required); a Service of the namespace gives
// *_SERVICE_HOST, *_SERVICE_PORT and *_PORT_N_TCP variables.
func TestRunFromResourceFieldRefAndServiceLinks(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 8181}]
`)
	backendIP := strings.TrimSpace(kubectl(t, "get", "service", "backend", "-n", ns, "-o", "jsonpath={.spec.clusterIP}"))
	links := fmt.Sprintf("HOST=%[1]s PORT=8181 HTTP=tcp://%[1]s:8181", backendIP)
	const linksScript = `HOST=$BACKEND_SERVICE_HOST PORT=$BACKEND_SERVICE_PORT HTTP=$BACKEND_PORT_8181_TCP`
	cases := []struct {
		name, deployment string
		// env, mounts and volumes are YAML flow sequences of the app container and the pod.
		env, mounts, volumes string
		script, want         string
	}{
		{
			name: "env resourceFieldRef without containerName", deployment: "plain",
			env: `[{name: CPU_REQUEST_MILLI, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}},
               {name: MEMORY_LIMIT_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}]`,
			mounts: "[]", volumes: "[]",
			script: `echo "CPU=$CPU_REQUEST_MILLI MEM=$MEMORY_LIMIT_MI ` + linksScript + `"`,
			want:   "CPU=250 MEM=96 " + links,
		},
		{
			name: "env resourceFieldRef with containerName", deployment: "named",
			env: `[{name: CPU_REQUEST_MILLI, valueFrom: {resourceFieldRef: {containerName: app, resource: requests.cpu, divisor: 1m}}},
               {name: MEMORY_LIMIT_MI, valueFrom: {resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}}]`,
			mounts: "[]", volumes: "[]",
			script: `echo "CPU=$CPU_REQUEST_MILLI MEM=$MEMORY_LIMIT_MI ` + linksScript + `"`,
			want:   "CPU=250 MEM=96 " + links,
		},
		{
			name: "downwardAPI volume with resourceFieldRef", deployment: "volume",
			env:    "[]",
			mounts: "[{name: podinfo, mountPath: /etc/podinfo}]",
			volumes: `[{name: podinfo, downwardAPI: {items: [
                 {path: cpu_request, resourceFieldRef: {containerName: app, resource: requests.cpu, divisor: 1m}},
                 {path: memory_limit, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}]}}]`,
			script: `echo "CPU=$(cat "$TP_ROOT/etc/podinfo/cpu_request") MEM=$(cat "$TP_ROOT/etc/podinfo/memory_limit") ` + linksScript + `"`,
			want:   "CPU=250 MEM=96 " + links,
		},
	}
	for _, tc := range cases {
		apply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
        resources:
          requests: {cpu: 250m, memory: 64Mi}
          limits: {memory: 96Mi}
        env: %[3]s
        volumeMounts: %[4]s
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}
      volumes: %[5]s
`, tc.deployment, testappImage, tc.env, tc.mounts, tc.volumes))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The real pod has what the proxy pod must reproduce.
			kubectl(t, "rollout", "status", "-n", ns, "deployment/"+tc.deployment, "--timeout=120s")
			r := tp(t, "run", "-n", ns, "--quiet", "--start-timeout", "30s", "--from", "deployment/"+tc.deployment, "--", "sh", "-c", tc.script)
			if r.Code != 0 {
				t.Fatalf("kubectl tp run --from deployment/%s: %s", tc.deployment, r)
			}
			if got := strings.TrimSpace(r.Stdout); got != tc.want {
				t.Errorf("the child saw %q, want %q", got, tc.want)
			}
		})
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunStartTimeoutLeavesNoPod checks README's `--start-timeout`: a proxy pod that does not
// run in time (here it waits for a Secret volume that does not exist, as a pod waits for a slow
// pull) ends the run with one clear line naming the timeout, a non-zero exit code, the command
// not run, and no pod left.
func TestRunStartTimeoutLeavesNoPod(t *testing.T) {
	ns := namespace(t)
	apply(t, ns, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 0
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: %s
        volumeMounts: [{name: creds, mountPath: /etc/creds}]
      volumes: [{name: creds, secret: {secretName: not-created-yet}}]
`, testappImage))
	marker := filepath.Join(workDir, "start-timeout-ran-"+randomSuffix())
	defer os.Remove(marker)
	start := time.Now()
	r := tp(t, "run", "-n", ns, "--quiet", "--from", "deployment/stuck", "--start-timeout", "5s", "--", "touch", marker)
	took := time.Since(start)
	if r.Code == 0 {
		t.Fatalf("exit code 0, want non-zero\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "kubectl tp: ") || !strings.Contains(last, "did not start within 5s") || !strings.Contains(last, "kubectl describe pod -n "+ns+" tp-") {
		t.Errorf("last line %q: want one \"kubectl tp: … did not start within 5s (kubectl describe pod -n %s tp-…)\"\n%s", last, ns, r)
	}
	if took > 60*time.Second {
		t.Errorf("the run took %s with --start-timeout 5s", took)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the command ran although the session never started (stat: %v)", err)
	}
	noPodsLeft(t, ns, 20*time.Second)
}

// TestSwapNextRestoresDeadSwap checks README's "`kubectl tp cleanup` (or the next swap of that
// Deployment) restores it": a swap session killed with SIGKILL, without a watchdog (as where
// Roles may not be created), leaves the Deployment at 0; once its proxy pod has ended, the next
// swap says it restores the dead session's swap, and after that swap the Deployment has its
// original replica count, not 0.
func TestSwapNextRestoresDeadSwap(t *testing.T) {
	ns := namespace(t)
	swapApp(t, ns, "api")
	cmd, _ := startSwap(t, ns, localApp(""), "--idle-timeout", "5s")
	pods := tpPods(t, ns)
	if len(pods) != 1 {
		t.Fatalf("want one proxy pod, got %v", pods)
	}
	dead := strings.TrimPrefix(strings.SplitN(pods[0], "=", 2)[0], "tp-")
	kubectl(t, "delete", "serviceaccount", "-n", ns, "tp-"+dead+"-watchdog")
	noWatchdogLeft(t, ns, 60*time.Second)
	signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	waitFor(t, 60*time.Second, "the dead session's proxy pod to end by itself", func() error {
		for _, p := range tpPods(t, ns) {
			if !strings.HasSuffix(p, "=Succeeded") {
				return fmt.Errorf("pods: %v", tpPods(t, ns))
			}
		}
		return nil
	})
	if got := replicas(t, ns, "api"); got != "0 "+dead {
		t.Fatalf("before the next swap: replicas and session = %q, want 0 and %s", got, dead)
	}
	r := tp(t, "run", "-n", ns, "--swap-deployment", "api", "--", "true")
	if r.Code != 0 {
		t.Fatalf("the next swap: %s", r)
	}
	if want := "left swapped by session " + dead; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "restoring it to 2 replicas") {
		t.Errorf("the next swap did not say it restores the dead session's swap (%q, to 2 replicas)\n%s", want, r)
	}
	if got := replicas(t, ns, "api"); got != "2 " {
		t.Fatalf("after the next swap: replicas and session = %q, want 2 and no annotation\n%s", got, r)
	}
}
