package capture

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeDNS is an in-memory nameserver for one zone that counts what it is asked. Names it has no
// record for are NXDOMAIN; SRV answers carry the A and AAAA records of their targets in Extra.
type fakeDNS struct {
	zone  map[string][]dns.RR       // by canonical owner
	delay map[string]time.Duration  // per canonical name asked
	fail  map[string]error          // per canonical name asked; "*" for every name
	reply func(m *dns.Msg) *dns.Msg // when set, answers everything (fuzzing)

	mu    sync.Mutex
	asked []string // "name TYPE", in arrival order
}

func newFakeDNS(t testing.TB, records ...string) *fakeDNS {
	f := &fakeDNS{zone: map[string][]dns.RR{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		n := canonical(rr.Header().Name)
		f.zone[n] = append(f.zone[n], rr)
	}
	return f
}

func (f *fakeDNS) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if len(m.Question) == 0 {
		return nil, errors.New("fake: no question")
	}
	q := m.Question[0]
	name := canonical(q.Name)
	f.mu.Lock()
	f.asked = append(f.asked, name+" "+dns.Type(q.Qtype).String())
	f.mu.Unlock()
	if d := f.delay[name]; d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	if err := f.fail["*"]; err != nil {
		return nil, err
	}
	if f.reply != nil {
		return f.reply(m), nil
	}
	resp := new(dns.Msg).SetReply(m)
	rrs, ok := f.zone[name]
	if !ok {
		resp.Rcode = dns.RcodeNameError
		return resp, nil
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype != q.Qtype {
			continue
		}
		resp.Answer = append(resp.Answer, dns.Copy(rr))
		if srv, ok := rr.(*dns.SRV); ok {
			for _, x := range f.zone[canonical(srv.Target)] {
				if t := x.Header().Rrtype; t == dns.TypeA || t == dns.TypeAAAA {
					resp.Extra = append(resp.Extra, dns.Copy(x))
				}
			}
		}
	}
	return resp, nil
}

func (f *fakeDNS) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// clusterRecords is the cluster of the tests: namespace "ns" (the proxy pod's), "other", a
// dual-stack Service, a headless one, a name in two search domains, a node-suffix name and an
// internet name its CoreDNS would forward.
var clusterRecords = []string{
	"web.ns.svc.cluster.local. 5 IN A 10.96.0.10",
	"web.ns.svc.cluster.local. 5 IN AAAA fd00::10",
	"_http._tcp.web.ns.svc.cluster.local. 5 IN SRV 0 100 80 web.ns.svc.cluster.local.",
	"db.other.svc.cluster.local. 5 IN A 10.96.0.20",
	"_pg._tcp.db.other.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.other.svc.cluster.local.",
	"_pg._tcp.db.other.svc.cluster.local. 5 IN SRV 0 50 5432 db-1.db.other.svc.cluster.local.",
	"db-0.db.other.svc.cluster.local. 5 IN A 10.244.0.5",
	"db-1.db.other.svc.cluster.local. 5 IN A 10.244.0.6",
	"db-1.db.other.svc.cluster.local. 5 IN AAAA fd00::6",
	"_pg._tcp.db.other.svc.cluster.local. 5 IN TXT \"txt\"",
	"dup.ns.svc.cluster.local. 5 IN A 10.96.0.30",
	"dup.cluster.local. 5 IN A 10.96.0.31",
	"web.c.project.internal. 5 IN A 10.128.0.2",
	"www.example.com. 300 IN A 93.184.216.34",
	"web.ns.svc.k8s.example. 5 IN A 10.96.0.40",
}

// upstreamRecords is the laptop's view of the world.
var upstreamRecords = []string{
	"www.example.com. 300 IN A 93.184.216.34",
	"www.example.com. 300 IN AAAA 2606:2800::1",
	"www.example.com. 300 IN MX 10 mail.example.com.",
	"intranet.corp.example. 60 IN A 192.0.2.10",
	"1.2.0.192.in-addr.arpa. 60 IN PTR host.example.",
}

var podSearch = []string{"ns.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "c.project.internal."}

// testResolver returns a Resolver on fresh fakes of clusterRecords and upstreamRecords.
func testResolver(t testing.TB) (*Resolver, *fakeDNS, *fakeDNS) {
	cluster, upstream := newFakeDNS(t, clusterRecords...), newFakeDNS(t, upstreamRecords...)
	r := &Resolver{
		Cluster:     cluster,
		Upstream:    upstream,
		Pool:        &Pool{},
		Search:      podSearch,
		LocalSearch: []string{"corp.example.", "example."},
		Logf:        t.Logf,
	}
	return r, cluster, upstream
}

// describe lists the records of a section as "owner TYPE rdata", an A record of a synthetic
// address as "owner A pool:NAME", leaving out OPT.
func describe(rrs []dns.RR, p *Pool) []string {
	var out []string
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == dns.TypeOPT {
			continue
		}
		rdata := strings.TrimPrefix(rr.String(), h.String())
		if a, ok := rr.(*dns.A); ok {
			if addr, ok := netip.AddrFromSlice(a.A); ok && p.Contains(addr) {
				name, _ := p.Name(addr)
				rdata = "pool:" + name
			}
		}
		out = append(out, h.Name+" "+dns.Type(h.Rrtype).String()+" "+rdata)
	}
	return out
}

func TestResolverExchange(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		search    []string         // the pod's search list; nil: podSearch
		fail      map[string]error // cluster failures by name
		upFail    bool             // Upstream fails
		wantErr   bool
		wantRcode int
		wantAns   []string
		wantExtra []string
		wantUp    int      // questions Upstream got
		mustAsk   []string // questions the cluster must have got
		never     []string // questions the cluster must not have got
	}{
		{
			name: "short name: first search entry", qname: "web.", qtype: dns.TypeA,
			wantAns: []string{"web. A pool:web.ns.svc.cluster.local."},
			mustAsk: []string{"web.ns.svc.cluster.local. A"},
			never:   []string{"web.c.project.internal. A", "web. A"},
		},
		{
			name: "case of the question is kept", qname: "WeB.", qtype: dns.TypeA,
			wantAns: []string{"WeB. A pool:web.ns.svc.cluster.local."},
		},
		{
			name: "svc.ns", qname: "db.other.", qtype: dns.TypeA,
			wantAns: []string{"db.other. A pool:db.other.svc.cluster.local."},
		},
		{
			name: "svc.ns.svc", qname: "db.other.svc.", qtype: dns.TypeA,
			wantAns: []string{"db.other.svc. A pool:db.other.svc.cluster.local."},
		},
		{
			name: "fully qualified cluster name is asked as it is", qname: "db.other.svc.cluster.local.", qtype: dns.TypeA,
			wantAns: []string{"db.other.svc.cluster.local. A pool:db.other.svc.cluster.local."},
			mustAsk: []string{"db.other.svc.cluster.local. A"},
			never:   []string{"db.other.svc.cluster.local.ns.svc.cluster.local. A"},
		},
		{
			name: "first match in search order wins, not the fastest", qname: "dup.", qtype: dns.TypeA,
			wantAns: []string{"dup. A pool:dup.ns.svc.cluster.local."},
		},
		{
			name: "laptop search suffix stripped", qname: "web.corp.example.", qtype: dns.TypeA,
			wantAns: []string{"web.corp.example. A pool:web.ns.svc.cluster.local."},
		},
		{
			name: "laptop suffix on svc.ns.svc.cluster.local", qname: "db.other.svc.cluster.local.corp.example.", qtype: dns.TypeA,
			wantAns: []string{"db.other.svc.cluster.local.corp.example. A pool:db.other.svc.cluster.local."},
		},
		{
			name: "laptop suffix kept when the stripped name is not a cluster name", qname: "intranet.corp.example.", qtype: dns.TypeA,
			wantAns: []string{"intranet.corp.example. A 192.0.2.10"}, wantUp: 1,
		},
		{
			name: "internet name goes upstream although the cluster would forward it", qname: "www.example.com.", qtype: dns.TypeA,
			wantAns: []string{"www.example.com. A 93.184.216.34"}, wantUp: 1,
			mustAsk: []string{"www.example.com.ns.svc.cluster.local. A"},
			never:   []string{"www.example.com. A", "www.example.com.c.project.internal. A"},
		},
		{
			name: "internet AAAA unchanged", qname: "www.example.com.", qtype: dns.TypeAAAA,
			wantAns: []string{"www.example.com. AAAA 2606:2800::1"}, wantUp: 1,
		},
		{
			name: "internet MX unchanged", qname: "www.example.com.", qtype: dns.TypeMX,
			wantAns: []string{"www.example.com. MX 10 mail.example.com."}, wantUp: 1,
		},
		{
			name: "unknown short name: upstream says NXDOMAIN", qname: "nothere.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError, wantUp: 1,
		},
		{
			name: "AAAA of a short cluster name is empty", qname: "web.", qtype: dns.TypeAAAA,
		},
		{
			name: "AAAA of a cluster name is empty", qname: "web.ns.svc.cluster.local.", qtype: dns.TypeAAAA,
			never: []string{"web.ns.svc.cluster.local. AAAA"},
		},
		{
			name: "unknown name in the cluster domain: NXDOMAIN, never upstream", qname: "unknown.svc.cluster.local.", qtype: dns.TypeA,
			wantRcode: dns.RcodeNameError,
		},
		{
			name: "AAAA of an unknown name in the cluster domain: NXDOMAIN", qname: "unknown.svc.cluster.local.", qtype: dns.TypeAAAA,
			wantRcode: dns.RcodeNameError,
		},
		{
			name: "TXT of an unknown name in the cluster domain: NXDOMAIN", qname: "unknown.svc.cluster.local.", qtype: dns.TypeTXT,
			wantRcode: dns.RcodeNameError,
		},
		{
			name: "SRV: A records rewritten, AAAA dropped", qname: "_http._tcp.web.ns.svc.cluster.local.", qtype: dns.TypeSRV,
			wantAns:   []string{"_http._tcp.web.ns.svc.cluster.local. SRV 0 100 80 web.ns.svc.cluster.local."},
			wantExtra: []string{"web.ns.svc.cluster.local. A pool:web.ns.svc.cluster.local."},
		},
		{
			name: "SRV short name renamed", qname: "_http._tcp.web.", qtype: dns.TypeSRV,
			wantAns:   []string{"_http._tcp.web. SRV 0 100 80 web.ns.svc.cluster.local."},
			wantExtra: []string{"web.ns.svc.cluster.local. A pool:web.ns.svc.cluster.local."},
			mustAsk:   []string{"_http._tcp.web.ns.svc.cluster.local. SRV"},
		},
		{
			name: "SRV of a headless Service: one address per pod", qname: "_pg._tcp.db.other.", qtype: dns.TypeSRV,
			wantAns: []string{
				"_pg._tcp.db.other. SRV 0 50 5432 db-0.db.other.svc.cluster.local.",
				"_pg._tcp.db.other. SRV 0 50 5432 db-1.db.other.svc.cluster.local.",
			},
			wantExtra: []string{
				"db-0.db.other.svc.cluster.local. A pool:db-0.db.other.svc.cluster.local.",
				"db-1.db.other.svc.cluster.local. A pool:db-1.db.other.svc.cluster.local.",
			},
		},
		{
			name: "TXT from the cluster", qname: "_pg._tcp.db.other.svc.cluster.local.", qtype: dns.TypeTXT,
			wantAns: []string{"_pg._tcp.db.other.svc.cluster.local. TXT \"txt\""},
		},
		{
			name: "custom cluster domain", qname: "web.", qtype: dns.TypeA,
			search:  []string{"ns.svc.k8s.example.", "svc.k8s.example.", "k8s.example.", "c.project.internal."},
			wantAns: []string{"web. A pool:web.ns.svc.k8s.example."},
			never:   []string{"web.ns.svc.cluster.local. A", "web.c.project.internal. A"},
		},
		{
			name: "PTR of a real address goes upstream", qname: "1.2.0.192.in-addr.arpa.", qtype: dns.TypePTR,
			wantAns: []string{"1.2.0.192.in-addr.arpa. PTR host.example."}, wantUp: 1,
			never: []string{"1.2.0.192.in-addr.arpa.ns.svc.cluster.local. PTR"},
		},
		{
			name: "PTR of a synthetic address never handed out", qname: "9.0.19.198.in-addr.arpa.", qtype: dns.TypePTR,
			wantRcode: dns.RcodeNameError,
		},
		{
			name: "upstream failure is an error", qname: "www.example.com.", qtype: dns.TypeA,
			upFail: true, wantErr: true, wantUp: 1,
		},
		{
			name: "cluster failure for a cluster-domain name is an error, not upstream", qname: "web.ns.svc.cluster.local.", qtype: dns.TypeA,
			fail: map[string]error{"*": boom}, wantErr: true,
		},
		{
			name: "cluster failure for a short name: upstream answers", qname: "www.example.com.", qtype: dns.TypeA,
			fail:    map[string]error{"*": boom},
			wantAns: []string{"www.example.com. A 93.184.216.34"}, wantUp: 1,
		},
		{
			name: "a failing earlier expansion does not hide a later one", qname: "db.other.", qtype: dns.TypeA,
			fail:    map[string]error{"db.other.ns.svc.cluster.local.": boom},
			wantAns: []string{"db.other. A pool:db.other.svc.cluster.local."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, cluster, upstream := testResolver(t)
			cluster.delay = map[string]time.Duration{"dup.ns.svc.cluster.local.": 50 * time.Millisecond}
			cluster.fail = tt.fail
			if tt.search != nil {
				r.Search = tt.search
			}
			if tt.upFail {
				upstream.fail = map[string]error{"*": boom}
			}
			q := new(dns.Msg).SetQuestion(tt.qname, tt.qtype)
			q.SetEdns0(1232, false)
			before := q.String()
			resp, err := r.Exchange(context.Background(), q)
			if q.String() != before {
				t.Errorf("Exchange modified the query:\n%v\nwas\n%v", q, before)
			}
			if got := len(upstream.questions()); got != tt.wantUp {
				t.Errorf("upstream asked %d questions (%q), want %d", got, upstream.questions(), tt.wantUp)
			}
			asked := cluster.questions()
			for _, a := range tt.mustAsk {
				if !slices.Contains(asked, a) {
					t.Errorf("cluster was not asked %q (asked %q)", a, asked)
				}
			}
			for _, a := range tt.never {
				if slices.Contains(asked, a) {
					t.Errorf("cluster was asked %q", a)
				}
			}
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Exchange = %v, want an error", resp)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.wantRcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.wantRcode])
			}
			if len(resp.Question) != 1 || resp.Question[0] != q.Question[0] {
				t.Errorf("question %v, want %v", resp.Question, q.Question)
			}
			if !resp.Response || resp.Id != q.Id {
				t.Errorf("not a response to the query: response %v, id %d, want %d", resp.Response, resp.Id, q.Id)
			}
			if got := describe(resp.Answer, r.Pool); !slices.Equal(got, tt.wantAns) {
				t.Errorf("answer\n%q\nwant\n%q", got, tt.wantAns)
			}
			if got := describe(resp.Extra, r.Pool); !slices.Equal(got, tt.wantExtra) {
				t.Errorf("extra\n%q\nwant\n%q", got, tt.wantExtra)
			}
			if tt.wantUp > 0 {
				if _, used := r.Pool.Name(SyntheticPrefix.Addr().Next()); used {
					t.Error("a name resolved upstream took a synthetic address")
				}
			}
			for _, rr := range append(slices.Clone(resp.Answer), resp.Extra...) {
				if a, ok := rr.(*dns.A); ok && r.Pool.Contains(netip.AddrFrom4([4]byte(a.A.To4()))) && rr.Header().Ttl > syntheticTTL {
					t.Errorf("synthetic record %v lives longer than %d s", rr, syntheticTTL)
				}
			}
		})
	}
}

func TestResolverOtherQueriesGoUpstream(t *testing.T) {
	tests := []struct {
		name string
		msg  func() *dns.Msg
	}{
		{"two questions", func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("web.ns.svc.cluster.local.", dns.TypeA)
			m.Question = append(m.Question, dns.Question{Name: "web.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			return m
		}},
		{"class CHAOS", func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("web.ns.svc.cluster.local.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}},
		{"no question", func() *dns.Msg { return &dns.Msg{} }},
		{"opcode NOTIFY", func() *dns.Msg {
			m := new(dns.Msg).SetQuestion("web.ns.svc.cluster.local.", dns.TypeSOA)
			m.Opcode = dns.OpcodeNotify
			return m
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, cluster, _ := testResolver(t)
			want := new(dns.Msg).SetRcode(tt.msg(), dns.RcodeRefused)
			var got int
			r.Upstream = exchangerFunc(func(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
				got++
				return want, nil
			})
			resp, err := r.Exchange(context.Background(), tt.msg())
			if err != nil || resp != want {
				t.Errorf("Exchange = %v, %v; want the upstream answer unchanged", resp, err)
			}
			if got != 1 {
				t.Errorf("upstream asked %d times, want 1", got)
			}
			if asked := cluster.questions(); len(asked) > 0 {
				t.Errorf("cluster asked %q", asked)
			}
		})
	}
}

type exchangerFunc func(context.Context, *dns.Msg) (*dns.Msg, error)

func (f exchangerFunc) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) { return f(ctx, m) }

func TestResolverPTR(t *testing.T) {
	r, _, upstream := testResolver(t)
	a, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion("db.other.", dns.TypeA))
	if err != nil || len(a.Answer) != 1 {
		t.Fatalf("A: %v, %v", a, err)
	}
	ip := a.Answer[0].(*dns.A).A.To4()
	arpa, err := dns.ReverseAddr(ip.String())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion(arpa, dns.TypePTR))
	if err != nil {
		t.Fatal(err)
	}
	if got := describe(resp.Answer, r.Pool); !slices.Equal(got, []string{arpa + " PTR db.other.svc.cluster.local."}) {
		t.Errorf("PTR answer %q", got)
	}
	if n := len(upstream.questions()); n != 0 {
		t.Errorf("upstream asked %d questions", n)
	}
}

// TestResolverRemembersDecisions checks that a resolver's A and AAAA questions for one name
// cost one round of cluster questions, also when they arrive together, and that failures are
// not remembered.
func TestResolverRemembersDecisions(t *testing.T) {
	t.Run("concurrent A and AAAA", func(t *testing.T) {
		r, cluster, upstream := testResolver(t)
		cluster.delay = map[string]time.Duration{"web.ns.svc.cluster.local.": 20 * time.Millisecond}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				qtype := dns.TypeA
				if i%2 == 1 {
					qtype = dns.TypeAAAA
				}
				resp, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion("web.", qtype))
				if err != nil || resp.Rcode != dns.RcodeSuccess {
					t.Errorf("Exchange: %v, %v", resp, err)
				}
			})
		}
		wg.Wait()
		if n := len(cluster.questions()); n > 3 {
			t.Errorf("cluster asked %d questions (%q), want at most 3", n, cluster.questions())
		}
		if n := len(upstream.questions()); n != 0 {
			t.Errorf("upstream asked %d questions", n)
		}
	})
	t.Run("negative decision", func(t *testing.T) {
		r, cluster, upstream := testResolver(t)
		for range 2 {
			if _, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(cluster.questions()); n != 3 {
			t.Errorf("cluster asked %d questions (%q), want 3", n, cluster.questions())
		}
		if n := len(upstream.questions()); n != 2 {
			t.Errorf("upstream asked %d questions, want 2", n)
		}
	})
	t.Run("failure not remembered", func(t *testing.T) {
		r, cluster, _ := testResolver(t)
		cluster.fail = map[string]error{"*": errors.New("tunnel down")}
		if _, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion("web.", dns.TypeA)); err != nil {
			t.Fatal(err) // upstream answers NXDOMAIN
		}
		cluster.mu.Lock()
		cluster.fail = nil
		cluster.mu.Unlock()
		resp, err := r.Exchange(context.Background(), new(dns.Msg).SetQuestion("web.", dns.TypeA))
		if err != nil {
			t.Fatal(err)
		}
		if got := describe(resp.Answer, r.Pool); !slices.Equal(got, []string{"web. A pool:web.ns.svc.cluster.local."}) {
			t.Errorf("after the tunnel came back: %q", got)
		}
	})
}

func TestResolverClusterDomain(t *testing.T) {
	tests := []struct {
		search []string
		want   string
	}{
		{nil, "cluster.local."},
		{podSearch, "cluster.local."},
		{[]string{"ns.svc.k8s.example.", "svc.k8s.example.", "k8s.example."}, "k8s.example."},
		{[]string{"NS.svc.Cluster.Local", "svc.Cluster.Local", "Cluster.Local"}, "cluster.local."},
		{[]string{"svc.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}, "cluster.local."}, // namespace "svc"
		{[]string{"ns.svc.cluster.local.", "svc.cluster.local."}, "cluster.local."},
		{[]string{"corp.example.", "svc."}, "cluster.local."},
	}
	for _, tt := range tests {
		r := &Resolver{Search: tt.search}
		if got := r.ClusterDomain(); got != tt.want {
			t.Errorf("ClusterDomain of %q = %q, want %q", tt.search, got, tt.want)
		}
	}
}

func TestResolverLocalResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 127.0.0.1\nsearch corp.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ResolvConfEnv, p)
	c, err := LocalResolvConf()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Servers, []string{"127.0.0.1:53"}) || !slices.Equal(c.Search, []string{"corp.example."}) {
		t.Errorf("LocalResolvConf = %+v", c)
	}
	t.Setenv(ResolvConfEnv, filepath.Join(t.TempDir(), "missing"))
	if _, err := LocalResolvConf(); err == nil {
		t.Error("LocalResolvConf of a missing file succeeded")
	}
}

// FuzzResolverExchange feeds arbitrary queries, and arbitrary cluster answers, to a Resolver:
// it must not panic, must answer the question asked, must never send a name of the cluster
// domain upstream, and must give out only synthetic IPv4 addresses for cluster names.
func FuzzResolverExchange(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	srv := new(dns.Msg).SetQuestion("_http._tcp.web.ns.svc.cluster.local.", dns.TypeSRV)
	srvAns := new(dns.Msg).SetReply(srv)
	for _, s := range []string{
		"_http._tcp.web.ns.svc.cluster.local. 5 IN SRV 0 100 80 web.ns.svc.cluster.local.",
		"web.ns.svc.cluster.local. 5 IN A 10.0.0.1",
		"web.ns.svc.cluster.local. 5 IN AAAA fd00::1",
		"web.ns.svc.cluster.local. 5 IN CNAME x.example.",
	} {
		rr, _ := dns.NewRR(s)
		srvAns.Answer = append(srvAns.Answer, rr)
		srvAns.Extra = append(srvAns.Extra, rr)
	}
	two := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	for _, q := range []*dns.Msg{
		new(dns.Msg).SetQuestion("web.", dns.TypeA),
		new(dns.Msg).SetQuestion("web.corp.example.", dns.TypeAAAA),
		new(dns.Msg).SetQuestion("unknown.svc.cluster.local.", dns.TypeA),
		new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA),
		new(dns.Msg).SetQuestion("1.0.19.198.in-addr.arpa.", dns.TypePTR),
		srv, two,
	} {
		f.Add(pack(q), []byte(nil))
		f.Add(pack(q), pack(srvAns))
	}
	f.Add([]byte{0, 1, 2}, []byte{3, 4})

	f.Fuzz(func(t *testing.T, query, answer []byte) {
		q := new(dns.Msg)
		if q.Unpack(query) != nil {
			return
		}
		r, cluster, upstream := testResolver(t)
		r.Logf = nil
		r.Pool = &Pool{Prefix: netip.MustParsePrefix("198.19.0.0/29")} // runs out: errors must be fine
		if a := new(dns.Msg); len(answer) > 0 && a.Unpack(answer) == nil {
			cluster.reply = func(m *dns.Msg) *dns.Msg {
				resp := a.Copy()
				resp.Id, resp.Question = m.Id, slices.Clone(m.Question)
				return resp
			}
		}
		before := q.String()
		resp, err := r.Exchange(context.Background(), q)
		if q.String() != before {
			t.Fatalf("Exchange modified the query")
		}
		if err != nil {
			return
		}
		if resp == nil {
			t.Fatal("nil answer without an error")
		}
		single := len(q.Question) == 1 && q.Question[0].Qclass == dns.ClassINET && q.Opcode == dns.OpcodeQuery
		if !single {
			return
		}
		if len(resp.Question) != 1 || resp.Question[0] != q.Question[0] {
			t.Fatalf("answer to %v asks %v", q.Question, resp.Question)
		}
		if !inDomain(canonical(q.Question[0].Name), r.ClusterDomain()) {
			return
		}
		if n := len(upstream.questions()); n > 0 {
			t.Fatalf("cluster-domain name %s went upstream", q.Question[0].Name)
		}
		for _, rr := range append(slices.Clone(resp.Answer), resp.Extra...) {
			switch rr := rr.(type) {
			case *dns.AAAA:
				t.Fatalf("AAAA record %v in a cluster answer", rr)
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A); !ok || !r.Pool.Contains(a) {
					t.Fatalf("A record %v is not synthetic", rr)
				}
			}
		}
	})
}
