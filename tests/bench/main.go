// Command bench measures kubectl-tp beside the tools a user would otherwise use, on the same
// cluster in the same run, alternating A and B: start-up against `kubectl run --rm -i`, and bulk
// download through the SOCKS5 and HTTP proxies against raw `kubectl port-forward` to the same pod.
// Optional round-trip time is added with a delaying TCP proxy in front of the API server.
//
// It prints a Markdown table (median, min–max, ratio). It leaves out the rest of the benchmark
// issue's table (parallel streams, latency percentiles, connection rate, reverse path, memory).
//
//	go run ./tests/bench -kubeconfig $E2E_KUBECONFIG -plugin bin/kubectl-tp -image REF [-runs 5] [-rtt 0,20ms,80ms]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tests/latency"
)

var (
	kubeconfig = flag.String("kubeconfig", os.Getenv("E2E_KUBECONFIG"), "admin kubeconfig of the cluster")
	plugin     = flag.String("plugin", "bin/kubectl-tp", "kubectl-tp binary")
	image      = flag.String("image", "", "podshim image (default: the plugin's)")
	appImage   = flag.String("app-image", "kubectl-tp.local/testapp:e2e", "test app image serving /bytes")
	runs       = flag.Int("runs", 5, "runs per measurement")
	mb         = flag.Int("mb", 200, "MiB per bulk download")
	rtts       = flag.String("rtt", "0", "comma-separated added round-trip times, e.g. 0,20ms,80ms")
	apiserver  = flag.String("apiserver", "127.0.0.1:6443", "API server address the delaying proxy forwards to")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	name, unit   string
	tp, baseline []float64
	higherBetter bool
}

func run() error {
	if *kubeconfig == "" {
		return errors.New("no kubeconfig: pass -kubeconfig or set E2E_KUBECONFIG")
	}
	if *image == "" {
		out, err := exec.Command(*plugin, "version").Output()
		if err != nil {
			return fmt.Errorf("%s version: %w", *plugin, err)
		}
		*image = strings.TrimSpace(strings.TrimPrefix(strings.Split(string(out), "\n")[1], "image:"))
	}
	ns := "tp-bench"
	_, _ = kubectl(*kubeconfig, "create", "namespace", ns)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: bulk, labels: {app: bulk}}
spec:
  containers:
  - {name: app, image: %s, imagePullPolicy: IfNotPresent, args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]}
---
apiVersion: v1
kind: Service
metadata: {name: bulk}
spec:
  selector: {app: bulk}
  ports: [{port: 8080}]
`, *appImage)
	if out, err := kubectlIn(*kubeconfig, manifest, "apply", "-n", ns, "-f", "-"); err != nil {
		return fmt.Errorf("deploying the bulk server: %v: %s", err, out)
	}
	if out, err := kubectl(*kubeconfig, "wait", "-n", ns, "--for=condition=Ready", "pod/bulk", "--timeout=120s"); err != nil {
		return fmt.Errorf("waiting for the bulk server: %v: %s", err, out)
	}
	fmt.Printf("# kubectl-tp benchmarks\n\n%s, %d runs each (median, min–max), %d MiB downloads, image %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), *runs, *mb, *image)
	for _, r := range strings.Split(*rtts, ",") {
		rtt, err := time.ParseDuration(strings.TrimSpace(r))
		if err != nil {
			rtt = 0
			if strings.TrimSpace(r) != "0" {
				return fmt.Errorf("bad -rtt %q", r)
			}
		}
		kcfg := *kubeconfig
		if rtt > 0 {
			lp := &latency.Proxy{Target: *apiserver, Delay: rtt / 2}
			if err := lp.Start(); err != nil {
				return err
			}
			defer lp.Close()
			if kcfg, err = kubeconfigVia(*kubeconfig, lp.Addr()); err != nil {
				return err
			}
			defer os.Remove(kcfg)
		}
		rows, err := measure(kcfg, ns)
		if err != nil {
			return err
		}
		printTable(rtt, rows)
	}
	return nil
}

func measure(kcfg, ns string) ([]row, error) {
	start := row{name: "start-up: `kubectl tp run -- true` vs `kubectl run --rm -i --restart=Never`", unit: "s"}
	socks := row{name: "bulk download, 1 stream, SOCKS5 vs `kubectl port-forward`", unit: "MB/s", higherBetter: true}
	httpp := row{name: "bulk download, 1 stream, HTTP proxy vs `kubectl port-forward`", unit: "MB/s", higherBetter: true}
	for i := range *runs {
		t0 := time.Now()
		if out, err := exec.Command(*plugin, "--kubeconfig", kcfg, "run", "-n", ns, "--quiet", "--image", *image, "--", "true").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("kubectl tp run: %v: %s", err, out)
		}
		start.tp = append(start.tp, time.Since(t0).Seconds())
		t0 = time.Now()
		if out, err := kubectl(kcfg, "run", "-n", ns, fmt.Sprintf("bench-%d", i), "--rm", "-i", "--restart=Never", "--quiet",
			"--image", *image, "--image-pull-policy=IfNotPresent", "--command", "--",
			"/podshim", "-insecure-no-token", "-idle-timeout=1ms", "-listen=127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("kubectl run: %v: %s", err, out)
		}
		start.baseline = append(start.baseline, time.Since(t0).Seconds())
	}
	// Downloads: one session runs every tp download, alternating with port-forward downloads.
	pf, stopPF, err := portForward(kcfg, ns)
	if err != nil {
		return nil, err
	}
	defer stopPF()
	fetch := fmt.Sprintf("http://bulk:8080/bytes?mb=%d", *mb)
	script := fmt.Sprintf(`for i in $(seq 1 %d); do
  read _ </dev/stdin
  curl -sf -o /dev/null -w "socks %%{speed_download}\n" -x "$ALL_PROXY" %s
  read _ </dev/stdin
  curl -sf -o /dev/null -w "http %%{speed_download}\n" -x "$HTTP_PROXY" %s
done`, *runs, fetch, fetch)
	cmd := exec.Command(*plugin, "--kubeconfig", kcfg, "run", "-n", ns, "--quiet", "--image", *image, "--", "sh", "-c", script)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(stdout)
	for range *runs {
		for _, r := range []*row{&socks, &httpp} {
			v, err := curlSpeed("-o", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/bytes?mb=%d", pf, *mb))
			if err != nil {
				return nil, err
			}
			r.baseline = append(r.baseline, v)
			fmt.Fprintln(stdin)
			if !lines.Scan() {
				return nil, fmt.Errorf("kubectl tp session ended early: %v", cmd.Wait())
			}
			f := strings.Fields(lines.Text())
			if len(f) != 2 {
				return nil, fmt.Errorf("unexpected line %q", lines.Text())
			}
			s, _ := strconv.ParseFloat(f[1], 64)
			r.tp = append(r.tp, s/1e6)
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("kubectl tp session: %w", err)
	}
	return []row{start, socks, httpp}, nil
}

func curlSpeed(args ...string) (float64, error) {
	out, err := exec.Command("curl", append([]string{"-sf", "--noproxy", "*", "-w", "%{speed_download}"}, args...)...).Output()
	if err != nil {
		return 0, fmt.Errorf("curl %v: %w", args, err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	return v / 1e6, err
}

func portForward(kcfg, ns string) (int, func(), error) {
	cmd := exec.Command("kubectl", "--kubeconfig", kcfg, "port-forward", "-n", ns, "pod/bulk", ":8080")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			p, _ := strconv.Atoi(m[1])
			return p, stop, nil
		}
	}
	stop()
	return 0, nil, errors.New("kubectl port-forward reported no port")
}

func kubectl(kcfg string, args ...string) (string, error) { return kubectlIn(kcfg, "", args...) }

func kubectlIn(kcfg, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kcfg}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func kubeconfigVia(src, addr string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	cfg := regexp.MustCompile(`server: https://[^\s]+`).ReplaceAllString(string(b), "server: https://"+addr)
	f := filepath.Join(os.TempDir(), "tp-bench-"+url.PathEscape(addr)+".kubeconfig")
	return f, os.WriteFile(f, []byte(cfg), 0o600)
}

func stats(v []float64) (med, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

func printTable(rtt time.Duration, rows []row) {
	fmt.Printf("\n## added RTT %s\n\n| measurement | kubectl-tp | baseline | ratio |\n| --- | --- | --- | --- |\n", rtt)
	for _, r := range rows {
		m1, l1, h1 := stats(r.tp)
		m2, l2, h2 := stats(r.baseline)
		ratio := m1 / m2
		note := "(lower is better)"
		if r.higherBetter {
			note = "(higher is better)"
		}
		fmt.Printf("| %s | %.2f %s (%.2f–%.2f) | %.2f %s (%.2f–%.2f) | %.2f× %s |\n", r.name, m1, r.unit, l1, h1, m2, r.unit, l2, h2, ratio, note)
	}
}
