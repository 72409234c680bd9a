package session

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/kubectl-tp/kubectl-tp/capture"
	"github.com/kubectl-tp/kubectl-tp/internal/dnsclient"
	"github.com/kubectl-tp/kubectl-tp/proxy"
	"github.com/kubectl-tp/kubectl-tp/tunnel"
	"github.com/kubectl-tp/kubectl-tp/volumes/realpaths"
)

// TransparentMode chooses between transparent mode (every connection of the child's process
// tree to the cluster is carried, see package capture) and proxy variables only.
type TransparentMode int

const (
	// TransparentOff gives the child proxy variables only (the zero value).
	TransparentOff TransparentMode = iota
	// TransparentAuto uses transparent mode where it works and says in one line why not elsewhere.
	TransparentAuto
	// TransparentOn fails the session where transparent mode cannot work.
	TransparentOn
)

// transparent is a session's transparent mode, once its servers run.
type transparent struct {
	// sup is the supervisor the child runs under.
	sup *capture.Supervisor
	// ranges are the literal addresses carried to the cluster.
	ranges []netip.Prefix
	dns    string
	// mounts are the volume copies the child sees at their real paths.
	mounts []realpaths.Mount
}

// chooseMode probes transparent mode as opts ask; it returns whether the session uses it.
func (s *Session) chooseMode() (bool, error) {
	switch s.opts.Transparent {
	case TransparentOff:
		return false, nil
	case TransparentOn:
		if err := capture.Probe(); err != nil {
			return false, fmt.Errorf("transparent mode cannot work here: %v (drop --transparent=true to use proxy variables)", err)
		}
		return true, nil
	}
	if err := capture.Probe(); err != nil {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: transparent mode unavailable: %v; the command gets proxy variables only\n", err)
		return false, nil
	}
	return true, nil
}

// startTransparent serves the DNS that answers cluster names with synthetic addresses and the
// redirector, and prepares the supervisor for the child. hello is the pod's DNS setup; podIP and
// the captured environment's KUBERNETES_SERVICE_HOST seed the cluster's address ranges.
func (s *Session) startTransparent(ctx context.Context, hello *tunnel.HelloInfo, podIP string) error {
	var seeds []netip.Addr
	for _, ns := range hello.Nameservers {
		if a, err := netip.ParseAddr(ns); err == nil {
			seeds = append(seeds, a)
		}
	}
	if a, err := netip.ParseAddr(podIP); err == nil {
		seeds = append(seeds, a)
	}
	for _, kv := range s.Captured {
		if v, ok := strings.CutPrefix(kv, "KUBERNETES_SERVICE_HOST="); ok {
			if a, err := netip.ParseAddr(v); err == nil {
				seeds = append(seeds, a)
			}
		}
	}
	ranges := capture.ClusterRanges(seeds, s.opts.AlsoProxy)

	local, err := capture.LocalResolvConf()
	if err != nil {
		return fmt.Errorf("transparent mode: %w", err)
	}
	pool := &capture.Pool{}
	resolver := &capture.Resolver{
		Cluster:     s.client,
		Upstream:    &dnsclient.Client{Servers: local.Servers},
		Pool:        pool,
		Search:      hello.Search,
		LocalSearch: local.Search,
		Logf:        s.verbosef,
	}
	dns := &proxy.DNS{Exchanger: resolver, Logf: s.verbosef}
	var addrs capture.DNSAddrs
	for _, host := range []string{"127.0.0.1", "::1"} {
		udp, tcp, err := listenDNSOn(host)
		if err != nil {
			if host == "::1" {
				continue // no IPv6 loopback: IPv6 sockets use the v4-mapped address
			}
			return err
		}
		s.closers = append(s.closers, udp, tcp)
		u, t := netip.MustParseAddrPort(udp.LocalAddr().String()), netip.MustParseAddrPort(tcp.Addr().String())
		if host == "::1" {
			addrs.UDP6, addrs.TCP6 = u, t
		} else {
			addrs.UDP4, addrs.TCP4 = u, t
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); _ = dns.Serve(ctx, udp, tcp) }()
	}
	red := &capture.Redirector{Dialer: s.client, Logf: s.verbosef}
	if err := red.Listen(); err != nil {
		return err
	}
	s.closers = append(s.closers, red)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = red.Serve() }()
	s.transparent = &transparent{
		sup: &capture.Supervisor{
			Router:     &capture.Router{Pool: pool, Cluster: ranges},
			Redirector: red,
			DNS:        addrs,
			Logf:       s.verbosef,
		},
		ranges: ranges,
		dns:    addrs.UDP4.String(),
	}
	return nil
}

// verbosef logs detail that only -v shows.
func (s *Session) verbosef(format string, args ...any) {
	if s.opts.Verbose {
		fmt.Fprintf(s.opts.Stderr, "kubectl-tp: "+format+"\n", args...)
	}
}

// describe is the start-up line's account of transparent mode.
func (t *transparent) describe() string {
	r := make([]string, len(t.ranges))
	for i, p := range t.ranges {
		r[i] = p.String()
	}
	d := fmt.Sprintf("transparent mode: cluster names (as %s) and %s go through the pod", capture.SyntheticPrefix, strings.Join(r, ", "))
	if len(t.mounts) > 0 {
		d += fmt.Sprintf(", %d volume(s) at their real paths", len(t.mounts))
	}
	return d
}

// TransparentEnv returns base with the session's TP_* variables set for transparent mode. No
// proxy variable is set: every library takes the same path, the kernel's, so a request to a
// non-cluster host leaves as it would without kubectl-tp whichever library makes it. A proxy
// the user already set (a corporate one) is kept, with the cluster's names and ranges added to
// NO_PROXY so they do not go to it.
func TransparentEnv(base []string, e Endpoints, ranges []netip.Prefix) []string {
	set := map[string]string{
		"TP_DNS":       e.DNS,
		"TP_NAMESPACE": e.Namespace,
		"TP_POD":       e.Pod,
	}
	if e.Root != "" {
		set["TP_ROOT"] = e.Root
		set["TP_MOUNTS"] = mountsEnv(e.Mounts)
	}
	userProxy := false
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY":
			userProxy = true
		}
	}
	if userProxy {
		extra := []string{".svc", ".cluster.local", capture.SyntheticPrefix.String()}
		for _, p := range ranges {
			extra = append(extra, p.String())
		}
		for _, k := range []string{"NO_PROXY", "no_proxy"} {
			v := strings.Join(extra, ",")
			if old := lookupEnv(base, k); old != "" {
				v = old + "," + v
			}
			set[k] = v
		}
	}
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, replaced := set[k]; !replaced {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}

func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// listenDNSOn binds UDP and TCP on the same port of host.
func listenDNSOn(host string) (net.PacketConn, net.Listener, error) {
	var last error
	for range 20 {
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, nil, fmt.Errorf("listening for DNS on %s: %w", host, err)
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			return udp, tcp, nil
		}
		last = err
		udp.Close()
	}
	return nil, nil, fmt.Errorf("listening for DNS on %s (UDP and TCP on one port): %w", host, last)
}
