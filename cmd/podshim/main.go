// Command podshim is the proxy process kubectl-tp runs in a pod. It serves the tunnel
// protocol (package podshim) on a loopback listener reached through the API server's
// port-forward, and exits with status 0 when no client has been heard from for the
// idle timeout (so the pod completes) or on SIGTERM/SIGINT.
//
// The session token comes from the TP_TOKEN environment variable. podshim writes no
// files and logs to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/version"
	"github.com/kubectl-tp/kubectl-tp/podshim"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("podshim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4747", "address to listen on")
	idle := fs.Duration("idle-timeout", podshim.DefaultIdleTimeout, "exit after no client has been heard from for this long")
	insecure := fs.Bool("insecure-no-token", false, "accept requests without a token (testing only)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	ready := fs.String("ready", "", "address to listen on once ports are exposed, for a readiness probe (e.g. :4748)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("podshim", version.Version)
		return 0
	}
	logger := log.New(os.Stderr, "podshim: ", log.LstdFlags|log.LUTC)
	token := os.Getenv("TP_TOKEN")
	if token == "" && !*insecure {
		logger.Print("TP_TOKEN is not set (use -insecure-no-token to run without one)")
		return 2
	}
	if *idle <= 0 {
		logger.Print("-idle-timeout must be positive")
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Print(err)
		return 1
	}
	logger.Printf("version %s listening on %s", version.Version, ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &podshim.Server{
		Token:       token,
		IdleTimeout: *idle,
		ReadyAddr:   *ready,
		Logf:        func(format string, args ...any) { logger.Printf(format, args...) },
	}
	switch err := srv.Serve(ctx, ln); {
	case errors.Is(err, podshim.ErrIdle):
		logger.Printf("no client heard from for %s; exiting", fmtDuration(*idle))
		return 0
	case err != nil:
		logger.Print(err)
		return 1
	}
	logger.Print("signalled; exiting")
	return 0
}

// fmtDuration prints whole seconds as plain seconds ("90s" rather than
// time.Duration's "1m30s"), keeping the idle message stable.
func fmtDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
