package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestRunReachesCluster runs real clients as the child of `kubectl tp run --transparent=false` and
// checks that each reaches the cluster the way a user's program would in proxy-variable mode:
// through the proxy variables, SOCKS5 with remote name resolution, CONNECT for TLS, and the DNS
// server in TP_DNS. (Transparent mode's clients: transparent_test.go.)
func TestRunReachesCluster(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	fqdn := "web." + ns + ".svc.cluster.local"
	script := func(s string) []string {
		return []string{"-n", ns, "--quiet", "--transparent=false", "--", "sh", "-ec", s}
	}
	cases := []struct {
		name string
		args []string
		want []string // substrings of stdout
	}{
		{"curl honours http_proxy", script(`curl -sf http://web:8080/color`), []string{"green"}},
		{"go net/http honours HTTP_PROXY", script(`tpclient get http://web:8080/color`), []string{"green"}},
		{"curl --socks5-hostname resolves in the cluster", script(`curl -sf --socks5-hostname "$TP_SOCKS" --proxy-user "$(echo "$ALL_PROXY" | sed -E 's|^socks5h://([^@]*)@.*|\1|')" http://` + fqdn + `:8080/color`), []string{"green"}},
		{"raw TCP echo through SOCKS5", script(`tpclient echo web:9000 hello-echo`), []string{"hello-echo"}},
		{"HTTPS through CONNECT", script(`curl -sf http://web:8080/ca.pem -o ca.pem && curl -sf --cacert ca.pem https://web:8443/color`), []string{"green"}},
		{"DNS short name", script(`tpclient dns web A`), []string{"web.\t", "\tA\t10.96."}},
		{"DNS FQDN", script(`tpclient dns ` + fqdn + ` A`), []string{fqdn + ".", "\tA\t10.96."}},
		{"DNS SRV", script(`tpclient dns _http._tcp.` + fqdn + ` SRV`), []string{"SRV", " 8080 " + fqdn + "."}},
		{"session variables", script(`echo "ns=$TP_NAMESPACE pod=$TP_POD"; echo "$NO_PROXY"; echo "$JAVA_TOOL_OPTIONS"`), []string{"ns=" + ns + " pod=tp-", "127.0.0.0/8", "-DsocksProxyHost=127.0.0.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tp(t, append([]string{"run"}, tc.args...)...)
			if r.Code != 0 {
				t.Fatalf("kubectl tp run failed: %s", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Stdout, w) {
					t.Errorf("stdout lacks %q\n%s", w, r)
				}
			}
		})
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunExitCodes checks that the child's exit status is ours, including 127 for a missing command.
func TestRunExitCodes(t *testing.T) {
	ns := namespace(t)
	cases := []struct {
		name   string
		cmd    []string
		code   int
		stderr string
	}{
		{"success", []string{"true"}, 0, ""},
		{"exit 7", []string{"sh", "-c", "exit 7"}, 7, ""},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -9 $$"}, 137, ""},
		{"command not found", []string{"no-such-command-tp"}, 127, "command not found: no-such-command-tp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tp(t, append([]string{"run", "-n", ns, "--quiet", "--"}, tc.cmd...)...)
			if r.Code != tc.code {
				t.Fatalf("exit code %d, want %d\n%s", r.Code, tc.code, r)
			}
			if !strings.Contains(r.Stderr, tc.stderr) {
				t.Fatalf("stderr lacks %q\n%s", tc.stderr, r)
			}
		})
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunPTY runs the plugin with a terminal on stdin: the child must get a terminal too.
func TestRunPTY(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--", "sh", "-c", `if [ -t 0 ] && [ -t 1 ]; then echo "TTY-YES $(stty size)"; else echo TTY-NO; fi`)
	ptmx := startInPTY(t, cmd)
	var out syncBuffer
	done := make(chan struct{})
	go func() { _, _ = io.Copy(&out, ptmx); close(done) }()
	err := cmd.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if err != nil {
		t.Fatalf("kubectl tp run in a terminal: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "TTY-YES 33 101") {
		t.Fatalf("child did not get a terminal of the right size:\n%q", out.String())
	}
}

// TestRunTwoSessions runs two sessions side by side in two namespaces; each sees its own cluster
// namespace.
func TestRunTwoSessions(t *testing.T) {
	nsA, nsB := namespace(t), namespace(t)
	webApp(t, nsA, "web", "red")
	webApp(t, nsB, "web", "blue")
	var wg sync.WaitGroup
	results := map[string]*result{nsA: new(result), nsB: new(result)}
	for ns, r := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The two sessions overlap: each lives for 3 s between its two requests.
			*r = tp(t, "run", "-n", ns, "--quiet", "--", "sh", "-ec", `curl -sf http://web:8080/color; sleep 3; curl -sf http://web:8080/color`)
		}()
	}
	wg.Wait()
	for ns, want := range map[string]string{nsA: "red\nred\n", nsB: "blue\nblue\n"} {
		if r := results[ns]; r.Code != 0 || r.Stdout != want {
			t.Errorf("session in %s: got %q, want %q\n%s", ns, r.Stdout, want, r)
		}
	}
}

// TestRunKilledClientPodStops kills the plugin with SIGKILL: podshim must notice the silence and
// end by itself (pod Succeeded) within about its idle timeout.
func TestRunKilledClientPodStops(t *testing.T) {
	ns := namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--", "sleep", "600")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "session to start", func() error {
		if !strings.Contains(stderr.String(), "kubectl-tp: session ") {
			return fmt.Errorf("stderr so far: %q", stderr.String())
		}
		return nil
	})
	pods := tpPods(t, ns)
	if len(pods) != 1 {
		t.Fatalf("want one proxy pod, got %v", pods)
	}
	name := strings.SplitN(pods[0], "=", 2)[0]
	killed := time.Now()
	signalTree(t, cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	waitFor(t, 60*time.Second, "pod "+name+" to complete by itself", func() error {
		phase := kubectl(t, "get", "pod", "-n", ns, name, "-o", "jsonpath={.status.phase}")
		if phase != "Succeeded" {
			return fmt.Errorf("phase %s", phase)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("pod %s completed %.1fs after the client was killed", name, took.Seconds())
	if took > 45*time.Second {
		t.Fatalf("pod took %s to stop after the client died; want about the 30s idle timeout", took)
	}
}

// TestRunSignalsDuringStartup interrupts the plugin at random moments of its start-up: each time it
// exits 128+N, saying it was interrupted while starting when the child had not started yet (the
// child, once started, gets the signal and ends 128+N itself), and leaves no pod behind.
func TestRunSignalsDuringStartup(t *testing.T) {
	ns := namespace(t)
	sigs := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	rounds := signalRounds(t, 20)
	for i := range rounds {
		sig := sigs[i%len(sigs)]
		delay := time.Duration(rand.IntN(2500)) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := tpCmd(ctx, "run", "-n", ns, "--", "sleep", "30")
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(delay) // the moment of the signal, chosen at random: not a synchronisation
		_ = cmd.Process.Signal(sig)
		err := cmd.Wait()
		cancel()
		code := cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == sig {
			// The signal came before the plugin's handler was installed (its first milliseconds):
			// it ended by the signal itself, which a shell reports as 128+N too.
			code = 128 + int(sig)
			stderr.Write([]byte("[test] ended by the signal before its handler was installed\n"))
		}
		if err == nil || code != 128+int(sig) {
			t.Errorf("round %d (%s after %s): exit code %d, want %d\n%s", i, sig, delay, code, 128+int(sig), stderr.String())
		}
		started := strings.Contains(stderr.String(), "kubectl-tp: session ")
		early := strings.Contains(stderr.String(), "[test] ended by the signal")
		if said := strings.Contains(stderr.String(), "interrupted by "+sig.String()+" while starting"); !started && !said && !early {
			t.Errorf("round %d (%s after %s): interrupted before the session started, but stderr does not say so:\n%s", i, sig, delay, stderr.String())
		}
		t.Logf("round %d: %s after %s → exit %d (session started: %v)", i, sig, delay, code, started)
	}
	noPodsLeft(t, ns, 30*time.Second)
}

// TestRunRestrictedNamespace runs a session in a namespace that enforces Pod Security "restricted".
func TestRunRestrictedNamespace(t *testing.T) {
	ns := namespace(t, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
	webApp(t, ns, "web", "green")
	r := tp(t, "run", "-n", ns, "--quiet", "--", "curl", "-sf", "http://web:8080/color")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "green" {
		t.Fatalf("session in a restricted namespace: %s", r)
	}
}

// TestRunBadInput checks that each kind of bad input gives one clear line, a non-zero exit code and
// leaves nothing in the cluster.
func TestRunBadInput(t *testing.T) {
	ns := namespace(t)
	limitedKubeconfig := kubeconfigWithoutPortForward(t, ns)
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown context", []string{"run", "--context", "nope", "--", "true"}, `context "nope" does not exist`},
		{"missing namespace", []string{"run", "-n", "no-such-ns-" + randomSuffix(), "--", "true"}, "does not exist"},
		{"no command", []string{"run", "-n", ns}, "no command given"},
		{"command not found", []string{"run", "-n", ns, "--", "no-such-command-tp"}, "command not found"},
		{"image cannot be pulled", []string{"run", "-n", ns, "--image", "127.0.0.1:1/kubectl-tp/none:1", "--", "true"}, "cannot be pulled"},
		{"no pods/portforward permission", []string{"run", "-n", ns, "--kubeconfig", limitedKubeconfig, "--", "true"}, "create pods/portforward"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := tp(t, tc.args...)
			if r.Code == 0 {
				t.Fatalf("exit code 0, want non-zero\n%s", r)
			}
			if !strings.Contains(r.Stderr, tc.stderr) {
				t.Fatalf("stderr lacks %q\n%s", tc.stderr, r)
			}
			lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "kubectl tp: ") {
				t.Errorf("the error is not one line starting with \"kubectl tp: \": %q", last)
			}
			t.Logf("%s: %.1fs: %s", tc.name, time.Since(start).Seconds(), lines[len(lines)-1])
			noPodsLeft(t, ns, 20*time.Second)
		})
	}
}

// kubeconfigWithoutPortForward returns a kubeconfig for a ServiceAccount that may manage pods in ns
// but not forward to them.
func kubeconfigWithoutPortForward(t *testing.T, ns string) string {
	t.Helper()
	apply(t, ns, `
apiVersion: v1
kind: ServiceAccount
metadata: {name: limited}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pods-only}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch, create, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: limited}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pods-only}
subjects: [{kind: ServiceAccount, name: limited}]
`)
	token := strings.TrimSpace(kubectl(t, "create", "token", "limited", "-n", ns))
	server := strings.TrimSpace(kubectl(t, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"))
	ca := strings.TrimSpace(kubectl(t, "config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}"))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %s, certificate-authority-data: %s}}]
users: [{name: limited, user: {token: %s}}]
contexts: [{name: limited, context: {cluster: c, user: limited, namespace: %s}}]
current-context: limited
`, server, ca, token, ns)
	return userFile(t, "limited-"+ns+".kubeconfig", cfg)
}

// TestRunForwardsSignals sends SIGTERM to the plugin while the child runs: the child must get it,
// its exit code must be ours, and the pod must be gone.
func TestRunForwardsSignals(t *testing.T) {
	ns := namespace(t)
	marker := workDir + "/trap-ready-" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--", "sh", "-c", `trap 'echo got-term; exit 42' TERM; touch `+marker+`; while :; do sleep 0.1; done`)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the child to start", func() error { _, err := os.Stat(marker); return err })
	defer os.Remove(marker)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 42 || !strings.Contains(stdout.String(), "got-term") {
		t.Fatalf("exit code %d, stdout %q; want 42 and got-term", code, stdout.String())
	}
	noPodsLeft(t, ns, 20*time.Second)
}

// TestRunProfile profiles a session with kubectl's --profile flags, as a user filing a performance
// report would: the child downloads 256 MiB through the tunnel (transparent mode), the file written after the
// session is a pprof CPU profile of that work, and the child's exit code is still the plugin's. The
// profile is checked for its total (the download costs the plugin most of a CPU-second), not for
// functions: which of them 100 Hz sampling hits varies from run to run.
func TestRunProfile(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	out := filepath.Join(workDir, "cpu-"+randomSuffix()+".pprof")
	defer os.Remove(out)
	r := tp(t, "--profile", "cpu", "--profile-output", out, "run", "-n", ns, "--quiet", "--",
		"sh", "-c", "curl -sf -o /dev/null 'http://web:8080/bytes?mb=256' && exit 3")
	if r.Code != 3 {
		t.Fatalf("profiled session: %s", r)
	}
	report, err := exec.Command("go", "tool", "pprof", "-top", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top %s: %v\n%s", out, err, report)
	}
	m := regexp.MustCompile(`of ([0-9.]+)(ms|s) total`).FindSubmatch(report)
	if m == nil {
		t.Fatalf("no total in the profile; pprof -top said:\n%.2000s", report)
	}
	total, _ := strconv.ParseFloat(string(m[1]), 64)
	if string(m[2]) == "s" {
		total *= 1000
	}
	t.Logf("--profile cpu sampled %.0f ms of CPU", total)
	if total < 100 {
		t.Errorf("the CPU profile of a 256 MiB download sampled %.0f ms of CPU, want the download's (several hundred ms); pprof -top said:\n%.2000s", total, report)
	}
}

// startInPTY starts cmd as the leader of a new session whose controlling terminal is a fresh
// 33×101 pseudo-terminal, as a user's shell would run kubectl tp; the pty is closed with the test.
func startInPTY(t *testing.T, cmd *exec.Cmd) *os.File {
	t.Helper()
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 101})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	return ptmx
}
