package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// Files at their real paths (`--real-paths`, transparent mode with --from): what a program pays
// for seeing the workload's volumes at their mount paths.
const (
	// pythonStdlib imports a good part of the standard library: some hundreds of files opened
	// and stat'ed outside the mounts.
	pythonStdlib = "import json, email, email.mime.multipart, http.client, asyncio, unittest, xml.dom.minidom, logging.handlers, decimal, argparse, sqlite3, csv, tarfile, zipfile"
	// filesMount is where the pod `bfiles` has its configMap; bigKey is a 64 KiB key of it.
	filesMount  = "/etc/bench"
	bigKey      = "big.txt"
	readsPerRun = 20000
)

// filesManifest is the workload the rows' sessions stand in for (with --from pod/bfiles).
func filesManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: bfiles}
data:
  config.yaml: "mode: bench\n"
  %[2]s: "%[3]s"
---
apiVersion: v1
kind: Pod
metadata: {name: bfiles}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %[1]s
    imagePullPolicy: IfNotPresent
    args: ["-http=:8080", "-https=", "-echo=", "-health=:8081"]
    volumeMounts: [{name: cfg, mountPath: %[4]s}]
  volumes: [{name: cfg, configMap: {name: bfiles}}]
`, *appImage, bigKey, strings.Repeat("0123456789abcdef", 4096), filesMount)
}

// measureFiles runs the rows of --real-paths, each pair alternating:
//
//   - start-up of `kubectl tp run --from pod/bfiles -- true` (transparent mode) with the volumes
//     at their real paths vs under $TP_ROOT only (--real-paths=false): the namespace set-up's
//     one-time cost;
//   - python3 importing much of the standard library (files outside the mounts), run by an agent
//     in a session with real paths vs one without: the cost per file operation;
//   - one python3 reading a 64 KiB mounted file 20,000 times at its real path vs at its $TP_ROOT
//     copy, in the session with real paths.
//
// It starts nothing when -only selects none of its rows.
func measureFiles(e *env) ([]row, error) {
	startRow := row{name: "start-up of `kubectl tp run --from pod/bfiles -- true` (transparent mode): volumes at their real paths vs under $TP_ROOT only (`--real-paths=false`)",
		short: "files start-up real paths", unit: "s", goal: "≤ 1.05×", met: le(1.05)}
	pyRow := row{name: fmt.Sprintf("%d × `python3 -c '%s'` (files outside the mounts): in a session with real paths vs one with `--real-paths=false`", *pythonN, pythonStdlib),
		short: "python imports, real paths", unit: "s", goal: "≤ 1.05×", met: le(1.05)}
	readRow := row{name: fmt.Sprintf("python3 reading a 64 KiB mounted file %d times: at its real path (%s/%s) vs its $TP_ROOT copy, same session", readsPerRun, filesMount, bigKey),
		short: "read mounted file, real path", unit: "s", goal: "≤ 1.05×", met: le(1.05)}
	want := func(r row) bool { return wanted(r.short) }
	if !want(startRow) && !want(pyRow) && !want(readRow) {
		return nil, nil
	}
	if out, err := kubectlIn(e.ctx, e.kcfg, filesManifest(), "apply", "-n", *ns, "-f", "-"); err != nil {
		return nil, fmt.Errorf("deploying pod bfiles: %v: %s", err, out)
	}
	if out, err := kubectl(e.ctx, e.kcfg, "wait", "-n", *ns, "--for=condition=Ready", "pod/bfiles", "--timeout=120s"); err != nil {
		return nil, fmt.Errorf("waiting for pod bfiles: %v: %s", err, out)
	}
	py, err := exec.CommandContext(e.ctx, *python, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", *python, err)
	}
	interp := strings.TrimSpace(string(py))
	from := []string{"--transparent=true", "--from", "pod/bfiles"}

	if want(startRow) {
		logf(e, "files: start-up")
		once := func(flags []string, into *[]float64) func() error {
			return func() error {
				t0 := time.Now()
				args := append([]string{"--kubeconfig", e.kcfg, "run", "-n", *ns, "--quiet", "--image", *podImage}, flags...)
				cmd := background(e.ctx, e.plugin, append(args, "--", "true")...)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("kubectl tp run %v: %v: %s", flags, err, out)
				}
				*into = append(*into, time.Since(t0).Seconds())
				return nil
			}
		}
		for i := range *runs {
			if err := pair(i, once(from, &startRow.tp), once(append(slices.Clone(from), "--real-paths=false"), &startRow.base)); err != nil {
				return nil, err
			}
		}
	}
	if !want(pyRow) && !want(readRow) {
		return []row{startRow}, nil
	}
	on, err := startSession(e, from, "agent")
	if err != nil {
		return nil, err
	}
	defer on.stop()
	off, err := startSession(e, append(slices.Clone(from), "--real-paths=false"), "agent")
	if err != nil {
		return nil, err
	}
	defer off.stop()
	readLoop := func(path string) op {
		prog := fmt.Sprintf("import os\np = %s\nfor _ in range(%d):\n    with open(p, 'rb') as f: f.read()", path, readsPerRun)
		return op{Op: "exec", Args: []string{interp, "-c", prog}, N: 1}
	}
	for i := range *runs {
		if want(pyRow) {
			logf(e, "run %d: files: python imports", i+1)
			o := op{Op: "exec", Args: []string{interp, "-c", pythonStdlib}, N: *pythonN}
			if err := pair(i, sessionOp(on, o, &pyRow.tp), sessionOp(off, o, &pyRow.base)); err != nil {
				return nil, err
			}
		}
		if want(readRow) {
			logf(e, "run %d: files: reads", i+1)
			real := readLoop(fmt.Sprintf("%q", filesMount+"/"+bigKey))
			copied := readLoop(fmt.Sprintf("os.environ['TP_ROOT'] + %q", filesMount+"/"+bigKey))
			if err := pair(i, sessionOp(on, real, &readRow.tp), sessionOp(on, copied, &readRow.base)); err != nil {
				return nil, err
			}
		}
	}
	return []row{startRow, pyRow, readRow}, nil
}

// sessionOp runs o in s's agent and appends its value to into.
func sessionOp(s *session, o op, into *[]float64) func() error {
	return func() error {
		r, err := s.do(o)
		if err != nil {
			return err
		}
		*into = append(*into, r.Value)
		return nil
	}
}
