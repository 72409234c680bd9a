// Command bench measures kubectl-tp beside the tools a user would otherwise use, on the same
// cluster in the same run, alternating kubectl-tp and the baseline (the order flips every run):
// start-up against `kubectl run --rm -i`; bulk download over one stream (SOCKS5 and HTTP proxy) and
// over 8 parallel streams against raw `kubectl port-forward` to the same pod; HTTP request latency
// (p50/p99, kept-alive and new connections) and new connections per second through SOCKS5 against
// the same client straight to a port-forward; the reverse path of --expose (in-cluster client →
// local server) against the same bytes pushed local → pod through a port-forward; and memory
// (podshim's container cgroup idle and at 100 connections, the client's peak RSS against
// kubectl port-forward's). Those sessions run with --transparent=false (proxy variables). Transparent
// mode has its own rows, in one --transparent=true session: connect(2) latency outside any session
// vs trapped and let through vs diverted to the cluster, one-stream download vs SOCKS5 and
// port-forward, and a python3 run with no network work inside and outside a session (see
// measureTransparent); volumes at their real paths (--real-paths) against $TP_ROOT only: start-up,
// python imports and reads of a mounted file (see measureFiles); personal intercepts: requests
// that do not match, through the router against straight to the pod (see measureIntercept).
// Round-trip time is added with tests/latency, a delaying TCP proxy in front
// of the API server.
//
// It prints one Markdown table and writes it to -out (docs/benchmarks.md) with the machine,
// versions and which goals were met, and draws the ratios to -png (docs/benchmarks.png).
// Benchmarks are not tests: missed goals are reported, not turned into an exit status.
//
// The program re-executes a static copy of itself as helper processes (see -child): the command of
// the kubectl-tp sessions, the local server behind --expose, and the client in a pod (the copy is
// mounted into the test app image with a hostPath volume, so this needs a single-node cluster
// running on this machine, as tests/cluster provides, and cgroup v1 for podshim's memory).
//
// It leaves out CPU usage, HTTPS/CONNECT tunnelling, UDP/DNS timings and multi-node clusters.
//
//	go run ./tests/bench -kubeconfig $E2E_KUBECONFIG -plugin bin/kubectl-tp [-runs 3] [-rtt 0,20ms,80ms] [-mb 128] [-only 'connect\(|python|transparent']
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/tests/latency"
)

var (
	kubeconfig  = flag.String("kubeconfig", os.Getenv("E2E_KUBECONFIG"), "admin kubeconfig of the cluster")
	plugin      = flag.String("plugin", "bin/kubectl-tp", "kubectl-tp binary (copied at start, so a rebuild during the run does not matter)")
	podImage    = flag.String("image", "", "podshim image (default: the plugin's)")
	appImage    = flag.String("app-image", "kubectl-tp.local/testapp:e2e", "test app image serving /bytes (also runs the in-cluster client)")
	runs        = flag.Int("runs", 5, "runs per measurement")
	mb          = flag.Int("mb", 128, "MiB per single-stream download")
	parMB       = flag.Int("par-mb", 0, "MiB per stream of the 8-stream download (default mb/4)")
	revMB       = flag.Int("rev-mb", 0, "MiB per reverse-path transfer (default mb/2)")
	latN        = flag.Int("lat-n", 1000, "requests per latency run")
	latMax      = flag.Duration("lat-max", 4*time.Second, "time cap per latency run (at high RTT fewer than -lat-n requests fit)")
	connDur     = flag.Duration("conn-dur", 3*time.Second, "duration of a connections-per-second run")
	connWorkers = flag.Int("conn-workers", 32, "concurrent dialers in a connections-per-second run (enough that the row measures capacity, not round trips)")
	connectN    = flag.Int("connect-n", 2000, "connect(2) calls per connect() run")
	connectMax  = flag.Duration("connect-max", 20*time.Second, "time cap per connect() run (at a long round trip each diverted connect costs several: fewer than -connect-n fit)")
	python      = flag.String("python", "python3", "Python interpreter of the no-network row (resolved to sys.executable, so a pyenv shim is skipped)")
	pythonN     = flag.Int("python-n", 20, "interpreter runs per no-network run")
	rtts        = flag.String("rtt", "0", "comma-separated added round-trip times, e.g. 0,20ms,80ms")
	rttWindow   = flag.Int("rtt-window", tcpRmemMax(), "with -rtt: bytes in flight per direction through the delaying proxy, a TCP window (default: this kernel's tcp_rmem maximum; 0: unlimited)")
	apiserver   = flag.String("apiserver", "127.0.0.1:6443", "API server address the delaying proxy forwards to")
	ns          = flag.String("namespace", "tp-bench", "namespace created for the benchmark and deleted at the end")
	outMD       = flag.String("out", "docs/benchmarks.md", "Markdown report (empty: stdout only)")
	outPNG      = flag.String("png", "docs/benchmarks.png", "chart of the ratios (empty: none)")
	only        = flag.String("only", "", "measure only the rows whose short name matches this regular expression (e.g. 'stream|reverse'); the report keeps only those")
	child       = flag.String("child", "", "internal: run as a helper (agent, serve ADDR, sink ADDR, fetch URL, latency URL N, connrate HOST:PORT SECONDS)")
)

func main() {
	flag.Parse()
	if *child != "" {
		if err := runChild(*child, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, "bench -child:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// env is what every measurement needs.
type env struct {
	ctx     context.Context
	kcfg    string // kubeconfig, through the delaying proxy when RTT > 0
	tmp     string // holds the static bench copy, the plugin copy and kubeconfigs
	self    string // static copy of this program
	plugin  string // copy of the plugin
	bulkIP  string // pod IP of the bulk server
	bulkSvc string // ClusterIP of the bulk server's Service
	sinkIP  string // pod IP of the in-cluster client, which also serves random /bytes on :9090
	rtt     time.Duration
	began   time.Time // start of this RTT's measurements
	cleanup []func()
}

func run(ctx context.Context) (err error) {
	began := time.Now()
	if _, err := regexp.Compile(*only); err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	if *kubeconfig == "" {
		return errors.New("no kubeconfig: pass -kubeconfig or set E2E_KUBECONFIG")
	}
	if *parMB == 0 {
		*parMB = max(*mb/4, 1)
	}
	if *revMB == 0 {
		*revMB = max(*mb/2, 1)
	}
	tmp, err := os.MkdirTemp("", "tp-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	e := &env{ctx: ctx, kcfg: *kubeconfig, tmp: tmp, self: filepath.Join(tmp, "bench"), plugin: filepath.Join(tmp, "kubectl-tp")}
	fmt.Fprintln(os.Stderr, "bench: building a static copy of itself")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.self, "github.com/kubectl-tp/kubectl-tp/tests/bench")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	if err := copyFile(*plugin, e.plugin); err != nil {
		return err
	}
	info, err := collectInfo(e)
	if err != nil {
		return err
	}
	if *podImage == "" {
		*podImage = info.image
	}
	fmt.Fprintf(os.Stderr, "bench: plugin %s, image %s; setting up namespace %s\n", info.plugin, *podImage, *ns)
	defer teardown(e)
	if err := setup(e); err != nil {
		return err
	}
	var sections []section
	directNotDelayed := false
	for _, r := range strings.Split(*rtts, ",") {
		r = strings.TrimSpace(r)
		rtt, perr := time.ParseDuration(r)
		if perr != nil {
			if r != "0" {
				return fmt.Errorf("bad -rtt %q", r)
			}
			rtt = 0
		}
		re := *e
		re.rtt = rtt
		re.began = time.Now()
		re.cleanup = nil
		if rtt > 0 {
			lp := &latency.Proxy{Target: *apiserver, Delay: rtt / 2, Window: *rttWindow}
			if err := lp.Start(); err != nil {
				return err
			}
			re.cleanup = append(re.cleanup, func() { lp.Close() })
			if re.kcfg, err = kubeconfigVia(*kubeconfig, lp.Addr(), tmp); err != nil {
				lp.Close()
				return err
			}
			undo, err := delayDirectPath(rtt, *rttWindow)
			if err != nil {
				lp.Close()
				return fmt.Errorf("delaying the direct path to the pods as well: %w", err)
			}
			re.cleanup = append(re.cleanup, func() {
				n := undo()
				fmt.Fprintf(os.Stderr, "bench: RTT %s: %d direct-path connections went through the pod network's delaying proxy\n", rtt, n)
				if n == 0 && (wanted("direct") || wanted("transparent")) {
					directNotDelayed = true
				}
			})
		}
		fmt.Fprintf(os.Stderr, "bench: RTT %s\n", rtt)
		rows, err := measure(&re)
		for i := len(re.cleanup) - 1; i >= 0; i-- {
			re.cleanup[i]()
		}
		if err != nil {
			return fmt.Errorf("RTT %s: %w", rtt, err)
		}
		if directNotDelayed {
			return fmt.Errorf("RTT %s: no direct-path connection went through the pod network's delaying proxy: the direct rows would show no distance", rtt)
		}
		sections = append(sections, section{rtt: rtt, rows: rows})
		fmt.Print(tableMarkdown([]section{sections[len(sections)-1]}))
	}
	info.runtime = time.Since(began)
	info.loadAfter = loadAverage()
	md := report(info, sections)
	fmt.Print("\n" + md)
	if *outMD != "" {
		if err := os.MkdirAll(filepath.Dir(*outMD), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*outMD, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if *outPNG != "" {
		if err := writeChart(*outPNG, sections); err != nil {
			return err
		}
	}
	return nil
}

// tcpRmemMax is the largest TCP receive window this kernel grants (net.ipv4.tcp_rmem's maximum), or
// 6 MiB (Linux's default) when it cannot be read.
func tcpRmemMax() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_rmem")
	if f := strings.Fields(string(b)); err == nil && len(f) == 3 {
		if n, err := strconv.Atoi(f[2]); err == nil {
			return n
		}
	}
	return 6 << 20
}

// copyFile copies src to dst, executable.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
