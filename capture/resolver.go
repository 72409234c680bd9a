package capture

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kubectl-tp/kubectl-tp/internal/logger"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/internal/dnsclient"
	"github.com/kubectl-tp/kubectl-tp/proxy"
)

// ResolvConfEnv names the environment variable that, when set, is the path [LocalResolvConf]
// reads instead of /etc/resolv.conf (the end-to-end tests point it at a fake nameserver).
const ResolvConfEnv = "KUBECTL_TP_RESOLV_CONF"

// LocalResolvConf reads the laptop's resolver configuration: the file named by $KUBECTL_TP_RESOLV_CONF,
// else /etc/resolv.conf. Its Servers make the [Resolver]'s Upstream, its Search the LocalSearch.
func LocalResolvConf() (dnsclient.Config, error) {
	path := os.Getenv(ResolvConfEnv)
	if path == "" {
		path = "/etc/resolv.conf"
	}
	return dnsclient.ReadResolvConf(path)
}

const (
	// syntheticTTL is the TTL, in seconds, of the answers the Resolver makes up.
	syntheticTTL = 5
	// decisionTTL is how long the Resolver remembers whether a name is a cluster name.
	decisionTTL = 5 * time.Second
	// pruneDecisions is the number of remembered decisions above which expired ones are swept.
	pruneDecisions = 1024
	// defaultClusterDomain is the cluster domain when the search list names none.
	defaultClusterDomain = "cluster.local."
)

// Resolver answers the captured child's DNS queries; it implements proxy.Exchanger (the session
// serves it with proxy.DNS). Cluster names get a synthetic address from Pool, which the child then
// dials and the supervisor maps back to the name; every other name is resolved by Upstream, the
// laptop's own nameservers, as if there were no session.
//
// A name is a cluster name when it lies in the cluster domain ([Resolver.ClusterDomain]), or when
// one of its expansions by the pod's search entries inside the cluster domain exists in the
// cluster (the first in search order that has records). A name the laptop's resolver made by
// appending one of its own search suffixes (LocalSearch) is looked at without that suffix first.
// Only names inside the cluster domain ever count: an internet name that the cluster's DNS would
// forward is resolved by the laptop. For cluster names:
//
//   - A: one A record, the synthetic address of the matching name, owned by the name as asked.
//   - AAAA: an empty NOERROR answer (synthetic addresses are IPv4 only).
//   - Other types (SRV, TXT, ...): the cluster's answer for the matching name, with owners renamed
//     to the name as asked, every A record replaced by the synthetic address of its owner, and
//     AAAA records dropped.
//   - A name inside the cluster domain that the cluster does not know: the cluster's NXDOMAIN,
//     never a question to Upstream.
//   - PTR of a synthetic address: the name it stands for (NXDOMAIN when it was never handed out).
//
// Queries with several questions, of another class than IN or another opcode than QUERY go to
// Upstream unchanged. Whether a name is a cluster name is remembered for a few seconds.
//
// When the cluster cannot be asked, a name inside the cluster domain fails (SERVFAIL) and any
// other name goes to Upstream.
//
// What it leaves out: IPv6 synthetic addresses (and so IPv6-only clusters: existence is checked
// with an A query); DNSSEC (renamed answers no longer match their signatures); names that only
// resolve in the cluster outside its domain (a node's search suffix, stub domains), which go to
// Upstream; telling "svc" expanded by the laptop's search list from a laptop name that happens to
// be "svc.<laptop suffix>" (the cluster wins). Other query types of a short name are checked with
// that type, so a short name with no record of the type (TXT of a Service) goes to Upstream.
//
// Cluster, Upstream and Pool must be set before the first query and not changed after; a
// Resolver is safe for concurrent use.
type Resolver struct {
	// Cluster resolves names in the cluster: the proxy pod's resolver through the tunnel
	// (*tunnel.Client). The Resolver asks it fully qualified names only. (podshim still applies
	// the pod's search list to names with fewer than ndots dots and renames its answer back to
	// the name it was asked; that costs lookups but does not change the result here.)
	Cluster proxy.Exchanger
	// Upstream resolves every other name: the laptop's own nameservers (*dnsclient.Client).
	Upstream proxy.Exchanger
	// Pool hands out the synthetic addresses of cluster names.
	Pool *Pool
	// Search is the proxy pod's search list, fully qualified, e.g. "ns.svc.cluster.local.",
	// "svc.cluster.local.", "cluster.local.". Entries outside the cluster domain are ignored.
	Search []string
	// LocalSearch is the laptop's search list from its resolv.conf, fully qualified: suffixes
	// the child's resolver may have appended to a cluster name.
	LocalSearch []string
	// Logf logs diagnostics; nil means no logging.
	Logf logger.Logf

	mu      sync.Mutex
	decided map[string]*pendingDecision // by base name, for A and AAAA questions
}

// decision is what the Resolver found out about one base name.
type decision struct {
	cluster bool     // a cluster name: answered from the cluster, never by Upstream
	fqdn    string   // the fully qualified cluster name it stands for (canonical)
	rcode   int      // the cluster's response code for fqdn
	found   bool     // the cluster's answer for fqdn had records
	resp    *dns.Msg // the cluster's answer, when the check asked the question's own type
	// uncertain marks a "not a cluster name" reached although some expansions could not be
	// asked: it is acted on once but not remembered.
	uncertain bool
}

// pendingDecision is a decision being made or remembered; done is closed once d and err are set.
type pendingDecision struct {
	done    chan struct{}
	d       decision
	err     error
	expires time.Time // set under Resolver.mu before done is closed
}

// ClusterDomain returns the cluster's DNS domain, fully qualified and in lower case: the part
// after "svc." of the search entry "svc.<domain>" that Kubernetes puts in every pod's search list
// (when several entries look like that, the shortest domain that is itself a search entry).
// Without such an entry it is "cluster.local.".
func (r *Resolver) ClusterDomain() string {
	var best string
	bestListed := false
	for _, s := range r.Search {
		s = canonical(s)
		d, ok := strings.CutPrefix(s, "svc.")
		if !ok || d == "." || d == "" {
			continue
		}
		listed := false
		for _, t := range r.Search {
			if canonical(t) == d {
				listed = true
				break
			}
		}
		switch {
		case best == "",
			listed && !bestListed,
			listed == bestListed && len(d) < len(best):
			best, bestListed = d, listed
		}
	}
	if best == "" {
		return defaultClusterDomain
	}
	return best
}

// Exchange answers m as described on [Resolver]. It does not modify m. An error (Upstream or the
// cluster failing) is for proxy.DNS to turn into SERVFAIL.
func (r *Resolver) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(m.Question) != 1 || m.Question[0].Qclass != dns.ClassINET || m.Opcode != dns.OpcodeQuery {
		return r.upstream(ctx, m)
	}
	q := m.Question[0]
	if q.Qtype == dns.TypePTR {
		if resp, ok := r.reverse(m); ok {
			return resp, nil
		}
	}
	domain := r.ClusterDomain()
	for _, base := range r.bases(canonical(q.Name)) {
		var (
			d   decision
			err error
		)
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA {
			d, err = r.decideCached(ctx, base, domain)
		} else {
			d, err = r.decide(ctx, base, domain, q.Qtype)
		}
		if err != nil {
			return nil, err
		}
		if d.cluster {
			return r.answer(m, d)
		}
	}
	return r.upstream(ctx, m)
}

func (r *Resolver) upstream(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if r.Upstream == nil {
		return nil, errors.New("capture: dns: no upstream resolver")
	}
	return r.Upstream.Exchange(ctx, m)
}

// bases lists the names name may stand for, in the order to try them: name without each
// laptop search suffix it ends with, then name itself.
func (r *Resolver) bases(name string) []string {
	var out []string
	for _, s := range r.LocalSearch {
		s = canonical(s)
		if s == "." || !strings.HasSuffix(name, "."+s) {
			continue
		}
		base := name[:len(name)-len(s)]
		if base == "." || strings.HasSuffix(base, `\.`) {
			continue // the whole name, or an escaped dot inside a label
		}
		if !slices.Contains(out, base) {
			out = append(out, base)
		}
	}
	return append(out, name)
}

// inDomain reports whether name (canonical) is domain or lies below it.
func inDomain(name, domain string) bool {
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// decideCached is decide for A and AAAA questions, remembered for decisionTTL and shared by
// concurrent callers (a resolver asks A and AAAA at once).
func (r *Resolver) decideCached(ctx context.Context, base, domain string) (decision, error) {
	now := time.Now()
	r.mu.Lock()
	if p, ok := r.decided[base]; ok {
		select {
		case <-p.done:
			if now.Before(p.expires) {
				r.mu.Unlock()
				return p.d, p.err
			}
		default: // being decided
			r.mu.Unlock()
			select {
			case <-p.done:
				return p.d, p.err
			case <-ctx.Done():
				return decision{}, ctx.Err()
			}
		}
	}
	if r.decided == nil {
		r.decided = map[string]*pendingDecision{}
	}
	if len(r.decided) >= pruneDecisions {
		for k, p := range r.decided {
			select {
			case <-p.done:
				if !now.Before(p.expires) {
					delete(r.decided, k)
				}
			default:
			}
		}
	}
	p := &pendingDecision{done: make(chan struct{})}
	r.decided[base] = p
	r.mu.Unlock()

	d, err := r.decide(ctx, base, domain, dns.TypeA)
	d.resp = nil // answers to A and AAAA are made up from fqdn, rcode and found
	keep := err == nil && !d.uncertain &&
		(!d.cluster || d.rcode == dns.RcodeSuccess || d.rcode == dns.RcodeNameError)
	r.mu.Lock()
	p.d, p.err = d, err
	if keep {
		p.expires = time.Now().Add(decisionTTL)
	} else if r.decided[base] == p {
		delete(r.decided, base)
	}
	close(p.done)
	r.mu.Unlock()
	return d, err
}

// decide finds out whether base (canonical) is a cluster name by asking the cluster for it
// (inside the cluster domain) or for its expansions (otherwise), with query type qtype.
func (r *Resolver) decide(ctx context.Context, base, domain string, qtype uint16) (decision, error) {
	if r.Cluster == nil {
		return decision{}, errors.New("capture: dns: no cluster resolver")
	}
	if inDomain(base, domain) {
		resp, err := r.Cluster.Exchange(ctx, query(base, qtype))
		if err == nil && resp == nil {
			err = errors.New("no answer")
		}
		if err != nil {
			return decision{}, fmt.Errorf("capture: dns: asking the cluster for %s %s: %w", base, dns.Type(qtype), err)
		}
		return decision{cluster: true, fqdn: base, rcode: resp.Rcode, found: len(resp.Answer) > 0, resp: resp}, nil
	}
	if base == "." || strings.HasSuffix(base, ".in-addr.arpa.") || strings.HasSuffix(base, ".ip6.arpa.") {
		return decision{}, nil // reverse lookups of real addresses go to Upstream
	}
	var names []string
	for _, s := range r.Search {
		s = canonical(s)
		if !inDomain(s, domain) {
			continue
		}
		if n := base + s; isName(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return decision{}, nil
	}
	i, resp, err := r.firstFound(ctx, names, qtype)
	if i < 0 {
		if err != nil {
			r.logf("capture: dns: %s is not known as a cluster name: %v", base, err)
			return decision{uncertain: true}, nil
		}
		return decision{}, nil
	}
	return decision{cluster: true, fqdn: names[i], rcode: resp.Rcode, found: true, resp: resp}, nil
}

// firstFound asks the cluster for names at once and returns the index and answer of the first,
// in order, that has records (NOERROR with at least one answer), once every earlier one has
// answered without. It returns -1 when none has, with the errors of the names that failed.
func (r *Resolver) firstFound(ctx context.Context, names []string, qtype uint16) (int, *dns.Msg, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the others are not needed any more
	type result struct {
		i    int
		resp *dns.Msg
		err  error
	}
	results := make(chan result, len(names)) // buffered: late senders never block
	for i, n := range names {
		go func() {
			resp, err := r.Cluster.Exchange(ctx, query(n, qtype))
			if err == nil && resp == nil {
				err = errors.New("no answer")
			}
			if err != nil {
				err = fmt.Errorf("%s: %w", n, err)
			}
			results <- result{i, resp, err}
		}()
	}
	got := make([]*result, len(names))
	next := 0
	var errs []error
	for range names {
		var res result
		select {
		case res = <-results:
		case <-ctx.Done():
			return -1, nil, ctx.Err()
		}
		got[res.i] = &res
		for next < len(names) && got[next] != nil {
			g := got[next]
			if g.err == nil && g.resp.Rcode == dns.RcodeSuccess && len(g.resp.Answer) > 0 {
				return next, g.resp, nil
			}
			if g.err != nil {
				errs = append(errs, g.err)
			}
			next++
		}
	}
	return -1, nil, errors.Join(errs...)
}

// answer builds the reply to m for the cluster name of d.
func (r *Resolver) answer(m *dns.Msg, d decision) (*dns.Msg, error) {
	q := m.Question[0]
	reply := func(rcode int) *dns.Msg {
		resp := new(dns.Msg)
		resp.SetRcode(m, rcode)
		resp.RecursionAvailable = true
		if opt := m.IsEdns0(); opt != nil {
			resp.SetEdns0(max(opt.UDPSize(), dns.MinMsgSize), false)
		}
		return resp
	}
	switch q.Qtype {
	case dns.TypeA:
		if d.rcode != dns.RcodeSuccess || !d.found {
			return reply(d.rcode), nil
		}
		addr, err := r.addr(d.fqdn)
		if err != nil {
			return nil, err
		}
		resp := reply(dns.RcodeSuccess)
		resp.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: syntheticTTL},
			A:   addr.AsSlice(),
		}}
		return resp, nil
	case dns.TypeAAAA:
		return reply(d.rcode), nil // no records: synthetic addresses are IPv4
	}
	resp := d.resp.Copy()
	resp.Id = m.Id
	resp.Response = true
	resp.Question = []dns.Question{q}
	var err error
	if resp.Answer, err = r.rewrite(resp.Answer, d.fqdn, q.Name); err != nil {
		return nil, err
	}
	if resp.Ns, err = r.rewrite(resp.Ns, d.fqdn, q.Name); err != nil {
		return nil, err
	}
	if resp.Extra, err = r.rewrite(resp.Extra, d.fqdn, q.Name); err != nil {
		return nil, err
	}
	return resp, nil
}

// rewrite renames the records owned by fqdn to asked, replaces the address of every A record by
// the synthetic address of its owner and drops AAAA records.
func (r *Resolver) rewrite(rrs []dns.RR, fqdn, asked string) ([]dns.RR, error) {
	out := rrs[:0]
	for _, rr := range rrs {
		if rr == nil {
			continue
		}
		h := rr.Header()
		switch rr := rr.(type) {
		case *dns.AAAA:
			continue
		case *dns.A:
			addr, err := r.addr(h.Name)
			if err != nil {
				return nil, err
			}
			rr.A = addr.AsSlice()
			h.Ttl = min(h.Ttl, syntheticTTL)
		}
		if canonical(h.Name) == fqdn {
			h.Name = asked
		}
		out = append(out, rr)
	}
	return out, nil
}

func (r *Resolver) addr(name string) (netip.Addr, error) {
	if r.Pool == nil {
		return netip.Addr{}, errors.New("capture: dns: no address pool")
	}
	a, err := r.Pool.Addr(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("capture: dns: %s: %w", name, err)
	}
	return a, nil
}

// reverse answers a PTR question for an address of the pool's range; ok is false for any
// other name.
func (r *Resolver) reverse(m *dns.Msg) (resp *dns.Msg, ok bool) {
	q := m.Question[0]
	a, ok := reverseAddr(q.Name)
	if !ok || r.Pool == nil || !r.Pool.Contains(a) {
		return nil, false
	}
	resp = new(dns.Msg)
	name, known := r.Pool.Name(a)
	if !known {
		resp.SetRcode(m, dns.RcodeNameError)
		return resp, true
	}
	resp.SetReply(m)
	resp.RecursionAvailable = true
	resp.Answer = []dns.RR{&dns.PTR{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: syntheticTTL},
		Ptr: name,
	}}
	return resp, true
}

// reverseAddr parses "d.c.b.a.in-addr.arpa." into a.b.c.d.
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(canonical(name), ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	l := strings.Split(rest, ".")
	if len(l) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(l[3] + "." + l[2] + "." + l[1] + "." + l[0])
	return a, err == nil
}

// query is a recursive question for name (fully qualified) of type qtype, class IN.
func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.RecursionDesired = true
	return m
}

// isName reports whether name is a valid domain name that fits in a message.
func isName(name string) bool {
	_, ok := dns.IsDomainName(name)
	return ok
}

func (r *Resolver) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}
