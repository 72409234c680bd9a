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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/version"
	"github.com/kubectl-tp/kubectl-tp/podshim"
	"github.com/kubectl-tp/kubectl-tp/podshim/contract"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("podshim", flag.ContinueOnError)
	listen := fs.String(contract.FlagListen, fmt.Sprintf("127.0.0.1:%d", contract.TunnelPort), "address to listen on")
	idle := fs.Duration(contract.FlagIdleTimeout, podshim.DefaultIdleTimeout, "exit after no client has been heard from for this long")
	insecure := fs.Bool(contract.FlagInsecureNoToken, false, "accept requests without a token (testing only)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	direct := fs.String(contract.FlagDirect, "", "also serve the tunnel over TLS on this address (e.g. :4749), for clients that registered their certificate (the direct path)")
	ready := fs.String(contract.FlagReady, "", "address to listen on once ports are exposed, for a readiness probe (e.g. :4748)")
	watchdog := fs.String(contract.FlagWatchdog, "", "run as the swap watchdog of this Deployment instead of serving (in-cluster ServiceAccount credentials)")
	session := fs.String(contract.FlagSession, "", "with -watchdog: the session whose swap is guarded")
	serviceAccount := fs.String(contract.FlagServiceAccount, "", "with -watchdog: the watchdog's own ServiceAccount, deleted when it is done")
	grace := fs.Duration(contract.FlagGrace, 10*time.Second, "with -watchdog: how long the session's proxy pod must be gone before the restore")
	routerPorts := fs.String(contract.FlagRouterPorts, "", "run as the intercept router of a Service listening on these target ports, comma-separated (e.g. 8080,9090); -idle-timeout does not apply")
	routerService := fs.String(contract.FlagRouterService, "", "with -router-ports, -service-account and -grace: the intercepted Service, restored (and the router retired) once no intercept has been registered for -grace (in-cluster ServiceAccount credentials)")
	routerShadow := fs.String(contract.FlagRouterShadow, "", "with -router-ports: host name of the headless shadow Service of the real pods (e.g. api-tp-shadow.ns.svc.cluster.local)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("podshim", version.Version)
		return 0
	}
	logger := log.New(os.Stderr, "podshim: ", log.LstdFlags|log.LUTC)
	if *watchdog != "" {
		return runWatchdog(logger, *watchdog, *session, *serviceAccount, *grace)
	}
	token := os.Getenv(podshim.TokenVar)
	if token == "" && !*insecure {
		logger.Printf("%s is not set (use -%s to run without one)", podshim.TokenVar, contract.FlagInsecureNoToken)
		return 2
	}
	router, err := routerConfig(*routerPorts, *routerShadow)
	if err != nil {
		logger.Print(err)
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
		Router:      router,
		Logf:        func(format string, args ...any) { logger.Printf(format, args...) },
	}
	if *direct != "" {
		dln, err := net.Listen("tcp", *direct)
		if err != nil {
			logger.Print(err)
			return 1
		}
		if srv.Direct, err = podshim.NewDirect(dln.Addr().(*net.TCPAddr).Port); err != nil {
			logger.Print(err)
			return 1
		}
		logger.Printf("direct path (TLS, pinned client certificates) on %s", dln.Addr())
		ln = podshim.MergeListeners(ln, srv.Direct.Listener(dln))
	}
	if *routerService != "" {
		if router == nil || *serviceAccount == "" {
			logger.Printf("-%s needs -%s and -%s", contract.FlagRouterService, contract.FlagRouterPorts, contract.FlagServiceAccount)
			return 2
		}
		api, err := inCluster()
		if err != nil {
			logger.Print(err)
			return 1
		}
		watch := &podshim.RouterWatch{API: api.url, Client: api.client, Token: api.token, Namespace: api.namespace,
			Service: *routerService, ServiceAccount: *serviceAccount, Grace: *grace, Status: srv.RouterStatus, Retire: srv.RetireRouter, Logf: logger.Printf}
		go func() {
			if err := watch.Run(ctx); err != nil && ctx.Err() == nil {
				logger.Print(err)
			}
			// Retired: the garbage collector deletes this pod; stop serving meanwhile.
			stop()
		}()
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

// routerConfig reads the router flags: nil without -router-ports.
func routerConfig(ports, shadow string) (*podshim.RouterConfig, error) {
	if ports == "" {
		if shadow != "" {
			return nil, fmt.Errorf("-%s needs -%s", contract.FlagRouterShadow, contract.FlagRouterPorts)
		}
		return nil, nil
	}
	if shadow == "" {
		return nil, fmt.Errorf("-%s needs -%s", contract.FlagRouterPorts, contract.FlagRouterShadow)
	}
	rc := &podshim.RouterConfig{Shadow: shadow}
	for _, f := range strings.Split(ports, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("-%s: %q is not a port (1-65535)", contract.FlagRouterPorts, f)
		}
		rc.Ports = append(rc.Ports, p)
	}
	return rc, nil
}

// fmtDuration prints whole seconds as plain seconds ("90s" rather than
// time.Duration's "1m30s"), keeping the idle message stable.
func fmtDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// serviceAccountDir is where the kubelet mounts a pod's ServiceAccount credentials.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// runWatchdog guards a swap with the pod's in-cluster credentials (see podshim.Watchdog).
func runWatchdog(logger *log.Logger, deployment, session, serviceAccount string, grace time.Duration) int {
	if session == "" || serviceAccount == "" {
		logger.Print("-watchdog needs -session and -service-account")
		return 2
	}
	api, err := inCluster()
	if err != nil {
		logger.Print(err)
		return 1
	}
	w := &podshim.Watchdog{
		API:            api.url,
		Client:         api.client,
		Token:          api.token,
		Namespace:      api.namespace,
		Deployment:     deployment,
		Session:        session,
		ServiceAccount: serviceAccount,
		Grace:          grace,
		Logf:           logger.Printf,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Printf("version %s guarding the swap of deployment/%s by session %s", version.Version, deployment, session)
	if err := w.Run(ctx); err != nil && ctx.Err() == nil {
		logger.Print(err)
		return 1
	}
	// The garbage collector deletes this pod once its ServiceAccount is gone: wait for it.
	<-ctx.Done()
	return 0
}

// apiAccess is the pod's in-cluster access to the API server.
type apiAccess struct {
	url, token, namespace string
	client                *http.Client
}

// inCluster reads the pod's ServiceAccount credentials and the API server's address.
func inCluster() (apiAccess, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	token, err1 := os.ReadFile(serviceAccountDir + "/token")
	ns, err2 := os.ReadFile(serviceAccountDir + "/namespace")
	ca, err3 := os.ReadFile(serviceAccountDir + "/ca.crt")
	if host == "" || port == "" || errors.Join(err1, err2, err3) != nil {
		return apiAccess{}, fmt.Errorf("no in-cluster credentials: %v", errors.Join(err1, err2, err3))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return apiAccess{}, errors.New("the ServiceAccount's ca.crt holds no certificate")
	}
	return apiAccess{
		url:       "https://" + net.JoinHostPort(host, port),
		client:    &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		token:     strings.TrimSpace(string(token)),
		namespace: strings.TrimSpace(string(ns)),
	}, nil
}
