package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// section is the table's rows at one added RTT.
type section struct {
	rtt  time.Duration
	rows []row
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

// cell formats a median with its min–max (only the value for a single sample).
func cell(v []float64, unit string) string {
	m, lo, hi := stats(v)
	f := "%.2f"
	if m >= 100 {
		f = "%.0f"
	} else if m >= 10 {
		f = "%.1f"
	}
	if len(v) == 1 {
		return fmt.Sprintf(f+" %s", m, unit)
	}
	return fmt.Sprintf(f+" %s ("+f+"–"+f+")", m, unit, lo, hi)
}

// ratio is the kubectl-tp median over the baseline median (ok false without a baseline).
func (r row) ratio() (float64, bool) {
	if len(r.base) == 0 || len(r.tp) == 0 {
		return 0, false
	}
	b, _, _ := stats(r.base)
	t, _, _ := stats(r.tp)
	if b == 0 {
		return 0, false
	}
	return t / b, true
}

// addedText is the difference of the medians, kubectl-tp − baseline, such as "12 µs" (ok false
// unless the row asks for it and has both).
func (r row) addedText() (string, bool) {
	if !r.added || len(r.base) == 0 || len(r.tp) == 0 {
		return "", false
	}
	b, _, _ := stats(r.base)
	t, _, _ := stats(r.tp)
	f := "%.0f %s"
	if d := t - b; d > -10 && d < 10 {
		f = "%.1f %s"
	}
	return fmt.Sprintf(f, t-b, r.unit), true
}

// verdict is "met", "not met" or "" (no goal).
func (r row) verdict() string {
	if r.met == nil || len(r.tp) == 0 {
		return ""
	}
	t, _, _ := stats(r.tp)
	q, _ := r.ratio()
	if r.met(t, q) {
		return "met"
	}
	return "**not met**"
}

func rttName(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

// tableMarkdown renders sections as one table.
func tableMarkdown(secs []section) string {
	var b strings.Builder
	b.WriteString("\n| RTT | measurement | kubectl-tp | baseline | ratio | goal |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, s := range secs {
		for _, r := range s.rows {
			base := r.baseNote
			if len(r.base) > 0 {
				base = cell(r.base, r.unit)
			}
			ratio := "—"
			if q, ok := r.ratio(); ok {
				dir := "lower is better"
				if r.higherBetter {
					dir = "higher is better"
				}
				ratio = fmt.Sprintf("%.2f× (%s)", q, dir)
			}
			goal := "—"
			if r.goal != "" {
				goal = r.goal + ": " + r.verdict()
			}
			if a, ok := r.addedText(); ok {
				if r.goal == "" {
					goal = "adds " + a
				} else {
					goal += " (adds " + a + ")"
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", rttName(s.rtt), r.name, cell(r.tp, r.unit), base, ratio, goal)
		}
	}
	return b.String()
}

// goalSummary lists each goal and the RTTs where it was met or missed.
func goalSummary(secs []section) string {
	type g struct {
		text      string
		met, miss []string
	}
	var order []string
	goals := map[string]*g{}
	for _, s := range secs {
		for _, r := range s.rows {
			if r.goal == "" || len(r.tp) == 0 {
				continue
			}
			key := r.short + " " + r.goal
			if goals[key] == nil {
				goals[key] = &g{text: fmt.Sprintf("%s %s", r.short, r.goal)}
				order = append(order, key)
			}
			at := rttName(s.rtt)
			if a, ok := r.addedText(); ok {
				at += " (adds " + a + ")"
			} else if q, ok := r.ratio(); ok && !r.absGoal {
				at += fmt.Sprintf(" (%.2f×)", q)
			} else {
				t, _, _ := stats(r.tp)
				at += fmt.Sprintf(" (%.1f %s)", t, r.unit)
			}
			if r.verdict() == "met" {
				goals[key].met = append(goals[key].met, at)
			} else {
				goals[key].miss = append(goals[key].miss, at)
			}
		}
	}
	var b strings.Builder
	b.WriteString("\n## Goals\n\n| goal | met at RTT | not met at RTT |\n| --- | --- | --- |\n")
	for _, k := range order {
		x := goals[k]
		met, miss := strings.Join(x.met, ", "), strings.Join(x.miss, ", ")
		if met == "" {
			met = "—"
		}
		if miss == "" {
			miss = "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", x.text, met, miss)
	}
	return b.String()
}

// windowNote says how the delaying proxy bounds the bytes in flight.
func windowNote() string {
	if *rttWindow <= 0 {
		return "the proxy buffers without limit (-rtt-window 0), so a long link has no bandwidth-delay cap: raw port-forward, which has no flow control of its own, then barely slows with RTT while kubectl-tp's per-stream windows do see it"
	}
	return fmt.Sprintf("at most %.1f MiB in flight per direction per round trip (-rtt-window, this kernel's largest TCP receive window), the bandwidth-delay cap a real TCP connection to the API server has on such a link", float64(*rttWindow)/(1<<20))
}

// report is the whole Markdown document.
func report(in info, secs []section) string {
	var b strings.Builder
	var rs []string
	for _, s := range secs {
		rs = append(rs, rttName(s.rtt))
	}
	fmt.Fprintf(&b, "# kubectl-tp benchmarks\n\nWritten by `make bench` (`go run ./tests/bench`, see its package doc) on %s in %s.\n\n", in.date, in.runtime.Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %s memory, Linux %s; a single-node local cluster (tests/cluster) on the same machine. Load average (1, 5, 15 min) before the bench: %s; after: %s (how quiet the machine was; the bench itself adds about 1–2).\n", in.cpus, in.cpuModel, in.memory, in.kernel, in.loadBefore, in.loadAfter)
	fmt.Fprintf(&b, "- Versions: %s (image `%s`), Kubernetes server %s, kubectl %s, %s.\n", in.plugin, *podImage, in.server, in.kubectl, in.goVersion)
	fmt.Fprintf(&b, "- Method: %d runs per measurement, kubectl-tp and the baseline alternating (the order flips each run); each cell is the median with min–max. Ratio = kubectl-tp median ÷ baseline median. Added RTT: %s, by a delaying TCP proxy in front of the API server (tests/latency), so it applies to every API-server hop of both kubectl-tp and kubectl, and by a second one in front of the pods' direct-path port %d (iptables REDIRECT of this machine's connections to it), so the direct path is as far away as the API server; %s.\n", *runs, strings.Join(rs, ", "), directPort, windowNote())
	fmt.Fprintf(&b, "- Targets: the test app pod `bulk`, by pod IP through kubectl-tp and by `kubectl port-forward pod/bulk` for the baseline (its /bytes serves random bytes, which no compression on the path can shrink). Latency rows: GET /color, up to %d requests or %s per run (the request counts are in the row). Connections/s: %s per run.\n", *latN, *latMax, *connDur)
	b.WriteString("- Memory: podshim from its container's memory cgroup (v1; includes page cache), idle 2 s after start and the peak while 100 connections each download 1 MiB at once and stay open 1 s; client = peak RSS (VmHWM) of the kubectl-tp process and of the baseline `kubectl port-forward` after the same workload.\n")
	fmt.Fprintf(&b, "- Data path: kubectl-tp multiplexes every connection (yamux) on four port-forward streams to podshim (each connection on the least busy), which dials the destination; `kubectl port-forward` opens a port-forward stream pair per connection straight to the pod's port. Connections/s: %d concurrent dialers on both sides, so the row measures capacity rather than round trips. CPU rows: user+system time of the laptop process (and of podshim) over the 1-stream SOCKS5 downloads.\n", *connWorkers)
	fmt.Fprintf(&b, "- Transparent mode (the `connect()`, `transparent` and `python` rows): the sessions of every other row run with `--transparent=false` (proxy variables); these rows use one `--transparent=true` session whose agent makes plain connections, which the seccomp filter traps. connect(): %d raw IPv4 sockets per run, only the connect(2) call timed (each connection then sends a GET and reads to the end, untimed, so no earlier one is still being carried while the next is timed); trapped = to a loopback listener in the agent (let through), diverted = to the bulk Service's ClusterIP (blocking: returns after the dial through the tunnel; non-blocking: returns once connected to kubectl-tp's loopback redirector); the baseline is the same loop in the bench process outside any session, against its own loopback listener, and the goal column shows the difference of the medians. Bulk: curl without proxy in the transparent session, curl through SOCKS5 in a `--transparent=false` session and curl to `kubectl port-forward pod/bclient`, in rotating order, downloading random bytes from the bench's sink in the `bclient` pod. No network work: %d runs of `python3 -c '%s'` (the interpreter resolved once, past any pyenv shim) timed by the agent in the transparent session and by the bench outside any session.\n", *connectN, *pythonN, pythonImports)
	fmt.Fprintf(&b, "- Files at their real paths (the `files start-up`, `python imports` and `read mounted file` rows): sessions in transparent mode with `--from pod/bfiles` (a configMap at %s), one with the volumes at their real paths and one with `--real-paths=false`; start-up is the whole `kubectl tp run … -- true`; the agent of each session runs %d × `python3 -c '%s'`; the reads are one python3 reading the 64 KiB key %d times by its real path and by its `$TP_ROOT` path, in the session with real paths.\n", filesMount, *pythonN, pythonStdlib, readsPerRun)
	b.WriteString("- Intercepts (the `intercept` rows): one `--transparent=false` session intercepts Service `bulk` port 8080 for requests carrying `x-bench=laptop`; the in-cluster client `bclient` (`kubectl exec`) sends requests without that header through the Service, so through the router to the pod, against the same requests straight to the pod's IP.\n")
	b.WriteString("- Caveats: the proxy models delay and a TCP window, not congestion control or loss; the 2 CPUs also run the cluster, curl and the bench, so throughput rows vary by tens of percent between runs.\n")
	b.WriteString(tableMarkdown(secs))
	b.WriteString(goalSummary(secs))
	b.WriteString("\n![ratios kubectl-tp ÷ baseline per RTT](benchmarks.png)\n")
	return b.String()
}
