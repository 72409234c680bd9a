// Package contract is the contract between the proxy pod that kubectl-tp builds (package
// session) and podshim's command line (cmd/podshim): flag names, ports and the token variable.
// Both sides use these names, so the pod spec and the binary cannot drift apart.
//
// It holds constants only and imports nothing of podshim, so the plugin links none of podshim's
// server (which builds for Linux only).
package contract

import "fmt"

// Flags of podshim's command line.
const (
	// FlagListen is the tunnel's listen address; kubectl-tp always gives 127.0.0.1:TunnelPort,
	// reachable only through the API server's port-forward.
	FlagListen = "listen"
	// FlagIdleTimeout is how long podshim lives on without hearing from its client.
	FlagIdleTimeout = "idle-timeout"
	// FlagDirect is where podshim serves the tunnel over TLS to registered clients (the direct
	// path): every address of the pod, DirectPort.
	FlagDirect = "direct"
	// FlagReady is where podshim listens once exposed ports are carried back (a readiness probe).
	FlagReady = "ready"
	// FlagInsecureNoToken runs podshim without a token: for tests only, never in a proxy pod.
	FlagInsecureNoToken = "insecure-no-token"
	// FlagWatchdog, FlagSession, FlagServiceAccount and FlagGrace run podshim as a swap's
	// watchdog (podshim.Watchdog).
	FlagWatchdog       = "watchdog"
	FlagSession        = "session"
	FlagServiceAccount = "service-account"
	FlagGrace          = "grace"
	// FlagRouterPorts runs podshim as the intercept router of a Service (podshim.RouterConfig):
	// the Service's target ports to listen on, comma-separated (e.g. -router-ports=8080,9090).
	// The router pod gets the token that every intercepting session presents in TokenVar.
	FlagRouterPorts = "router-ports"
	// FlagRouterShadow is, with FlagRouterPorts, the host name of the headless shadow Service
	// that selects the real pods (ShadowSuffix), e.g. api-tp-shadow.ns.svc.cluster.local.
	FlagRouterShadow = "router-shadow"
	// FlagRouterService, with FlagServiceAccount and FlagGrace, makes a router restore this
	// Service and retire once it has had no intercept for the grace time (podshim.RouterWatch).
	FlagRouterService = "router-service"
)

// ShadowSuffix is appended to a Service's name to name its headless shadow Service, which keeps
// the original selector while the Service itself selects the intercept router (a name past 63
// characters is shortened and given a hash of the Service's name).
const ShadowSuffix = "-tp-shadow"

// TokenVar is the environment variable that carries the session token to podshim.
const TokenVar = "TP_TOKEN"

// Ports of the proxy pod.
const (
	// TunnelPort is where podshim serves the tunnel, on 127.0.0.1 inside the pod.
	TunnelPort = 4747
	// ReadyPort is where podshim answers its readiness probe once exposed ports are carried back.
	ReadyPort = 4748
	// DirectPort is the direct path's TLS listener (FlagDirect).
	DirectPort = 4749
)

// Arg formats one flag of podshim's command line: Arg(FlagGrace, "10s") is "-grace=10s".
func Arg(name string, value any) string { return fmt.Sprintf("-%s=%v", name, value) }
