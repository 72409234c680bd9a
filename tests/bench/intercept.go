package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
// The matching requests are measureInterceptMatching's. It starts nothing when -only selects none
// of its rows.
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

// measureInterceptMatching runs the row of matching requests: Deployment `bswap` (its pod answers
// /color with 8 bytes) behind Service `bswap`, and a local server (the bench's serve mode, 6
// bytes) either intercepting it for x-bench=laptop or swapped in for it with --swap-deployment;
// the in-cluster client sends kept-alive requests carrying the header through the Service. Each
// run starts and ends one session of each kind, alternating.
func measureInterceptMatching(e *env) ([]row, error) {
	n := *latN
	p50 := row{name: fmt.Sprintf("in-cluster GET /color, %d kept-alive requests carrying the intercepted header, reaching a local server: `--intercept` vs `--swap-deployment` of the same Deployment, p50", n),
		short: "intercept matching p50", unit: "ms", goal: "≈ 1.0× (≤ 1.1×)", met: le(1.1)}
	p99 := row{name: "the same, p99", short: "intercept matching p99", unit: "ms"}
	if !wanted(p50.short) && !wanted(p99.short) {
		return nil, nil
	}
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: bswap}
spec:
  replicas: 1
  selector: {matchLabels: {app: bswap}}
  template:
    metadata: {labels: {app: bswap}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: %s, imagePullPolicy: IfNotPresent, args: ["-http=:8080", "-https=", "-echo=", "-health=", "-color=realpod"], ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: bswap}
spec:
  selector: {app: bswap}
  ports: [{port: 8080}]
`, *appImage)
	if out, err := kubectlIn(e.ctx, e.kcfg, manifest, "apply", "-n", *ns, "-f", "-"); err != nil {
		return nil, fmt.Errorf("deploying bswap: %v: %s", err, out)
	}
	if out, err := kubectl(e.ctx, e.kcfg, "rollout", "status", "-n", *ns, "deployment/bswap", "--timeout=120s"); err != nil {
		return nil, fmt.Errorf("waiting for bswap: %v: %s", err, out)
	}
	inCluster := func(args ...string) (string, error) {
		return kubectl(e.ctx, e.kcfg, append([]string{"exec", "-n", *ns, "bclient", "--", "/b/bench", "-child"}, args...)...)
	}
	const url, header = "http://bswap:8080/color", "x-bench=laptop"
	// reachesLocal waits until the requests reach the local server (its answer is 6 bytes).
	reachesLocal := func() error {
		for try := 0; try < 120; try++ {
			out, err := inCluster("fetch", url, header)
			var v struct{ Bytes float64 }
			if err == nil && json.Unmarshal([]byte(out), &v) == nil && v.Bytes == 6 {
				return nil
			}
			time.Sleep(500 * time.Millisecond)
		}
		return errors.New("requests did not reach the local server within a minute")
	}
	one := func(flags []string, tp bool) func() error {
		return func() error {
			port, err := freePort()
			if err != nil {
				return err
			}
			s, err := startSession(e, append([]string{"--transparent=false", "--expose", fmt.Sprintf("%d:8080", port)}, flags...), "serve", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return err
			}
			defer s.stop()
			if err := reachesLocal(); err != nil {
				return fmt.Errorf("%v: %w", flags, err)
			}
			out, err := inCluster("latency-in", url, fmt.Sprint(n), header)
			if err != nil {
				return fmt.Errorf("in-cluster latency: %v: %s", err, out)
			}
			var r result
			if err := json.Unmarshal([]byte(out), &r); err != nil || r.Err != "" {
				return fmt.Errorf("in-cluster latency: %q: %v", out, err)
			}
			if tp {
				p50.tp, p99.tp = append(p50.tp, r.P50), append(p99.tp, r.P99)
			} else {
				p50.base, p99.base = append(p50.base, r.P50), append(p99.base, r.P99)
			}
			return nil
		}
	}
	for i := range *runs {
		logf(e, "run %d: intercept vs swap, matching requests", i+1)
		if err := pair(i, one([]string{"--intercept", "bswap:8080", "--header", header}, true), one([]string{"--swap-deployment", "bswap"}, false)); err != nil {
			return nil, err
		}
	}
	return []row{p50, p99}, nil
}
