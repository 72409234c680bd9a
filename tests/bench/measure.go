package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// row is one line of the table: runs of kubectl-tp and of the baseline.
type row struct {
	name, short, unit string
	tp, base          []float64
	// baseNote replaces the baseline column when there is no baseline.
	baseNote     string
	higherBetter bool
	// goal is the goal's text; met tells whether it holds (nil: no goal).
	goal string
	met  func(tp, ratio float64) bool
	// absGoal marks a goal on kubectl-tp's own value rather than on the ratio.
	absGoal bool
	// added shows kubectl-tp's median minus the baseline's (in the row's unit) beside the goal.
	added bool
}

// session is a running `kubectl tp run -- bench -child agent|serve`.
type session struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	first result
}

// startSession starts kubectl-tp with extra flags and the bench copy in child mode as its command,
// and reads the child's first line (naming the pod).
func startSession(e *env, flags []string, childArgs ...string) (*session, error) {
	args := append([]string{"--kubeconfig", e.kcfg, "run", "-n", *ns, "--quiet", "--image", *podImage}, flags...)
	args = append(append(args, "--", e.self, "-child"), childArgs...)
	s := &session{cmd: background(e.ctx, e.plugin, args...)}
	s.in, _ = s.cmd.StdinPipe()
	stdout, _ := s.cmd.StdoutPipe()
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.out = bufio.NewScanner(stdout)
	s.out.Buffer(nil, 1<<20)
	if err := s.read(&s.first); err != nil {
		s.stop()
		return nil, fmt.Errorf("kubectl tp run: %w", err)
	}
	return s, nil
}

func (s *session) read(v any) error {
	if !s.out.Scan() {
		return fmt.Errorf("session ended early: %v", s.cmd.Wait())
	}
	return json.Unmarshal(s.out.Bytes(), v)
}

// do runs o in the session's agent.
func (s *session) do(o op) (result, error) {
	b, _ := json.Marshal(o)
	if _, err := s.in.Write(append(b, '\n')); err != nil {
		return result{}, err
	}
	var r result
	if err := s.read(&r); err != nil {
		return r, err
	}
	if r.Err != "" && r.Count == 0 {
		return r, fmt.Errorf("kubectl-tp %s: %s", o.Op, r.Err)
	}
	return r, nil
}

// stop closes the child's stdin (it exits, so the session ends and deletes its pod) and waits.
func (s *session) stop() {
	s.in.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		stopProcess(s.cmd)
	}
}

// direct runs o in this process (the baseline, straight to a port-forward).
func direct(o op) (result, error) {
	r := do(o)
	if r.Err != "" && r.Count == 0 {
		return r, fmt.Errorf("baseline %s: %s", o.Op, r.Err)
	}
	return r, nil
}

// pair runs a and b in alternating order (a first on even runs) and returns their values.
func pair(i int, a, b func() error) error {
	if i%2 == 1 {
		a, b = b, a
	}
	if err := a(); err != nil {
		return err
	}
	return b()
}

// rotate runs fs in turn starting with fs[i mod len(fs)], so that over runs each goes first, in
// the middle and last alike.
func rotate(i int, fs ...func() error) error {
	for k := range fs {
		if err := fs[(i+k)%len(fs)](); err != nil {
			return err
		}
	}
	return nil
}

func le(limit float64) func(float64, float64) bool {
	return func(_, r float64) bool { return r <= limit }
}
func ge(limit float64) func(float64, float64) bool {
	return func(_, r float64) bool { return r >= limit }
}
func absolute(f func(float64) bool) func(float64, float64) bool {
	return func(tp, _ float64) bool { return f(tp) }
}

// addsAtMost holds when kubectl-tp's median exceeds the baseline's by at most limit (row unit).
func addsAtMost(limit float64) func(float64, float64) bool {
	return func(tp, r float64) bool { return r > 0 && tp-tp/r <= limit }
}

// wanted reports whether -only selects the row with this short name.
func wanted(short string) bool {
	return *only == "" || regexp.MustCompile(*only).MatchString(short)
}

// measure runs every row (that -only selects) at one RTT.
func measure(e *env) ([]row, error) {
	var rows []row
	start := row{name: "start-up: `kubectl tp run --transparent=false -- true` vs `kubectl run --rm -i --restart=Never` (same image)", short: "start-up", unit: "s", goal: "≤ 1.0×", met: le(1.0)}
	if wanted(start.short) {
		if err := measureStartup(e, &start); err != nil {
			return nil, err
		}
		rows = append(rows, start)
	}
	fwd, err := measureForward(e)
	if err != nil {
		return nil, err
	}
	rows = append(rows, fwd...)
	tr, err := measureTransparent(e)
	if err != nil {
		return nil, err
	}
	rows = append(rows, tr...)
	files, err := measureFiles(e)
	if err != nil {
		return nil, err
	}
	rows = append(rows, files...)
	ic, err := measureIntercept(e)
	if err != nil {
		return nil, err
	}
	rows = append(rows, ic...)
	im, err := measureInterceptMatching(e)
	if err != nil {
		return nil, err
	}
	rows = append(rows, im...)
	if wanted("reverse (--expose)") {
		rev, err := measureReverse(e)
		if err != nil {
			return nil, err
		}
		rows = append(rows, rev)
	}
	return slices.DeleteFunc(rows, func(r row) bool { return !wanted(r.short) || len(r.tp) == 0 }), nil
}

func measureStartup(e *env, start *row) error {
	logf(e, "start-up")
	for i := range *runs {
		err := pair(i, func() error {
			t0 := time.Now()
			cmd := background(e.ctx, e.plugin, "--kubeconfig", e.kcfg, "run", "-n", *ns, "--quiet", "--image", *podImage, "--transparent=false", "--", "true")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("kubectl tp run: %v: %s", err, out)
			}
			start.tp = append(start.tp, time.Since(t0).Seconds())
			return nil
		}, func() error {
			t0 := time.Now()
			if out, err := kubectl(e.ctx, e.kcfg, "run", "-n", *ns, fmt.Sprintf("bench-%d", i), "--rm", "-i", "--restart=Never", "--quiet",
				"--image", *podImage, "--image-pull-policy=IfNotPresent", "--command", "--",
				"/podshim", "-insecure-no-token", "-idle-timeout=1ms", "-listen=127.0.0.1:0"); err != nil {
				return fmt.Errorf("kubectl run: %v: %s", err, out)
			}
			start.base = append(start.base, time.Since(t0).Seconds())
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// measureForward runs the download, latency, connection-rate and memory rows in one session in
// proxy-variable mode (kubectl tp run --transparent=false -- bench -child agent) beside one kubectl
// port-forward to the same pod. It starts nothing when -only selects none of its rows.
func measureForward(e *env) ([]row, error) {
	dl := func(mb int) string { return "/bytes?mb=" + strconv.Itoa(mb) }
	tput := ge(0.95)
	socks1 := row{name: fmt.Sprintf("bulk download, 1 stream, %d MiB: SOCKS5 vs `kubectl port-forward`", *mb), short: "1 stream SOCKS5", unit: "MB/s", higherBetter: true, goal: "≥ 0.95×", met: tput}
	http1 := row{name: fmt.Sprintf("bulk download, 1 stream, %d MiB: HTTP proxy vs `kubectl port-forward`", *mb), short: "1 stream HTTP proxy", unit: "MB/s", higherBetter: true, goal: "≥ 0.95×", met: tput}
	par8 := row{name: fmt.Sprintf("bulk download, 8 parallel streams × %d MiB, aggregate: SOCKS5 (one session) vs one `kubectl port-forward`", *parMB), short: "8 streams SOCKS5", unit: "MB/s", higherBetter: true, goal: "≥ 0.95×", met: tput}
	// The rows above force the tunnel through the API server (--direct=false), so that they show
	// the tunnel's own efficiency; these two let the session choose (the direct path, where the
	// pod network is reachable, as on the bench's cluster).
	direct1 := row{name: fmt.Sprintf("bulk download, 1 stream, %d MiB: SOCKS5, path chosen automatically (direct to the pod) vs `kubectl port-forward`", *mb), short: "1 stream direct", unit: "MB/s", higherBetter: true, goal: "≥ 2×", met: ge(2)}
	direct8 := row{name: fmt.Sprintf("bulk download, 8 parallel streams × %d MiB, aggregate: SOCKS5, path chosen automatically (direct) vs one `kubectl port-forward`", *parMB), short: "8 streams direct", unit: "MB/s", higherBetter: true, goal: "≥ 2×", met: ge(2)}
	kaP50 := row{name: "HTTP latency p50, keep-alive (one connection): SOCKS5 vs port-forward", short: "p50 keep-alive", unit: "ms", goal: "≤ 1.1×", met: le(1.1)}
	kaP99 := row{name: "HTTP latency p99, keep-alive (one connection): SOCKS5 vs port-forward", short: "p99 keep-alive", unit: "ms"}
	ncP50 := row{name: "HTTP latency p50, new connection per request: SOCKS5 vs port-forward", short: "p50 new conn", unit: "ms", goal: "≤ 1.1×", met: le(1.1)}
	ncP99 := row{name: "HTTP latency p99, new connection per request: SOCKS5 vs port-forward", short: "p99 new conn", unit: "ms"}
	conns := row{name: fmt.Sprintf("new TCP connections/s (%d dialers, one GET each): SOCKS5 vs port-forward", *connWorkers), short: "connections/s", unit: "conn/s", higherBetter: true, goal: "≥ 500/s", absGoal: true, met: absolute(func(v float64) bool { return v >= 500 })}
	memIdle := row{name: "podshim memory, idle (container cgroup memory.usage_in_bytes)", short: "podshim idle", unit: "MiB", baseNote: "—", goal: "≤ 15 MiB", absGoal: true, met: absolute(func(v float64) bool { return v <= 15 })}
	mem100 := row{name: "podshim memory, 100 concurrent connections × 1 MiB (cgroup memory.max_usage_in_bytes)", short: "podshim 100 conns", unit: "MiB", baseNote: "—", goal: "≤ 40 MiB", absGoal: true, met: absolute(func(v float64) bool { return v <= 40 })}
	shimRSS := row{name: "podshim peak RSS over all the above (VmHWM of the podshim process, found through the container cgroup)", short: "podshim peak RSS", unit: "MiB", baseNote: "—"}
	cpuTP := row{name: fmt.Sprintf("laptop CPU per GB downloaded (1 stream, %d MiB, SOCKS5; user+system time of the process): kubectl-tp vs `kubectl port-forward`", *mb), short: "laptop CPU/GB", unit: "s/GB"}
	cpuAll := row{name: fmt.Sprintf("machine CPU per GB downloaded (the same 1-stream %d MiB SOCKS5 downloads; busy time of all CPUs from /proc/stat: the cluster, podshim, curl and the kernel included — on one machine this is what bounds throughput): kubectl-tp vs `kubectl port-forward`", *mb), short: "machine CPU/GB", unit: "s/GB"}
	cpuShim := row{name: "podshim CPU per GB downloaded (same downloads; the extra hop in the pod that port-forward does not have)", short: "podshim CPU/GB", unit: "s/GB", baseNote: "—"}
	anon := row{name: "client peak anonymous memory over all the above (RssAnon sampled every 100 ms; peak RSS also counts the pages of the executable itself, which a kernel with large page-cache folios maps almost whole: ~30 MiB for kubectl-tp, ~42 MiB for kubectl here)", short: "client peak anon", unit: "MiB"}
	client := row{name: "client peak RSS over all the above (VmHWM): kubectl-tp vs kubectl port-forward", short: "client peak RSS", unit: "MiB", goal: "≤ 60 MiB", absGoal: true, met: absolute(func(v float64) bool { return v <= 60 })}
	if !slices.ContainsFunc([]*row{&socks1, &http1, &par8, &direct1, &direct8, &kaP50, &kaP99, &ncP50, &ncP99, &conns, &memIdle, &mem100, &shimRSS, &client, &cpuTP, &cpuAll, &cpuShim, &anon},
		func(r *row) bool { return wanted(r.short) }) {
		return nil, nil
	}

	pf, pfCmd, err := portForward(e, "pod/bulk", 8080)
	if err != nil {
		return nil, err
	}
	defer stopProcess(pfCmd)
	s, err := startSession(e, []string{"--transparent=false", "--direct=false"}, "agent")
	if err != nil {
		return nil, err
	}
	defer s.stop()
	sAuto := s
	if wanted(direct1.short) || wanted(direct8.short) {
		if sAuto, err = startSession(e, []string{"--transparent=false"}, "agent"); err != nil {
			return nil, err
		}
		defer sAuto.stop()
	}
	cg, err := podCgroup(e, s.first.Pod)
	if err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second) // let podshim settle after start
	idle, err := readMiB(filepath.Join(cg, "memory.usage_in_bytes"))
	if err != nil {
		return nil, err
	}
	memIdle.tp = []float64{idle}
	local := fmt.Sprintf("http://127.0.0.1:%d", pf)
	remote := fmt.Sprintf("http://%s:8080", e.bulkIP)
	shimPID := cgroupPID(cg)
	stopSampling := sampleAnon(s.cmd.Process.Pid, pfCmd.Process.Pid)

	var kaCounts, ncCounts, connErrs []string
	for i := range *runs {
		type job struct {
			r          *row
			tp, base   op
			tpV, baseV func(result) float64
			sess       *session // nil: s
		}
		value := func(r result) float64 { return r.Value }
		p50 := func(r result) float64 { return r.P50 }
		lat := func(ka bool) (op, op) {
			o := op{Op: "latency", N: *latN, Max: *latMax, KeepAlive: ka}
			t, b := o, o
			t.URL, t.Via, b.URL = remote+"/color", "socks", local+"/color"
			return t, b
		}
		kaT, kaB := lat(true)
		ncT, ncB := lat(false)
		cr := op{Op: "connrate", Max: *connDur, Workers: *connWorkers}
		crT, crB := cr, cr
		crT.URL, crT.Via, crB.URL = e.bulkIP+":8080", "socks", fmt.Sprintf("127.0.0.1:%d", pf)
		jobs := []job{
			{&socks1, op{Op: "bulk", URL: remote + dl(*mb), Via: "socks", Streams: 1}, op{Op: "bulk", URL: local + dl(*mb), Streams: 1}, value, value, nil},
			{&http1, op{Op: "bulk", URL: remote + dl(*mb), Via: "http", Streams: 1}, op{Op: "bulk", URL: local + dl(*mb), Streams: 1}, value, value, nil},
			{&par8, op{Op: "bulk", URL: remote + dl(*parMB), Via: "socks", Streams: 8}, op{Op: "bulk", URL: local + dl(*parMB), Streams: 8}, value, value, nil},
			{&direct1, op{Op: "bulk", URL: remote + dl(*mb), Via: "socks", Streams: 1}, op{Op: "bulk", URL: local + dl(*mb), Streams: 1}, value, value, sAuto},
			{&direct8, op{Op: "bulk", URL: remote + dl(*parMB), Via: "socks", Streams: 8}, op{Op: "bulk", URL: local + dl(*parMB), Streams: 8}, value, value, sAuto},
			{&kaP50, kaT, kaB, p50, p50, nil},
			{&ncP50, ncT, ncB, p50, p50, nil},
			{&conns, crT, crB, value, value, nil},
		}
		for _, j := range jobs {
			if !wanted(j.r.short) {
				continue
			}
			logf(e, "run %d: %s", i+1, j.r.short)
			var tr, br result
			var tpCPU, shimCPU, pfCPU, tpAll, pfAll float64
			js := s
			if j.sess != nil {
				js = j.sess
			}
			err := pair(i, func() (err error) {
				c0, p0, m0 := cpuSeconds(js.cmd.Process.Pid), cpuSeconds(shimPID), machineCPUSeconds()
				tr, err = js.do(j.tp)
				tpCPU, shimCPU, tpAll = cpuSeconds(js.cmd.Process.Pid)-c0, cpuSeconds(shimPID)-p0, machineCPUSeconds()-m0
				return err
			}, func() (err error) {
				c0, m0 := cpuSeconds(pfCmd.Process.Pid), machineCPUSeconds()
				br, err = direct(j.base)
				pfCPU, pfAll = cpuSeconds(pfCmd.Process.Pid)-c0, machineCPUSeconds()-m0
				return err
			})
			if err != nil {
				return nil, err
			}
			j.r.tp = append(j.r.tp, j.tpV(tr))
			j.r.base = append(j.r.base, j.baseV(br))
			switch j.r {
			case &socks1:
				gb := float64(*mb<<20) / 1e9
				cpuTP.tp, cpuTP.base = append(cpuTP.tp, tpCPU/gb), append(cpuTP.base, pfCPU/gb)
				cpuAll.tp, cpuAll.base = append(cpuAll.tp, tpAll/gb), append(cpuAll.base, pfAll/gb)
				if shimPID > 0 {
					cpuShim.tp = append(cpuShim.tp, shimCPU/gb)
				}
			case &kaP50:
				kaP99.tp, kaP99.base = append(kaP99.tp, tr.P99), append(kaP99.base, br.P99)
				kaCounts = append(kaCounts, fmt.Sprintf("%d/%d", tr.Count, br.Count))
			case &ncP50:
				ncP99.tp, ncP99.base = append(ncP99.tp, tr.P99), append(ncP99.base, br.P99)
				ncCounts = append(ncCounts, fmt.Sprintf("%d/%d", tr.Count, br.Count))
			case &conns:
				if tr.Errors+br.Errors > 0 {
					connErrs = append(connErrs, fmt.Sprintf("%d/%d failed (%s%s)", tr.Errors, br.Errors, tr.Err, br.Err))
				}
			}
		}
		if !wanted(mem100.short) {
			continue
		}
		logf(e, "run %d: 100 connections", i+1)
		// 100 connections: reset podshim's peak, load both sides the same way.
		if err := os.WriteFile(filepath.Join(cg, "memory.max_usage_in_bytes"), []byte("0"), 0); err != nil {
			return nil, fmt.Errorf("resetting podshim's peak memory: %w", err)
		}
		h := op{Op: "hold", Streams: 100, Max: time.Second}
		hT, hB := h, h
		hT.URL, hT.Via, hB.URL = remote+dl(1), "socks", local+dl(1)
		err := pair(i, func() error { _, err := s.do(hT); return err }, func() error { _, err := direct(hB); return err })
		if err != nil {
			return nil, err
		}
		peak, err := readMiB(filepath.Join(cg, "memory.max_usage_in_bytes"))
		if err != nil {
			return nil, err
		}
		mem100.tp = append(mem100.tp, peak)
	}
	tpAnon, pfAnon := stopSampling()
	anon.tp, anon.base = []float64{tpAnon}, []float64{pfAnon}
	tpRSS, err := vmHWM(s.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	pfRSS, err := vmHWM(pfCmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	client.tp, client.base = []float64{tpRSS}, []float64{pfRSS}
	if v, err := cgroupHWM(cg); err == nil {
		shimRSS.tp = []float64{v}
	} else {
		shimRSS.name += fmt.Sprintf(" (not read: %v)", err)
		shimRSS.tp = []float64{0}
	}
	kaP50.name += fmt.Sprintf(" (requests per run, tp/baseline: %s)", strings.Join(kaCounts, ", "))
	ncP50.name += fmt.Sprintf(" (requests per run, tp/baseline: %s)", strings.Join(ncCounts, ", "))
	if len(connErrs) > 0 {
		conns.name += " — errors: " + fmt.Sprint(connErrs)
	}
	return []row{socks1, http1, par8, direct1, direct8, cpuTP, cpuAll, cpuShim, kaP50, kaP99, ncP50, ncP99, conns, memIdle, mem100, shimRSS, client, anon}, nil
}

// measureReverse times the --expose path: a pod in the cluster downloads from a local server
// through the session's pod. The baseline pushes the same bytes the same way (local → pod through
// the API server) over a raw `kubectl port-forward`: a local POST to a sink in the client pod.
func measureReverse(e *env) (row, error) {
	r := row{name: fmt.Sprintf("reverse path, %d MiB: in-cluster client → `--expose` → local server, vs local client POSTing the same bytes to the pod over `kubectl port-forward` (same direction through the API server)", *revMB),
		short: "reverse (--expose)", unit: "MB/s", higherBetter: true}
	logf(e, "reverse path")
	port, err := freePort()
	if err != nil {
		return r, err
	}
	pf, pfCmd, err := portForward(e, "pod/bclient", 9090)
	if err != nil {
		return r, err
	}
	defer stopProcess(pfCmd)
	s, err := startSession(e, []string{"--transparent=false", "--expose", fmt.Sprintf("%d:8080", port)}, "serve", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return r, err
	}
	defer s.stop()
	ip, err := kubectl(e.ctx, e.kcfg, "get", "pod", "-n", *ns, s.first.Pod, "-o", "jsonpath={.status.podIP}")
	if err != nil || ip == "" {
		return r, fmt.Errorf("session pod IP: %v %s", err, ip)
	}
	for i := range *runs {
		err := pair(i, func() error {
			out, err := kubectl(e.ctx, e.kcfg, "exec", "-n", *ns, "bclient", "--", "/b/bench", "-child", "fetch",
				fmt.Sprintf("http://%s:8080/bytes?mb=%d", ip, *revMB))
			if err != nil {
				return fmt.Errorf("in-cluster fetch: %v: %s", err, out)
			}
			var v struct{ Seconds, Bytes float64 }
			if err := json.Unmarshal([]byte(out), &v); err != nil || v.Seconds == 0 {
				return fmt.Errorf("in-cluster fetch: %q: %v", out, err)
			}
			r.tp = append(r.tp, v.Bytes/1e6/v.Seconds)
			return nil
		}, func() error {
			v, err := upload(e.ctx, fmt.Sprintf("http://127.0.0.1:%d/sink", pf), *revMB)
			if err != nil {
				return err
			}
			r.base = append(r.base, v)
			return nil
		})
		if err != nil {
			return r, err
		}
	}
	if len(r.tp) == 0 {
		return r, errors.New("no reverse-path runs")
	}
	return r, nil
}

// logf reports progress on stderr with the RTT and the time since the RTT's start.
func logf(e *env, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: [RTT %s +%s] %s\n", rttName(e.rtt), time.Since(e.began).Round(time.Second), fmt.Sprintf(format, args...))
}
