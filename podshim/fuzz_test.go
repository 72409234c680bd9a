package podshim

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/internal/dnsclient"
)

// The seed corpora of these targets are in testdata/fuzz/<target>/ and run with every
// `go test`; `make fuzz` explores from them for FUZZTIME each. The laptop side of DNS
// (capture.Resolver) has its own target, FuzzResolverExchange in package capture.

// fuzzSearch turns a comma-separated list into a search list the way dnsclient reads
// resolv.conf: fully qualified, the root left out (at most 6 domains, like glibc).
func fuzzSearch(s string) []string {
	var out []string
	for d := range strings.SplitSeq(s, ",") {
		if d = dns.Fqdn(d); d != "." && len(out) < 6 {
			out = append(out, d)
		}
	}
	return out
}

// checkCandidates checks the search-list expansion of name.
func checkCandidates(t *testing.T, r *resolver, name string) []string {
	t.Helper()
	got := r.candidates(name)
	fqdn := dns.Fqdn(name)
	if len(got) == 0 || got[len(got)-1] != fqdn {
		t.Fatalf("candidates(%q) = %q, want it to end with %q", name, got, fqdn)
	}
	if len(got) != 1 && len(got) != len(r.search)+1 {
		t.Fatalf("candidates(%q) = %q: %d names, want 1 or %d", name, got, len(got), len(r.search)+1)
	}
	for i, c := range got[:len(got)-1] {
		if c != fqdn+r.search[i] {
			t.Fatalf("candidates(%q)[%d] = %q, want %q", name, i, c, fqdn+r.search[i])
		}
	}
	dots := strings.Count(strings.TrimSuffix(fqdn, "."), ".")
	if (fqdn == "." || dots >= r.ndots) && len(got) != 1 {
		t.Fatalf("candidates(%q) with ndots %d = %q, want only the name", name, r.ndots, got)
	}
	return got
}

// FuzzResolverCandidates checks the search-list expansion of any name, search list and
// ndots: it never panics, always ends with the name itself (fully qualified) and puts
// the search domains before it, in order, only for names with fewer than ndots dots.
func FuzzResolverCandidates(f *testing.F) {
	const k8s = "ns.svc.cluster.local,svc.cluster.local,cluster.local"
	for _, s := range []struct {
		name, search string
		ndots        uint8
	}{
		{"web", k8s, 5},
		{"web.ns", k8s, 5},
		{"web.ns.svc.cluster.local.", k8s, 5},
		{"_http._tcp.web", k8s, 5},
		{"www.example.com", "corp.example", 1},
		{"", k8s, 5},
		{".", k8s, 5},
		{"a\\.b", k8s, 1},
		{"trailing\\.", "x.", 0},
		{"web", "", 15},
	} {
		f.Add(s.name, s.search, s.ndots)
	}
	f.Fuzz(func(t *testing.T, name, search string, ndots uint8) {
		r := &resolver{search: fuzzSearch(search), ndots: int(ndots)}
		checkCandidates(t, r, name)
	})
}

// fuzzUpstream is a loopback UDP nameserver that answers the i-th query it gets with
// plan[i % len(plan)] and logs what it saw. It always answers at once and never with
// more than 512 bytes, so the client never times out or falls back to TCP.
type fuzzUpstream struct {
	pc net.PacketConn

	mu   sync.Mutex
	plan []byte
	log  []fuzzAsked
}

// fuzzAsked is one query the upstream answered.
type fuzzAsked struct {
	name     string // "" when the query had no question or could not be parsed
	rcode    int
	answered bool // the answer has records
}

// Upstream behaviours, chosen by a plan byte modulo fuzzActions.
const (
	actAnswer      = iota // NOERROR with an A record owned by the name and a CNAME owned by another
	actAnswerUpper        // NOERROR with an A record owned by the name in upper case
	actNXDomain           // NXDOMAIN
	actNoData             // NOERROR without records
	actServFail           // SERVFAIL
	actNXWithData         // NXDOMAIN that still carries an A record
	fuzzActions
)

func startFuzzUpstream(f *testing.F) *fuzzUpstream {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	u := &fuzzUpstream{pc: pc}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply := u.answer(buf[:n]); reply != nil {
				_, _ = pc.WriteTo(reply, addr)
			}
		}
	}()
	f.Cleanup(func() {
		pc.Close()
		<-done
	})
	return u
}

func (u *fuzzUpstream) reset(plan []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.plan, u.log = plan, nil
}

func (u *fuzzUpstream) asked() []fuzzAsked {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]fuzzAsked(nil), u.log...)
}

func (u *fuzzUpstream) answer(raw []byte) []byte {
	if len(raw) < 12 {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	act := byte(actNXDomain)
	if len(u.plan) > 0 {
		act = u.plan[len(u.log)%len(u.plan)] % fuzzActions
	}
	q := new(dns.Msg)
	if err := q.Unpack(raw); err != nil {
		// Answer FORMERR with the query's header only.
		b := append([]byte(nil), raw[:12]...)
		b[2] |= 0x80                            // QR
		b[3] = b[3]&0xf0 | dns.RcodeFormatError // RCODE
		clear(b[4:])                            // no sections
		u.log = append(u.log, fuzzAsked{rcode: dns.RcodeFormatError})
		return b
	}
	m := new(dns.Msg).SetReply(q)
	m.Compress = true
	var name string
	if len(q.Question) > 0 {
		name = q.Question[0].Name
	}
	a := func(owner string) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(192, 0, 2, 1)}
	}
	switch act {
	case actAnswer:
		m.Answer = []dns.RR{a(name), &dns.CNAME{Hdr: dns.RR_Header{Name: "other.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "x.example."}}
	case actAnswerUpper:
		m.Answer = []dns.RR{a(strings.ToUpper(name))}
	case actNXDomain:
		m.Rcode = dns.RcodeNameError
	case actServFail:
		m.Rcode = dns.RcodeServerFailure
	case actNXWithData:
		m.Rcode = dns.RcodeNameError
		m.Answer = []dns.RR{a(name)}
	}
	if name == "" {
		m.Answer = nil // SetReply kept no question to own them
	}
	b, err := m.Pack()
	if err != nil || len(b) > dns.MinMsgSize {
		m.Answer = nil
		if b, err = m.Pack(); err != nil {
			return nil
		}
	}
	u.log = append(u.log, fuzzAsked{name: name, rcode: m.Rcode, answered: len(m.Answer) > 0})
	return b
}

// normName is name as a nameserver sees it after packing (escapes decoded and
// re-escaped), or false when a query for it cannot be packed.
func normName(name string) (string, bool) {
	b, err := new(dns.Msg).SetQuestion(name, dns.TypeA).Pack()
	if err != nil {
		return "", false
	}
	m := new(dns.Msg)
	if m.Unpack(b) != nil || len(m.Question) != 1 {
		return "", false
	}
	return m.Question[0].Name, true
}

// FuzzResolve runs podshim's handling of one query read from a DNS stream
// (resolver.resolve) on any parsed message, any search list and ndots, against a
// loopback nameserver whose answers the input also chooses. The answer is never nil,
// carries the query's ID, and the query is not modified; for a one-question query the
// nameserver is asked the search-list candidates in order, stopping at the first
// answer with records, and the answer returned is the last one received, renamed to the
// name asked (SERVFAIL when no nameserver answered).
func FuzzResolve(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	const k8s = "ns.svc.cluster.local,svc.cluster.local,cluster.local"
	id := func(m *dns.Msg) *dns.Msg { m.Id = 4242; return m }
	two := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	two.Question = append(two.Question, dns.Question{Name: "db.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})
	edns := new(dns.Msg).SetQuestion("web.", dns.TypeAAAA).SetEdns0(1232, true)
	resp := new(dns.Msg).SetQuestion("web.", dns.TypeA)
	resp.Response = true
	tsig := new(dns.Msg).SetQuestion("web.", dns.TypeA).SetTsig("key.", dns.HmacSHA256, 300, 0)
	nx, ans, nodata, upper, sf, nxdata := []byte{actNXDomain}, []byte{actAnswer}, []byte{actNoData}, []byte{actAnswerUpper}, []byte{actServFail}, []byte{actNXWithData}
	for _, s := range []struct {
		q      *dns.Msg
		search string
		ndots  uint8
		plan   []byte
	}{
		{id(new(dns.Msg).SetQuestion("web.", dns.TypeA)), k8s, 5, ans},
		{id(new(dns.Msg).SetQuestion("db.other.", dns.TypeA)), k8s, 5, []byte{actNXDomain, actAnswer}},
		{id(new(dns.Msg).SetQuestion("nothere.", dns.TypeA)), k8s, 5, nx},
		{id(new(dns.Msg).SetQuestion("web.", dns.TypeAAAA)), k8s, 5, []byte{actNoData, actServFail, actNoData, actAnswerUpper}},
		{id(new(dns.Msg).SetQuestion("_http._tcp.web.ns.svc.cluster.local.", dns.TypeSRV)), k8s, 5, nodata},
		{id(new(dns.Msg).SetQuestion("www.example.com.", dns.TypeA)), "corp.example", 1, upper},
		{id(new(dns.Msg).SetQuestion("web.", dns.TypeA)), k8s, 5, sf},
		{id(new(dns.Msg).SetQuestion("web.", dns.TypeA)), k8s, 5, nxdata},
		{id(new(dns.Msg).SetQuestion(".", dns.TypeNS)), k8s, 5, ans},
		{id(new(dns.Msg).SetQuestion(strings.Repeat("a", 63)+"."+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+".", dns.TypeA)), k8s, 5, ans},
		{id(two), k8s, 5, ans},
		{id(new(dns.Msg)), k8s, 5, nx},
		{id(edns), k8s, 5, ans},
		{id(resp), k8s, 5, ans},
		{id(tsig), k8s, 5, ans},
	} {
		f.Add(pack(s.q), s.search, s.ndots, s.plan)
	}
	up := startFuzzUpstream(f)

	f.Fuzz(func(t *testing.T, query []byte, search string, ndots uint8, plan []byte) {
		q := new(dns.Msg)
		if q.Unpack(query) != nil {
			return
		}
		before, err := q.Pack()
		if err != nil {
			return // only packable queries reach the nameserver
		}
		r := &resolver{
			client: &dnsclient.Client{Servers: []string{up.pc.LocalAddr().String()}, Timeout: 2 * time.Second},
			search: fuzzSearch(search),
			ndots:  int(ndots),
		}
		up.reset(plan)
		ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
		defer cancel()
		resp := r.resolve(ctx, q)
		if ctx.Err() != nil {
			t.Fatalf("resolve took the whole query timeout")
		}
		if resp == nil {
			t.Fatal("resolve returned nil")
		}
		if resp.Id != q.Id {
			t.Fatalf("answer ID %d, want the query's %d", resp.Id, q.Id)
		}
		if after, err := q.Pack(); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("resolve modified the query (%v)", err)
		}
		asked := up.asked()
		if len(asked) == 0 {
			if resp.Rcode != dns.RcodeServerFailure {
				t.Fatalf("no nameserver answered, yet rcode %s", dns.RcodeToString[resp.Rcode])
			}
			return
		}
		last := asked[len(asked)-1]
		if last.rcode == dns.RcodeFormatError && resp.Rcode == dns.RcodeServerFailure {
			// The nameserver could not read what miekg/dns packed (the library packs some records it
			// then refuses) and sent a header-only FORMERR, which the client may refuse in turn:
			// SERVFAIL is the right answer then. (Regression seed ac1143b1bcec7cb0.)
			return
		}
		if resp.Rcode != last.rcode {
			t.Fatalf("rcode %s, want the last answer's %s (asked %+v)", dns.RcodeToString[resp.Rcode], dns.RcodeToString[last.rcode], asked)
		}
		if len(q.Question) != 1 {
			if len(asked) != 1 {
				t.Fatalf("a query with %d questions was sent %d times, want once as is", len(q.Question), len(asked))
			}
			return
		}
		orig := q.Question[0].Name
		cands := checkCandidates(t, r, orig)
		// The nameserver must have been asked a subsequence of the candidates, in order
		// (a candidate that cannot be packed is skipped), and nothing after an answer
		// with records.
		i := 0
		for k, a := range asked {
			if k < len(asked)-1 && a.answered && a.rcode == dns.RcodeSuccess {
				t.Fatalf("went on after an answer with records: asked %+v", asked)
			}
			for ; i < len(cands); i++ {
				if n, ok := normName(cands[i]); a.name == "" || ok && n == a.name {
					break
				}
			}
			if i == len(cands) {
				t.Fatalf("asked %+v, not a subsequence of the candidates %q", asked, cands)
			}
			i++
		}
		if len(resp.Question) != 1 || resp.Question[0].Name != orig {
			if last.name != "" {
				t.Fatalf("answer's question %v, want the name asked %q", resp.Question, orig)
			}
		}
		if last.answered {
			if len(resp.Answer) == 0 {
				t.Fatalf("the nameserver's records were dropped")
			}
			// Asked as is, the nameserver's spelling (case) of the name may stay.
			owner := resp.Answer[0].Header().Name
			if last.name != orig && owner != orig || !strings.EqualFold(owner, orig) {
				t.Fatalf("record owned by %q, asked %q: want it renamed to %q", owner, last.name, orig)
			}
			if len(resp.Answer) > 1 {
				if other := resp.Answer[1].Header().Name; other != "other.example." && !strings.EqualFold(last.name, "other.example.") {
					t.Fatalf("record of another name renamed to %q", other)
				}
			}
		}
	})
}
