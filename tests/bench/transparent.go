package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// pythonImports is the no-network row's program.
const pythonImports = "import json, email, http.client"

// measureTransparent runs the rows of transparent mode (`kubectl tp run --transparent=true`):
//
//   - connect(2) latency of raw IPv4 sockets: outside any session to a loopback listener (the
//     baseline), in a transparent session to a loopback listener (trapped by the seccomp filter and
//     let through), and in a transparent session to the bulk Service's ClusterIP (diverted:
//     a blocking connect returns after the tunnel's dial, a non-blocking one once the socket is
//     connected to the loopback redirector, the dial following);
//   - one-stream download of random bytes (the bench sink's /bytes) by curl without a proxy in the
//     transparent session, against the same curl through SOCKS5 in a --transparent=false session
//     and straight to `kubectl port-forward`, the three in rotating order;
//   - a run of python3 with no network work, in the transparent session and outside any session.
//
// It starts nothing when -only selects none of its rows.
func measureTransparent(e *env) ([]row, error) {
	n := *connectN
	const us = "µs"
	trapP50 := row{name: fmt.Sprintf("connect() p50, %d blocking connects to a loopback listener: in a transparent session (trapped and let through) vs outside any session", n),
		short: "connect() trapped p50", unit: us, added: true}
	trapP99 := row{name: "connect() p99, the same: trapped and let through vs outside any session", short: "connect() trapped p99", unit: us, added: true}
	divP50 := row{name: fmt.Sprintf("connect() p50, %d blocking connects to the bulk Service's ClusterIP in a transparent session (diverted; returns after the dial through the tunnel) vs blocking connects to a loopback listener outside any session", n),
		short: "connect() diverted p50", unit: us, added: true, goal: "adds ≤ 250 µs", met: addsAtMost(250)}
	divP99 := row{name: "connect() p99, the same: diverted (blocking) vs loopback outside any session", short: "connect() diverted p99", unit: us, added: true}
	nbP50 := row{name: fmt.Sprintf("connect() p50, %d non-blocking connects to the bulk Service's ClusterIP in a transparent session (diverted; returns once connected to the loopback redirector, the tunnel's dial follows) vs non-blocking connects to a loopback listener outside any session", n),
		short: "connect() nonblock diverted p50", unit: us, added: true, goal: "adds ≤ 250 µs", met: addsAtMost(250)}
	nbP99 := row{name: "connect() p99, the same: diverted (non-blocking) vs loopback outside any session", short: "connect() nonblock diverted p99", unit: us, added: true}
	bulkS := row{name: fmt.Sprintf("bulk download, 1 stream, %d MiB of random bytes (bench sink pod): transparent mode (curl without proxy, its connect diverted) vs SOCKS5 (a `--transparent=false` session)", *mb),
		short: "1 stream transparent vs SOCKS5", unit: "MB/s", higherBetter: true, goal: "≥ 0.95×", met: ge(0.95)}
	bulkP := row{name: fmt.Sprintf("bulk download, 1 stream, %d MiB of random bytes (bench sink pod): transparent mode vs `kubectl port-forward pod/bclient` (same runs as the row above)", *mb),
		short: "1 stream transparent vs port-fwd", unit: "MB/s", higherBetter: true}
	cpu := row{name: fmt.Sprintf("laptop CPU per GB downloaded (the 1-stream %d MiB downloads above; user+system time of the kubectl-tp process): transparent mode vs SOCKS5", *mb),
		short: "CPU/GB transparent vs SOCKS5", unit: "s/GB"}
	py := row{name: fmt.Sprintf("%d × `python3 -c '%s'` one after the other (no network work): in a transparent session vs outside any session", *pythonN, pythonImports),
		short: "python no network, transparent", unit: "s", goal: "≤ 1.05×", met: le(1.05)}
	want := func(rs ...*row) bool { return slices.ContainsFunc(rs, func(r *row) bool { return wanted(r.short) }) }
	connRows := []*row{&trapP50, &trapP99, &divP50, &divP99, &nbP50, &nbP99}
	wantConn, wantBulk, wantPy := want(connRows...), want(&bulkS, &bulkP, &cpu), want(&py)
	if !wantConn && !wantBulk && !wantPy {
		return nil, nil
	}

	var pyArgs []string
	if wantPy {
		out, err := exec.CommandContext(e.ctx, *python, "-c", "import sys; print(sys.executable)").Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", *python, err)
		}
		pyArgs = []string{strings.TrimSpace(string(out)), "-c", pythonImports}
	}
	ts, err := startSession(e, []string{"--transparent=true"}, "agent")
	if err != nil {
		return nil, err
	}
	defer ts.stop()
	var ps *session
	var pf int
	if wantBulk {
		var pfCmd *exec.Cmd
		pf, pfCmd, err = portForward(e, "pod/bclient", 9090)
		if err != nil {
			return nil, err
		}
		defer stopProcess(pfCmd)
		if ps, err = startSession(e, []string{"--transparent=false"}, "agent"); err != nil {
			return nil, err
		}
		defer ps.stop()
	}

	diverted := e.bulkSvc + ":8080"
	var connErrs, divCounts []string
	noteErrs := func(what string, r result) {
		if r.Errors > 0 {
			connErrs = append(connErrs, fmt.Sprintf("%s: %s", what, r.Err))
		}
	}
	for i := range *runs {
		if wantConn {
			logf(e, "run %d: connect()", i+1)
			var trap, div, nb, base, baseNB result
			err := pair(i, func() (err error) {
				if trap, err = ts.do(op{Op: "connect", N: n, Max: *connectMax}); err != nil {
					return err
				}
				if div, err = ts.do(op{Op: "connect", URL: diverted, N: n, Carried: true, Max: *connectMax}); err != nil {
					return err
				}
				nb, err = ts.do(op{Op: "connect", URL: diverted, N: n, Nonblock: true, Carried: true, Max: *connectMax})
				return err
			}, func() (err error) {
				if base, err = direct(op{Op: "connect", N: n, Max: *connectMax}); err != nil {
					return err
				}
				baseNB, err = direct(op{Op: "connect", N: n, Nonblock: true, Max: *connectMax})
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, x := range []struct {
				p50, p99 *row
				tp, base result
			}{{&trapP50, &trapP99, trap, base}, {&divP50, &divP99, div, base}, {&nbP50, &nbP99, nb, baseNB}} {
				x.p50.tp, x.p50.base = append(x.p50.tp, x.tp.P50), append(x.p50.base, x.base.P50)
				x.p99.tp, x.p99.base = append(x.p99.tp, x.tp.P99), append(x.p99.base, x.base.P99)
			}
			divCounts = append(divCounts, fmt.Sprintf("%d/%d", div.Count, nb.Count))
			for what, r := range map[string]result{"trapped": trap, "diverted": div, "diverted non-blocking": nb, "baseline": base, "baseline non-blocking": baseNB} {
				noteErrs(what, r)
			}
		}
		if wantBulk {
			logf(e, "run %d: 1 stream transparent / SOCKS5 / port-forward", i+1)
			remote := fmt.Sprintf("http://%s:9090/bytes?mb=%d", e.sinkIP, *mb)
			var tr, sr, pr result
			var tCPU, sCPU float64
			err := rotate(i, func() (err error) {
				c0 := cpuSeconds(ts.cmd.Process.Pid)
				tr, err = ts.do(op{Op: "bulk", URL: remote, Streams: 1})
				tCPU = cpuSeconds(ts.cmd.Process.Pid) - c0
				return err
			}, func() (err error) {
				c0 := cpuSeconds(ps.cmd.Process.Pid)
				sr, err = ps.do(op{Op: "bulk", URL: remote, Via: "socks", Streams: 1})
				sCPU = cpuSeconds(ps.cmd.Process.Pid) - c0
				return err
			}, func() (err error) {
				pr, err = direct(op{Op: "bulk", URL: fmt.Sprintf("http://127.0.0.1:%d/bytes?mb=%d", pf, *mb), Streams: 1})
				return err
			})
			if err != nil {
				return nil, err
			}
			bulkS.tp, bulkS.base = append(bulkS.tp, tr.Value), append(bulkS.base, sr.Value)
			bulkP.tp, bulkP.base = append(bulkP.tp, tr.Value), append(bulkP.base, pr.Value)
			gb := float64(*mb<<20) / 1e9
			cpu.tp, cpu.base = append(cpu.tp, tCPU/gb), append(cpu.base, sCPU/gb)
		}
		if wantPy {
			logf(e, "run %d: python, no network", i+1)
			o := op{Op: "exec", Args: pyArgs, N: *pythonN}
			err := pair(i, func() error {
				r, err := ts.do(o)
				py.tp = append(py.tp, r.Value)
				return err
			}, func() error {
				r, err := direct(o)
				py.base = append(py.base, r.Value)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
	}
	if len(divCounts) > 0 {
		divP50.name += fmt.Sprintf(" (connects timed per run, blocking/non-blocking, at most %d or -connect-max %s: %s)", n, *connectMax, strings.Join(divCounts, ", "))
	}
	if len(connErrs) > 0 {
		slices.Sort(connErrs)
		trapP50.name += " — errors: " + strings.Join(connErrs, "; ")
	}
	return []row{trapP50, trapP99, divP50, divP99, nbP50, nbP99, bulkS, bulkP, cpu, py}, nil
}
