package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// setup creates the namespace, the bulk server (test app, pod and Service) and the in-cluster
// client (the test app image running the static bench copy from a hostPath volume as a sink, which
// also serves the bench's random /bytes).
func setup(e *env) error {
	// A namespace left by an interrupted run is deleted first, so the run starts clean.
	if out, err := kubectl(e.ctx, e.kcfg, "delete", "namespace", *ns, "--ignore-not-found", "--wait=true", "--timeout=100s"); err != nil {
		return fmt.Errorf("deleting an old namespace %s: %v: %s", *ns, err, out)
	}
	if out, err := kubectl(e.ctx, e.kcfg, "create", "namespace", *ns); err != nil {
		return fmt.Errorf("creating namespace %s: %v: %s", *ns, err, out)
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: bulk, labels: {app: bulk}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: %[1]s, imagePullPolicy: IfNotPresent, args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]}
---
apiVersion: v1
kind: Service
metadata: {name: bulk}
spec:
  selector: {app: bulk}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: bclient}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: %[1]s
    imagePullPolicy: IfNotPresent
    command: ["/b/bench", "-child", "sink", ":9090"]
    volumeMounts: [{name: b, mountPath: /b, readOnly: true}]
  volumes:
  - {name: b, hostPath: {path: %[2]s, type: Directory}}
`, *appImage, e.tmp)
	if out, err := kubectlIn(e.ctx, e.kcfg, manifest, "apply", "-n", *ns, "-f", "-"); err != nil {
		return fmt.Errorf("deploying the bench pods: %v: %s", err, out)
	}
	for _, p := range []string{"pod/bulk", "pod/bclient"} {
		if out, err := kubectl(e.ctx, e.kcfg, "wait", "-n", *ns, "--for=condition=Ready", p, "--timeout=120s"); err != nil {
			return fmt.Errorf("waiting for %s: %v: %s", p, err, out)
		}
	}
	ip, err := kubectl(e.ctx, e.kcfg, "get", "pod", "-n", *ns, "bulk", "-o", "jsonpath={.status.podIP}")
	if err != nil || ip == "" {
		return fmt.Errorf("bulk pod IP: %v %s", err, ip)
	}
	e.bulkIP = ip
	if e.bulkSvc, err = kubectl(e.ctx, e.kcfg, "get", "service", "-n", *ns, "bulk", "-o", "jsonpath={.spec.clusterIP}"); err != nil || e.bulkSvc == "" {
		return fmt.Errorf("bulk Service IP: %v %s", err, e.bulkSvc)
	}
	if e.sinkIP, err = kubectl(e.ctx, e.kcfg, "get", "pod", "-n", *ns, "bclient", "-o", "jsonpath={.status.podIP}"); err != nil || e.sinkIP == "" {
		return fmt.Errorf("bclient pod IP: %v %s", err, e.sinkIP)
	}
	return nil
}

// teardown deletes the namespace (and so every pod the benchmark made) and waits for it to go.
func teardown(e *env) {
	fmt.Fprintf(os.Stderr, "bench: deleting namespace %s\n", *ns)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := kubectl(ctx, *kubeconfig, "delete", "namespace", *ns, "--ignore-not-found", "--wait=true", "--timeout=100s"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: deleting namespace %s: %v: %s\n", *ns, err, out)
	}
}

func kubectl(ctx context.Context, kcfg string, args ...string) (string, error) {
	return kubectlIn(ctx, kcfg, "", args...)
}

// kubectlIn runs kubectl with stdin and returns its trimmed combined output.
func kubectlIn(ctx context.Context, kcfg, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kcfg}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// background starts cmd so that it is stopped (SIGTERM, then SIGKILL after 10 s) when ctx ends,
// (exec.CommandContext with a gentler Cancel).
func background(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// stopProcess asks cmd to stop, waits up to 10 s, then kills it.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// portForward runs `kubectl port-forward -n NS TARGET :PORT` and returns the local port and the process.
func portForward(e *env, target string, port int) (int, *exec.Cmd, error) {
	cmd := background(e.ctx, "kubectl", "--kubeconfig", e.kcfg, "port-forward", "-n", *ns, target, fmt.Sprintf(":%d", port))
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			p, _ := strconv.Atoi(m[1])
			return p, cmd, nil
		}
	}
	stopProcess(cmd)
	return 0, nil, errors.New("kubectl port-forward reported no port")
}

// kubeconfigVia writes a copy of src whose server is https://addr.
func kubeconfigVia(src, addr, dir string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	cfg := regexp.MustCompile(`server: https://[^\s]+`).ReplaceAllString(string(b), "server: https://"+addr)
	f := filepath.Join(dir, "via-"+url.PathEscape(addr)+".kubeconfig")
	return f, os.WriteFile(f, []byte(cfg), 0o600)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// podCgroup returns the memory cgroup directory of the pod's first container (cgroup v1, cgroupfs).
func podCgroup(e *env, pod string) (string, error) {
	out, err := kubectl(e.ctx, e.kcfg, "get", "pod", "-n", *ns, pod, "-o", "jsonpath={.metadata.uid} {.status.containerStatuses[0].containerID}")
	if err != nil {
		return "", fmt.Errorf("pod %s: %v: %s", pod, err, out)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", fmt.Errorf("pod %s: no uid or container id in %q", pod, out)
	}
	_, cid, _ := strings.Cut(f[1], "://")
	for _, pat := range []string{"/sys/fs/cgroup/memory/kubepods/*/pod%s/%s", "/sys/fs/cgroup/memory/kubepods/pod%s/%s",
		"/sys/fs/cgroup/memory/kubepods.slice/*/*%s*/*%s*"} {
		m, _ := filepath.Glob(fmt.Sprintf(pat, strings.ReplaceAll(f[0], "-", "?"), cid))
		if len(m) == 1 {
			return m[0], nil
		}
	}
	return "", fmt.Errorf("no memory cgroup for pod %s (uid %s, container %s) under /sys/fs/cgroup/memory/kubepods", pod, f[0], cid)
}

// readMiB reads a byte count from a cgroup file, in MiB.
func readMiB(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return n / (1 << 20), err
}

// vmHWM returns a process's peak resident set size in MiB.
func vmHWM(pid int) (float64, error) { return statusMiB(pid, "VmHWM:") }

// statusMiB returns a kB field of /proc/PID/status (such as "VmHWM:") in MiB.
func statusMiB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s for pid %d", field, pid)
}

// info describes the machine and versions for the report.
type info struct {
	date, plugin, image, server, kubectl, goVersion string
	cpus                                            int
	cpuModel, memory, kernel                        string
	runtime                                         time.Duration
	// loadBefore and loadAfter are /proc/loadavg's 1, 5 and 15 minute averages when the bench
	// began and ended: how quiet the machine was.
	loadBefore, loadAfter string
}

// loadAverage returns the 1, 5 and 15 minute load averages ("" where /proc/loadavg is missing).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func collectInfo(e *env) (info, error) {
	in := info{date: time.Now().UTC().Format("2006-01-02 15:04 MST"), goVersion: runtime.Version(), cpus: runtime.NumCPU(), loadBefore: loadAverage()}
	out, err := exec.CommandContext(e.ctx, e.plugin, "version").Output()
	if err != nil {
		return in, fmt.Errorf("%s version: %w", *plugin, err)
	}
	lines := strings.Split(string(out), "\n")
	in.plugin = strings.TrimSpace(lines[0])
	if len(lines) > 1 {
		in.image = strings.TrimSpace(strings.TrimPrefix(lines[1], "image:"))
	}
	vj, err := kubectl(e.ctx, e.kcfg, "version", "-o", "json")
	if err != nil {
		return in, fmt.Errorf("kubectl version: %v: %s", err, vj)
	}
	var v struct {
		Client struct{ GitVersion string } `json:"clientVersion"`
		Server struct{ GitVersion string } `json:"serverVersion"`
	}
	_ = json.Unmarshal([]byte(vj), &v)
	in.server, in.kubectl = v.Server.GitVersion, v.Client.GitVersion
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		in.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				in.memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				in.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return in, nil
}

// sampleAnon samples the RssAnon of two processes every 100 ms until the returned function is
// called; it returns their peaks in MiB.
func sampleAnon(a, b int) func() (float64, float64) {
	stop := make(chan struct{})
	done := make(chan [2]float64, 1)
	go func() {
		var peak [2]float64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for i, pid := range []int{a, b} {
				if v, err := statusMiB(pid, "RssAnon:"); err == nil {
					peak[i] = max(peak[i], v)
				}
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() (float64, float64) {
		close(stop)
		p := <-done
		return p[0], p[1]
	}
}

// cgroupPID returns the first process of a cgroup directory (podshim in its container), or 0.
func cgroupPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// cpuSeconds returns a process's user+system CPU time in seconds (0 when it cannot be read).
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux everywhere Go runs).
const clockTicks = 100

// cgroupHWM returns the largest VmHWM (MiB) of the processes in a cgroup directory.
func cgroupHWM(dir string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0, err
	}
	best := 0.0
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if v, err := vmHWM(pid); err == nil {
			best = max(best, v)
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no process in %s", dir)
	}
	return best, nil
}

// machineCPUSeconds is the busy time of all CPUs since boot (/proc/stat's first line: user, nice,
// system, irq, softirq and steal; not idle or iowait), in seconds: every process's work,
// the cluster's and the kernel's network processing included.
func machineCPUSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		busy += v
	}
	return busy / clockTicks
}
