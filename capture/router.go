package capture

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Verdict is what happens to one connect(2) of the captured child.
type Verdict int

const (
	// Direct lets the call run as if there were no kubectl-tp.
	Direct Verdict = iota
	// ToDNS connects the socket to the session's DNS server instead (any server, port 53).
	ToDNS
	// ToCluster carries the connection through the tunnel to [Route.Dest].
	ToCluster
	// Refuse fails the call: the destination belongs to the cluster (or to the synthetic range)
	// but cannot be carried. Fail closed: never to whatever the address means locally.
	Refuse
)

// String names v for logs.
func (v Verdict) String() string {
	switch v {
	case Direct:
		return "direct"
	case ToDNS:
		return "dns"
	case ToCluster:
		return "cluster"
	case Refuse:
		return "refuse"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Route is the [Router]'s answer for one destination.
type Route struct {
	Verdict Verdict
	// Dest is the tunnel destination for ToCluster: "name:port" for a synthetic address (the
	// cluster resolves the name), "ip:port" for a cluster address used literally.
	Dest string
}

// Router decides where a destination goes. The zero value sends everything but port 53 direct;
// it is safe for concurrent use once its fields are set.
type Router struct {
	// Pool maps synthetic addresses back to cluster names; addresses of its range that were never
	// handed out are refused. Nil: no synthetic addresses.
	Pool *Pool
	// Cluster are the ranges carried to the cluster when used literally: the Service and pod
	// networks and the user's --also-proxy ranges.
	Cluster []netip.Prefix
	// KeepDNS, when true, leaves port 53 alone (no DNS redirection).
	KeepDNS bool
}

// Route returns the route of a TCP or UDP destination. The socket type is not known here: the
// caller refuses what a verdict cannot carry (ToCluster for UDP).
func (r *Router) Route(dst netip.AddrPort) Route {
	a := dst.Addr().Unmap()
	if dst.Port() == 53 && !r.KeepDNS {
		return Route{Verdict: ToDNS}
	}
	port := strconv.Itoa(int(dst.Port()))
	if r.Pool != nil && r.Pool.Contains(a) {
		name, ok := r.Pool.Name(a)
		if !ok {
			return Route{Verdict: Refuse}
		}
		return Route{Verdict: ToCluster, Dest: net.JoinHostPort(strings.TrimSuffix(name, "."), port)}
	}
	for _, p := range r.Cluster {
		if p.Contains(a) {
			return Route{Verdict: ToCluster, Dest: net.JoinHostPort(a.String(), port)}
		}
	}
	return Route{Verdict: Direct}
}

// ClusterRanges returns the ranges a session treats as the cluster's: the /16 around each
// address in seeds (the cluster DNS Service's IP, the proxy pod's IP, $KUBERNETES_SERVICE_HOST),
// followed by extra (the user's --also-proxy), without duplicates. Kubernetes offers no
// unprivileged way to read the Service and pod CIDRs; a /16 covers the defaults of kubeadm, kind,
// k3s and minikube, and larger networks need --also-proxy. Loopback and unspecified seeds are
// skipped.
func ClusterRanges(seeds []netip.Addr, extra []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	add := func(p netip.Prefix) {
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, a := range seeds {
		a = a.Unmap()
		if !a.IsValid() || a.IsLoopback() || a.IsUnspecified() {
			continue
		}
		bits := 16
		if a.Is6() {
			bits = 64
		}
		add(netip.PrefixFrom(a, bits))
	}
	for _, p := range extra {
		add(p)
	}
	return out
}

// DNSAddrs are the loopback addresses of the session's DNS server that port-53 connects are
// moved to, per socket type and family. A zero IPv6 address falls back to the IPv4 one,
// v4-mapped.
type DNSAddrs struct {
	UDP4, TCP4, UDP6, TCP6 netip.AddrPort
}
