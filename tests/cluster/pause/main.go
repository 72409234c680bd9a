// Command pause is the pod sandbox binary of the e2e cluster: it blocks until SIGTERM
// or SIGINT and then exits 0, and, because it may be PID 1 of a pod's PID namespace,
// reaps every child that exits (on SIGCHLD, a wait4 loop).
//
// It leaves out the Kubernetes pause image's extras: a -v version flag, the SIGUSR
// handling and any output; it is meant to be built static (CGO_ENABLED=0).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	reap()
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			reap()
		}
	}
}

// reap collects every child that has exited, without blocking, and returns how many.
func reap() int {
	n := 0
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return n
		}
		n++
	}
}
