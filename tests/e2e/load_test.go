package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("reading the descriptors of process %d: %v", pid, err)
	}
	return len(ents)
}

// podshimPID finds the podshim process of a proxy pod on this (single) node by its session token.
func podshimPID(t *testing.T, ns, pod string) int {
	t.Helper()
	token := kubectl(t, "get", "pod", "-n", ns, pod, "-o", `jsonpath={.spec.containers[0].env[?(@.name=="TP_TOKEN")].value}`)
	if token == "" {
		t.Fatalf("pod %s has no TP_TOKEN", pod)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(env), "TP_TOKEN="+token+"\x00") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/environ", &pid); err == nil {
			return pid
		}
	}
	t.Fatalf("no podshim process with the token of pod %s on this node", pod)
	return 0
}

// TestRunLoadWithoutLeaks puts 1000 concurrent SOCKS5 connections and 10,000 HTTP-proxy requests
// through one session: none may fail, and afterwards the open descriptors of the plugin and of
// podshim come back to where they were before the load (so neither keeps a connection or a
// stream it no longer uses). Goroutines are not counted: neither process exposes them.
func TestRunLoadWithoutLeaks(t *testing.T) {
	ns := namespace(t)
	webApp(t, ns, "web", "green")
	loadgen := filepath.Join(workDir, "loadgen")
	build := exec.Command("go", "build", "-o", loadgen, "./tests/e2e/clients/loadgen")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building loadgen: %v\n%s", err, out)
	}
	defer os.Remove(loadgen)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	script := `echo ready; read -r _go
` + loadgen + ` socks 1000 web:9000
` + loadgen + ` http 10000 50 http://web:8080/color
echo loaded; read -r _end`
	cmd := tpCmd(ctx, "run", "-n", ns, "--quiet", "--transparent=false", "--", "sh", "-c", script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	next := func(what string) string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("the session ended before %s:\n%s", what, stderr.String())
		}
		return lines.Text()
	}
	if l := next("the child was ready"); l != "ready" {
		t.Fatalf("child said %q", l)
	}
	pods := tpPods(t, ns)
	if len(pods) != 1 {
		t.Fatalf("want one proxy pod, got %v", pods)
	}
	pod, _, _ := strings.Cut(pods[0], "=")
	shim := podshimPID(t, ns, pod)
	plugin := cmd.Process.Pid
	basePlugin, baseShim := openFDs(t, plugin), openFDs(t, shim)
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	var results []string
	for l := next("the load ended"); l != "loaded"; l = next("the load ended") {
		results = append(results, l)
	}
	for _, mode := range []string{"socks", "http"} {
		want := map[string]string{"socks": "RESULT socks ok=1000 errors=0", "http": "RESULT http ok=10000 errors=0"}[mode]
		found := false
		for _, r := range results {
			found = found || r == want
		}
		if !found {
			t.Errorf("%s load: want %q, the child printed:\n%s", mode, want, strings.Join(results, "\n"))
		}
	}
	// Descriptors come back: the plugin's at once, podshim's once the HTTP proxy's idle upstream
	// connections expire.
	waitFor(t, 90*time.Second, "open descriptors back to their level before the load", func() error {
		p, s := openFDs(t, plugin), openFDs(t, shim)
		if p > basePlugin || s > baseShim {
			return fmt.Errorf("plugin %d (before: %d), podshim %d (before: %d)", p, basePlugin, s, baseShim)
		}
		return nil
	})
	t.Logf("descriptors: plugin %d before, %d after; podshim %d before, %d after", basePlugin, openFDs(t, plugin), baseShim, openFDs(t, shim))
	if _, err := io.WriteString(stdin, "end\n"); err != nil {
		t.Fatal(err)
	}
}
