package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// measureIntercept runs the rows of personal intercepts: with one session intercepting Service
// `bulk` (port 8080) for requests carrying x-bench=laptop, the in-cluster client `bclient` sends
// requests WITHOUT that header, which go through the router to the real pod, against the same
// requests straight to the pod's IP (the Service's one endpoint, which is what the Service gives
// without an intercept, kube-proxy's in-kernel NAT aside):
//
//   - kept-alive GET /color latency, p50 and p99;
//   - one download of random bytes (/bytes), MB/s.
//
// It leaves out the matching requests (laptop side) against --swap-deployment. It starts nothing
// when -only selects none of its rows.
func measureIntercept(e *env) ([]row, error) {
	n := *latN
	p50 := row{name: fmt.Sprintf("in-cluster GET /color, %d kept-alive requests without the intercepted header: through the intercept router vs straight to the pod, p50", n),
		short: "intercept non-matching p50", unit: "ms", added: true, goal: "adds ≤ 1 ms", met: addsAtMost(1)}
	p99 := row{name: "the same, p99", short: "intercept non-matching p99", unit: "ms", added: true}
	bw := row{name: fmt.Sprintf("in-cluster download of %d MiB of random bytes without the intercepted header: through the intercept router vs straight to the pod", *mb),
		short: "intercept non-matching MB/s", unit: "MB/s", higherBetter: true, goal: "≥ 0.9×", met: ge(0.9)}
	if !wanted(p50.short) && !wanted(p99.short) && !wanted(bw.short) {
		return nil, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logf(e, "intercept: starting a session intercepting service/bulk")
	s, err := startSession(e, []string{"--transparent=false", "--intercept", "bulk:8080", "--header", "x-bench=laptop", "--expose", fmt.Sprintf("%d:8080", port)}, "agent")
	if err != nil {
		return nil, err
	}
	defer s.stop()
	inCluster := func(args ...string) (string, error) {
		return kubectl(e.ctx, e.kcfg, append([]string{"exec", "-n", *ns, "bclient", "--", "/b/bench", "-child"}, args...)...)
	}
	// latency and fetch add their runs to kubectl-tp's column (tp) or the baseline's.
	latency := func(url string, tp bool) func() error {
		return func() error {
			out, err := inCluster("latency-in", url, fmt.Sprint(n))
			if err != nil {
				return fmt.Errorf("in-cluster latency: %v: %s", err, out)
			}
			var r result
			if err := json.Unmarshal([]byte(out), &r); err != nil || r.Err != "" {
				return fmt.Errorf("in-cluster latency: %q: %v", out, err)
			}
			if tp {
				p50.tp = append(p50.tp, r.P50)
				p99.tp = append(p99.tp, r.P99)
			} else {
				p50.base = append(p50.base, r.P50)
				p99.base = append(p99.base, r.P99)
			}
			return nil
		}
	}
	fetch := func(url string, tp bool) func() error {
		return func() error {
			out, err := inCluster("fetch", url)
			if err != nil {
				return fmt.Errorf("in-cluster fetch: %v: %s", err, out)
			}
			var v struct{ Seconds, Bytes float64 }
			if err := json.Unmarshal([]byte(out), &v); err != nil || v.Seconds == 0 {
				return fmt.Errorf("in-cluster fetch: %q: %v", out, err)
			}
			if tp {
				bw.tp = append(bw.tp, v.Bytes/1e6/v.Seconds)
			} else {
				bw.base = append(bw.base, v.Bytes/1e6/v.Seconds)
			}
			return nil
		}
	}
	viaRouter, direct := "http://bulk:8080", "http://"+e.bulkIP+":8080"
	// The router is the Service's endpoint once the session has started; check it answers.
	if out, err := inCluster("latency-in", viaRouter+"/color", "1"); err != nil || strings.Contains(out, `"err"`) {
		return nil, fmt.Errorf("through the router: %v: %s", err, out)
	}
	for i := range *runs {
		logf(e, "run %d: intercept, non-matching requests", i+1)
		if wanted(p50.short) || wanted(p99.short) {
			if err := pair(i, latency(viaRouter+"/color", true), latency(direct+"/color", false)); err != nil {
				return nil, err
			}
		}
		if wanted(bw.short) {
			dl := fmt.Sprintf("/bytes?mb=%d", *mb)
			if err := pair(i, fetch(viaRouter+dl, true), fetch(direct+dl, false)); err != nil {
				return nil, err
			}
		}
	}
	return []row{p50, p99, bw}, nil
}
