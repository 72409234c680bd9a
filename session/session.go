// Package session runs one kubectl-tp session: it checks permissions, starts the proxy pod,
// connects the tunnel through port-forward, serves the laptop-side proxies, runs the child process
// and, on every exit path, deletes what it created.
//
// It is the engine behind `kubectl tp run`; the cmd package only parses flags. What it leaves out:
// the wire protocol (package tunnel), the proxies themselves (package proxy), the pod-side program
// (package podshim) and the streams through the API server (package forward).
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/kubectl-tp/kubectl-tp/envcapture"
	"github.com/kubectl-tp/kubectl-tp/internal/logger"
	"github.com/kubectl-tp/kubectl-tp/proxy"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
	"github.com/kubectl-tp/kubectl-tp/volumes"
)

// tunnelCarriers is how many port-forward streams a session spreads its tunnel streams over. The
// container runtime copies each in one loop, so 8 parallel downloads on one carrier shared one
// loop: in alternating bench runs 4 carriers gave 0.88-1.01x of port-forward's 8-stream throughput
// where one gave 0.73-1.16x. Each costs one port-forward stream and one idle yamux session.
const tunnelCarriers = 4

// Options configure a session. Config, Client, Namespace, Image and Command are required.
type Options struct {
	Config    *rest.Config
	Client    Clientset
	Namespace string
	// Image is the podshim image reference.
	Image string
	// Command is the child's argv.
	Command []string
	// IdleTimeout is how long podshim waits without hearing from us before it exits (default 30 s).
	IdleTimeout time.Duration
	// Heartbeat is the interval of tunnel pings (default 5 s).
	Heartbeat time.Duration
	// StartTimeout bounds the wait for the pod to run (default 2 minutes).
	StartTimeout time.Duration
	// Stdin, Stdout and Stderr are the child's streams; progress and warnings go to Stderr.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Quiet silences progress output (errors are still printed by the caller).
	Quiet bool

	// From, when set, is the workload the proxy pod is built like (env, volumes, service account).
	From *Target
	// EnvFile, EnvJSON and EnvSyntax ask for the captured environment in files (with From).
	EnvFile, EnvJSON, EnvSyntax string
	// Mount is "true" or "" (volumes copied to a private temporary directory, removed on exit),
	// "false" (not copied) or a directory of the user's choice (kept on exit).
	Mount string
	// MaxVolumeBytes bounds the copy of one volume (default 10 MiB).
	MaxVolumeBytes int64
	// Swap, when set, names a Deployment to swap for the proxy pod (Kind "deployments"): From is
	// then the same workload, and the pod keeps the template's labels so its Services select it.
	Swap *Target
	// Expose are the ports the proxy pod listens on and carries back to local ports; with Swap,
	// every TCP containerPort of the container is added (same local port) unless remapped here.
	Expose []PortMap
	// Intercept, when set, takes a Service's requests that carry its headers (all of them without
	// headers) to the child, through the Service's shared router (see intercept.go); the child
	// stands in for the Service's workload unless From says otherwise.
	Intercept *InterceptSpec
	// Transparent chooses transparent mode (the zero value: proxy variables only).
	Transparent TransparentMode
	// Direct carries the tunnel straight to the proxy pod's IP when this machine can reach it
	// (see direct.go); the zero value always uses the API server's port-forward.
	Direct bool
	// NoRealPaths keeps the volume copies under $TP_ROOT only. Otherwise, in transparent mode on
	// Linux, the child also sees them at their mount paths (see package volumes/realpaths).
	NoRealPaths bool
	// AlsoProxy are ranges carried to the cluster in transparent mode besides the cluster's own.
	AlsoProxy []netip.Prefix
	// Verbose prints detail (failed dials, DNS errors) to Stderr.
	Verbose bool
}

// Session is a running session. Its fields are valid after Start returns without error.
type Session struct {
	opts      Options
	ID        string
	PodName   string
	Endpoints Endpoints
	// Captured is the environment of the target workload (with From), filtered for the child.
	Captured []string

	// path is the way to the proxy pod: the port-forward, and the direct path while it works (see
	// direct.go).
	path      podPath
	mux       *tunnel.Mux
	client    *tunnel.Client
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closers   []io.Closer
	podMade   bool
	closeOnce sync.Once

	mirror     *volumes.Mirror
	removeRoot bool
	// swapped is the Deployment this session scaled down ("" when none).
	swapped string
	// closeErr is what Close reported (Close runs once).
	closeErr error
	// handedBack is set once HandBack ran (see handover.go).
	handedBack bool
	// runCtx lives from the end of Start until Close.
	runCtx context.Context
	// watchdog is set when the swap's watchdog runs (see startWatchdog).
	watchdog bool
	// Exposed are the ports served back to the laptop (pod port → local port).
	Exposed []PortMap
	// transparent is set when the child runs in transparent mode.
	transparent *transparent
	// intercept is set with Options.Intercept.
	intercept *intercepting

	// podTemplate is the proxy pod as first created; replacements are copies of it.
	podTemplate *corev1.Pod
	podSeq      int
	podMu       sync.Mutex   // guards PodName once the session runs
	healMu      sync.Mutex   // one replacement at a time
	retargeted  atomic.Int64 // when the tunnel last moved to a replacement pod (UnixNano)
	lost        chan struct{}
	lostErr     error
	endOnce     sync.Once
}

func (o *Options) defaults() {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.MaxVolumeBytes == 0 {
		o.MaxVolumeBytes = 10 << 20
	}
}

// Run starts a session, runs the child in it and tears everything down. It returns the child's
// exit code; err is non-nil when the session itself failed (the exit code is then 1, or 127 when
// the command was not found).
func Run(ctx context.Context, opts Options) (code int, runErr error) {
	if _, err := LookPath(opts.Command[0]); err != nil {
		return ExitCommandNotFound, err
	}
	s, err := Start(ctx, opts)
	if s != nil {
		// A failed clean-up (a Deployment left swapped, a pod left running) is an error of the
		// run, whatever the child's exit code: the user must see it and the exit code say so.
		defer func() {
			if cerr := s.Close(); cerr != nil {
				code, runErr = max(code, 1), errors.Join(runErr, cerr)
			}
		}()
	}
	if err != nil {
		return 1, err
	}
	child := Child{Argv: opts.Command, Stdin: opts.Stdin, Stdout: opts.Stdout, Stderr: opts.Stderr, Stop: s.Lost(), BeforeSignal: s.HandBack}
	base := envcapture.Merge(os.Environ(), s.Captured)
	if t := s.transparent; t != nil {
		child.Env = TransparentEnv(base, s.Endpoints, t.ranges)
		child.Capture = t.sup
		child.RealPaths = t.mounts
	} else {
		child.Env = ChildEnv(base, s.Endpoints)
	}
	if s.swapped != "" {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.SwitchTraffic() }()
	}
	child.Cancelled = ctx.Done()
	code, err = child.Run()
	if lerr := s.LostErr(); lerr != nil && err == nil {
		return max(code, 1), lerr
	}
	return code, err
}

// hello retries the handshake for a moment: the container runs before podshim listens.
func (s *Session) hello(ctx context.Context) (*tunnel.HelloInfo, error) {
	var last error
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		h, err := s.client.Hello(hctx)
		cancel()
		if err == nil {
			return h, nil
		}
		last = err
		if de := (*tunnel.RemoteError)(nil); errors.As(err, &de) && de.Code == tunnel.CodeAuth {
			return nil, err
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return nil, fmt.Errorf("cannot reach podshim in pod %s through port-forward: %w", s.PodName, last)
			}
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// serve starts the SOCKS5, HTTP and DNS servers on loopback, and the JVM's SOCKS5 server: without
// credentials, which the JDK cannot send, but open only to the user's own processes. Where that
// check is impossible the JVM's server is left out and Endpoints.JavaSOCKS stays empty.
func (s *Session) serve(ctx context.Context) error {
	e := &s.Endpoints
	// The proxies' own diagnostics (a refused client, a failed dial) show with -v, a few of
	// each kind per minute: one per connection would drown the child's output.
	logf := func(name string) logger.Logf {
		return logger.RateLimited(logger.Logf(s.verbosef).WithPrefix(name+": "), time.Minute, 5)
	}
	socksLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for SOCKS5 on loopback: %w", err)
	}
	s.closers = append(s.closers, socksLn)
	javaLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the JVM's SOCKS5 on loopback: %w", err)
	}
	s.closers = append(s.closers, javaLn)
	// Refused connections (another user's) show with -v.
	if javaOnly, err := proxy.SameUser(javaLn, s.verbosef); err != nil {
		s.verbosef("no SOCKS5 proxy for JVMs, JAVA_TOOL_OPTIONS left as it is: %v", err)
		javaLn.Close()
	} else {
		e.JavaSOCKS = javaLn.Addr().String()
		javaSocks := &proxy.SOCKS5{Dialer: s.client, NoAuth: true, Logf: logf("JVM SOCKS5")}
		s.goServe(ctx, "the JVM's SOCKS5 proxy", func() error { return javaSocks.Serve(javaOnly) })
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the HTTP proxy on loopback: %w", err)
	}
	s.closers = append(s.closers, httpLn)
	udp, tcp, err := listenDNS()
	if err != nil {
		return err
	}
	s.closers = append(s.closers, udp, tcp)
	e.SOCKS, e.HTTP, e.DNS = socksLn.Addr().String(), httpLn.Addr().String(), tcp.Addr().String()

	socks := &proxy.SOCKS5{Dialer: s.client, Username: e.Username, Password: e.Password, Logf: logf("SOCKS5")}
	httpProxy := &proxy.HTTP{Dialer: s.client, Username: e.Username, Password: e.Password, Logf: logf("HTTP proxy")}
	dnsServer := &proxy.DNS{Exchanger: s.client, Logf: logf("DNS")}
	s.goServe(ctx, "the SOCKS5 proxy", func() error { return socks.Serve(socksLn) })
	s.goServe(ctx, "the HTTP proxy", func() error { return httpProxy.Serve(httpLn) })
	s.goServe(ctx, "the DNS server", func() error { return dnsServer.Serve(ctx, udp, tcp) })
	return nil
}

// goServe runs one of the session's servers until the session closes. A server that stops with
// an error while the session runs ends the session (the child is stopped, the exit code is
// non-zero): its error is never dropped, and no session goes on half-served.
func (s *Session) goServe(ctx context.Context, name string, serve func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := serve(); err != nil && ctx.Err() == nil {
			s.end(fmt.Errorf("%s stopped: %w", name, err))
		}
	}()
}

// listenDNS binds UDP and TCP on the same loopback port.
func listenDNS() (net.PacketConn, net.Listener, error) { return listenDNSOn("127.0.0.1") }

// Close stops the servers and the tunnel and deletes the proxy pod. It is safe to call more than
// once and from a signal path.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		for _, c := range s.closers {
			_ = c.Close()
		}
		if s.mux != nil {
			_ = s.mux.Close()
		}
		if s.path.fwd != nil {
			_ = s.path.fwd.Close()
		}
		// Background work (heartbeat, servers, volume refresh) must stop before the copy is removed,
		// or a last refresh could write it again.
		waited := make(chan struct{})
		go func() { s.wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
		}
		if s.mirror != nil && s.removeRoot {
			if rerr := s.mirror.Remove(); rerr != nil {
				fmt.Fprintf(s.opts.Stderr, "kubectl-tp: removing the local copy of the volumes at %s: %v\n", s.mirror.Root, rerr)
			}
		}
		var errs []error
		if ierr := s.closeIntercept(); ierr != nil {
			fmt.Fprintf(s.opts.Stderr, "kubectl-tp: %v\n", ierr)
			errs = append(errs, ierr)
		}
		if s.swapped != "" {
			if _, rerr := RestoreDeployment(s.opts.Client, s.opts.Namespace, s.swapped, s.ID); rerr != nil {
				rerr = fmt.Errorf("restoring deployment/%s: %w (run: kubectl tp cleanup -n %s)", s.swapped, rerr, s.opts.Namespace)
				fmt.Fprintf(s.opts.Stderr, "kubectl-tp: %v\n", rerr)
				errs = append(errs, rerr)
			} else if s.watchdog {
				// Restored: the watchdog has nothing left to guard. (After a failed restore it stays,
				// and restores once the proxy pod is gone.)
				s.deleteWatchdog()
			}
		}
		if s.podMade {
			name := s.currentPod()
			if derr := deletePod(s.opts.Client, s.opts.Namespace, name); derr != nil {
				derr = fmt.Errorf("deleting proxy pod %s/%s: %w (delete it with: kubectl delete pod -n %s %s)", s.opts.Namespace, name, derr, s.opts.Namespace, name)
				fmt.Fprintf(s.opts.Stderr, "kubectl-tp: %v\n", derr)
				errs = append(errs, derr)
			}
		}
		err = errors.Join(errs...)
		s.closeErr = err
	})
	return s.closeErr
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func owner() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// cleanAPIError shortens admission errors to their message.
func cleanAPIError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "is forbidden: "); i >= 0 {
		return errors.New(msg[i+len("is forbidden: "):])
	}
	return err
}
