package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitsZeroOnSignal(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pause")
	build := exec.Command(gobin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			waitForHandlers(t, cmd.Process.Pid, done)
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause exited with %v after %s, want exit status 0", err, tt.name)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("pause did not exit within 5s of %s", tt.name)
			}
		})
	}
}

// waitForHandlers waits until process pid catches SIGTERM and SIGINT (the Go runtime's
// handlers, installed just before main calls signal.Notify), then a little longer;
// it fails if the process exits first or takes more than 5s.
func waitForHandlers(t *testing.T, pid int, done <-chan error) {
	t.Helper()
	want := uint64(1)<<(syscall.SIGTERM-1) | uint64(1)<<(syscall.SIGINT-1)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("pause exited before any signal: %v", err)
		default:
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				if caught, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && caught&want == want {
					time.Sleep(50 * time.Millisecond)
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("pause did not install its SIGTERM and SIGINT handlers within 5s")
}

func TestReapCollectsExitedChildren(t *testing.T) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("true not found: %v", err)
	}
	tests := []struct {
		name     string
		children int
	}{
		{"none", 0},
		{"one", 1},
		{"several", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pids []int
			for range tt.children {
				p, err := os.StartProcess(truePath, []string{"true"}, &os.ProcAttr{})
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, p.Pid)
			}
			got := 0
			deadline := time.Now().Add(5 * time.Second)
			for got < tt.children && time.Now().Before(deadline) {
				got += reap()
				time.Sleep(10 * time.Millisecond)
			}
			got += reap()
			if got != tt.children {
				t.Fatalf("reaped %d children, want %d", got, tt.children)
			}
			for _, pid := range pids {
				if _, err := syscall.Wait4(pid, nil, syscall.WNOHANG, nil); err != syscall.ECHILD {
					t.Errorf("child %d still waitable after reap: %v", pid, err)
				}
			}
		})
	}
}
