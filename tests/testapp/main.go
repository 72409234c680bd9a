// Command testapp is the application the e2e tests run in the cluster. It serves a few
// HTTP endpoints on a plain port and on a TLS port (with a self-signed certificate made
// in memory at start and published at /ca.pem), a raw TCP echo port and a plain health
// port, and shuts down gracefully on SIGTERM or SIGINT. `testapp get URL` prints a URL's body.
//
// It leaves out: persistent or CA-issued certificates, authentication, HTTP/2 tuning,
// metrics and any configuration file; it is a test fixture, not a product.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long a graceful shutdown waits for open requests.
const shutdownTimeout = 10 * time.Second

func main() {
	// `testapp get URL`: a tiny curl, for in-cluster requests with kubectl exec (the image has no shell).
	if len(os.Args) == 3 && os.Args[1] == "get" {
		if err := get(os.Stdout, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "testapp get:", err)
			os.Exit(1)
		}
		return
	}
	// `testapp requests [-h2] URL SPEC...`: requests with chosen headers on one connection.
	if len(os.Args) > 1 && os.Args[1] == "requests" {
		if err := requests(os.Stdout, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "testapp requests:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(flag.CommandLine, os.Args[1:], os.Getenv)
	if err != nil {
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		log.Fatalf("testapp: %v", err)
	}
}

// parseFlags reads the configuration from args, with environment defaults from getenv.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (config, error) {
	var cfg config
	var names string
	fs.StringVar(&cfg.httpAddr, "http", envOr(getenv, "HTTP_ADDR", ":8080"), "plain HTTP listen `address` (env HTTP_ADDR; empty disables)")
	fs.StringVar(&cfg.httpsAddr, "https", ":8443", "HTTPS listen `address` (empty disables)")
	fs.StringVar(&cfg.echoAddr, "echo", ":9000", "raw TCP echo listen `address` (empty disables)")
	fs.StringVar(&cfg.healthAddr, "health", ":8081", "health-check HTTP listen `address` (empty disables)")
	fs.StringVar(&names, "tls-names", "localhost", "comma-separated DNS `names` and IPs of the TLS certificate")
	fs.StringVar(&cfg.color, "color", envOr(getenv, "COLOR", "green"), "`color` served at /color (env COLOR)")
	fs.DurationVar(&cfg.drain, "drain", 0, "keep serving this `long` after SIGTERM before shutting down (as an app with a preStop delay does)")
	fs.StringVar(&cfg.probeURL, "probe", "", "request this `URL` every -probe-every, each on a new connection, and serve the counts at GET /probe (?reset=1 restarts them)")
	fs.DurationVar(&cfg.probeEvery, "probe-every", 50*time.Millisecond, "the probe's `interval`")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() != 0 {
		err := fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
		fmt.Fprintln(fs.Output(), "testapp:", err)
		return config{}, err
	}
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			cfg.tlsNames = append(cfg.tlsNames, n)
		}
	}
	return cfg, nil
}

// envOr returns the environment variable key, or def when it is unset or empty.
func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// run serves until SIGTERM or SIGINT, then shuts down gracefully.
func run(cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := start(cfg)
	if err != nil {
		return err
	}
	log.Printf("testapp: listening http=%s https=%s echo=%s health=%s color=%s",
		s.httpAddr, s.httpsAddr, s.echoAddr, s.healthAddr, cfg.color)
	var serveErr error
	select {
	case <-ctx.Done():
		if cfg.drain > 0 {
			log.Printf("testapp: signal received, serving %s more before shutting down", cfg.drain)
			time.Sleep(cfg.drain)
		}
		log.Print("testapp: signal received, shutting down")
	case serveErr = <-s.errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return errors.Join(serveErr, s.shutdown(sctx))
}
