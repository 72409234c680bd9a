package capture

import (
	"net/netip"
	"testing"
)

func TestRouter(t *testing.T) {
	pool := &Pool{}
	web, err := pool.Addr("Web.Default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{Pool: pool, Cluster: ClusterRanges(
		[]netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.244.0.7"), netip.MustParseAddr("127.0.0.1")},
		[]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})}
	cases := []struct {
		dst  string
		want Route
	}{
		{web.String() + ":8080", Route{Verdict: ToCluster, Dest: "web.default.svc.cluster.local:8080"}},
		{"[::ffff:" + web.String() + "]:80", Route{Verdict: ToCluster, Dest: "web.default.svc.cluster.local:80"}},
		{"198.19.77.1:80", Route{Verdict: Refuse}},
		{"10.96.0.1:443", Route{Verdict: ToCluster, Dest: "10.96.0.1:443"}},
		{"10.244.3.9:8080", Route{Verdict: ToCluster, Dest: "10.244.3.9:8080"}},
		{"[::ffff:10.244.3.9]:8080", Route{Verdict: ToCluster, Dest: "10.244.3.9:8080"}},
		{"192.0.2.9:5432", Route{Verdict: ToCluster, Dest: "192.0.2.9:5432"}},
		{"10.97.0.1:443", Route{Verdict: Direct}},
		{"127.0.0.1:8080", Route{Verdict: Direct}},
		{"[::1]:8080", Route{Verdict: Direct}},
		{"93.184.216.34:443", Route{Verdict: Direct}},
		{"10.255.255.53:53", Route{Verdict: ToDNS}},
		{"127.0.0.53:53", Route{Verdict: ToDNS}},
		{"10.96.0.10:53", Route{Verdict: ToDNS}},
	}
	for _, tc := range cases {
		t.Run(tc.dst, func(t *testing.T) {
			if got := r.Route(netip.MustParseAddrPort(tc.dst)); got != tc.want {
				t.Errorf("Route(%s) = %+v, want %+v", tc.dst, got, tc.want)
			}
		})
	}
	keep := &Router{KeepDNS: true}
	if got := keep.Route(netip.MustParseAddrPort("10.255.255.53:53")); got.Verdict != Direct {
		t.Errorf("KeepDNS: port 53 routed %v", got.Verdict)
	}
}

func TestClusterRanges(t *testing.T) {
	got := ClusterRanges([]netip.Addr{
		netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.5.1"), netip.MustParseAddr("::ffff:10.244.0.7"),
		netip.MustParseAddr("127.0.0.1"), {}, netip.MustParseAddr("fd00:1::5"),
	}, []netip.Prefix{netip.MustParsePrefix("192.0.2.7/24")})
	want := []string{"10.96.0.0/16", "10.244.0.0/16", "fd00:1::/64", "192.0.2.0/24"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("range %d: got %v, want %s", i, got[i], want[i])
		}
	}
}

func TestPool(t *testing.T) {
	p := &Pool{Prefix: netip.MustParsePrefix("198.19.0.0/30")}
	a, err := p.Addr("a.svc.cluster.local.")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := p.Addr("A.svc.cluster.local"); again != a {
		t.Errorf("the same name (case, trailing dot aside) got %v then %v", a, again)
	}
	b, err := p.Addr("b.svc.cluster.local.")
	if err != nil || b == a {
		t.Fatalf("second name: %v %v", b, err)
	}
	if _, err := p.Addr("c.svc.cluster.local."); err != ErrPoolExhausted {
		t.Errorf("a /30 gave a third address: %v", err)
	}
	for _, tc := range []struct {
		addr netip.Addr
		name string
		ok   bool
	}{{a, "a.svc.cluster.local.", true}, {b, "b.svc.cluster.local.", true}, {netip.MustParseAddr("198.19.0.3"), "", false}} {
		if n, ok := p.Name(tc.addr); n != tc.name || ok != tc.ok {
			t.Errorf("Name(%v) = %q %v, want %q %v", tc.addr, n, ok, tc.name, tc.ok)
		}
	}
	if a.String() != "198.19.0.1" || b.String() != "198.19.0.2" {
		t.Errorf("addresses %v %v: the network address must not be handed out", a, b)
	}
}
