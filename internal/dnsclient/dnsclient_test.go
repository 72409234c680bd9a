package dnsclient_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/kubectl-tp/kubectl-tp/internal/dnsclient"
)

// nameserver is an in-process DNS server on one 127.0.0.1 port, UDP and TCP. It answers
// "a.example." with 192.0.2.1, "big.example." truncated over UDP and in full over TCP,
// "fail.example." with SERVFAIL, "slow.example." never, and anything else with NXDOMAIN.
type nameserver struct {
	addr string

	mu    sync.Mutex
	calls []string // "udp a.example." ...
}

func (ns *nameserver) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	network := "tcp"
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		network = "udp"
	}
	q := r.Question[0]
	ns.mu.Lock()
	ns.calls = append(ns.calls, network+" "+q.Name)
	ns.mu.Unlock()
	m := new(dns.Msg).SetReply(r)
	switch q.Name {
	case "a.example.":
		m.Answer = append(m.Answer, mustRR("a.example. 30 IN A 192.0.2.1"))
	case "big.example.":
		if network == "udp" {
			m.Truncated = true
			break
		}
		for i := range 40 {
			m.Answer = append(m.Answer, mustRR("big.example. 30 IN A 192.0.2."+strconv.Itoa(i+1)))
		}
	case "fail.example.":
		m.Rcode = dns.RcodeServerFailure
	case "slow.example.":
		return
	default:
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

func (ns *nameserver) called() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.calls...)
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

// startNameserver serves ns on UDP and TCP of one free 127.0.0.1 port until the test ends.
func startNameserver(t *testing.T, ns *nameserver) string {
	t.Helper()
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: ns}, {Listener: ln, Handler: ns}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	ns.addr = pc.LocalAddr().String()
	return ns.addr
}

// deadAddr returns a 127.0.0.1 address nothing listens on (UDP and TCP are refused).
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentAddr returns a 127.0.0.1 UDP address that reads queries and never answers.
func silentAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestExchange(t *testing.T) {
	first, second := &nameserver{}, &nameserver{}
	startNameserver(t, first)
	startNameserver(t, second)
	dead, silent := deadAddr(t), silentAddr(t)

	tests := []struct {
		name        string
		servers     func() []string
		qname       string
		wantErr     string // substring; "" for success
		wantRcode   int
		wantAnswers int
		wantFirst   []string // calls the first nameserver saw
		wantSecond  []string // calls the second nameserver saw
	}{
		{
			name: "udp answer", servers: func() []string { return []string{first.addr, second.addr} },
			qname: "a.example.", wantAnswers: 1, wantFirst: []string{"udp a.example."},
		},
		{
			name: "truncated udp retried over tcp", servers: func() []string { return []string{first.addr} },
			qname: "big.example.", wantAnswers: 40, wantFirst: []string{"udp big.example.", "tcp big.example."},
		},
		{
			name: "nxdomain is an answer", servers: func() []string { return []string{first.addr, second.addr} },
			qname: "nothere.example.", wantRcode: dns.RcodeNameError, wantFirst: []string{"udp nothere.example."},
		},
		{
			name: "servfail is an answer, not retried", servers: func() []string { return []string{first.addr, second.addr} },
			qname: "fail.example.", wantRcode: dns.RcodeServerFailure, wantFirst: []string{"udp fail.example."},
		},
		{
			name: "first server refused, second used", servers: func() []string { return []string{dead, second.addr} },
			qname: "a.example.", wantAnswers: 1, wantSecond: []string{"udp a.example."},
		},
		{
			name: "first server silent, second used after time-out", servers: func() []string { return []string{silent, second.addr} },
			qname: "a.example.", wantAnswers: 1, wantSecond: []string{"udp a.example."},
		},
		{
			name: "every server fails", servers: func() []string { return []string{dead, silent} },
			qname: "a.example.", wantErr: "udp " + dead,
		},
		{
			name: "no servers", servers: func() []string { return nil },
			qname: "a.example.", wantErr: "no nameservers",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first.mu.Lock()
			first.calls = nil
			first.mu.Unlock()
			second.mu.Lock()
			second.calls = nil
			second.mu.Unlock()

			c := &dnsclient.Client{Servers: tt.servers(), Timeout: 300 * time.Millisecond}
			q := new(dns.Msg).SetQuestion(tt.qname, dns.TypeA)
			before := q.String()
			resp, err := c.Exchange(context.Background(), q)
			if q.String() != before {
				t.Errorf("Exchange modified the query: %v, was %v", q, before)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Rcode != tt.wantRcode || len(resp.Answer) != tt.wantAnswers || resp.Truncated {
				t.Errorf("answer: rcode %s, %d records, truncated %v; want %s, %d, false",
					dns.RcodeToString[resp.Rcode], len(resp.Answer), resp.Truncated, dns.RcodeToString[tt.wantRcode], tt.wantAnswers)
			}
			if got := first.called(); !slices.Equal(got, tt.wantFirst) {
				t.Errorf("first nameserver saw %q, want %q", got, tt.wantFirst)
			}
			if got := second.called(); !slices.Equal(got, tt.wantSecond) {
				t.Errorf("second nameserver saw %q, want %q", got, tt.wantSecond)
			}
		})
	}
}

func TestExchangeStopsWhenContextDone(t *testing.T) {
	ns := &nameserver{}
	startNameserver(t, ns)
	c := &dnsclient.Client{Servers: []string{ns.addr, ns.addr}, Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Exchange(ctx, new(dns.Msg).SetQuestion("slow.example.", dns.TypeA))
	if err == nil {
		t.Fatal("Exchange succeeded, want an error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Exchange took %v after its context was cancelled", d)
	}
	if got := ns.called(); len(got) != 1 {
		t.Errorf("nameserver saw %q, want one query (no second server after cancel)", got)
	}
}

func TestReadResolvConf(t *testing.T) {
	tests := []struct {
		name string
		file string
		want dnsclient.Config
	}{
		{
			name: "kubernetes pod",
			file: "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
			want: dnsclient.Config{Servers: []string{"10.96.0.10:53"}, Search: []string{"ns.svc.cluster.local.", "svc.cluster.local.", "cluster.local."}, Ndots: 5},
		},
		{
			name: "systemd-resolved stub with comments",
			file: "# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example.\n",
			want: dnsclient.Config{Servers: []string{"127.0.0.53:53"}, Search: []string{"corp.example."}, Ndots: 1},
		},
		{
			name: "ipv6 server, domain line, root search entry dropped",
			file: "nameserver ::1\nnameserver 192.0.2.53\ndomain home.example\nsearch . lan\n",
			want: dnsclient.Config{Servers: []string{"[::1]:53", "192.0.2.53:53"}, Search: []string{"lan."}, Ndots: 1},
		},
		{
			name: "empty",
			file: "",
			want: dnsclient.Config{Ndots: 1},
		},
		{
			name: "ndots capped",
			file: "options ndots:40\n",
			want: dnsclient.Config{Ndots: 15},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resolv.conf")
			if err := os.WriteFile(p, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := dnsclient.ReadResolvConf(p)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadResolvConf = %#v, want %#v", got, tt.want)
			}
		})
	}
	if _, err := dnsclient.ReadResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("ReadResolvConf of a missing file succeeded")
	}
}
